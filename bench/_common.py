"""Helpers shared by the benchmark scripts (imported as ``_common`` from bench/)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


def log(msg: str) -> None:
    """Progress goes to stderr; stdout's last line is the figures as JSON."""
    print(msg, file=sys.stderr, flush=True)


def stop_process_group(proc: subprocess.Popen[bytes], name: str, grace: float = 10.0) -> None:
    """SIGTERM the process (a graceful stop), then SIGKILL its whole group after ``grace``
    (pool children left behind, if any)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop in {grace:g} s; killing it")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
