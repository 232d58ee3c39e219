"""Helpers shared by the benchmark scripts (imported as ``_common`` from bench/)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
PASSWORD = "bench-Pass-12345"


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


# -- a real `tether serve` (and other tether commands) as subprocesses ---------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tether_executable() -> list[str]:
    exe = Path(sys.executable).parent / "tether"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "tether.cli.main"]


def tether_env(**settings: str) -> dict[str, str]:
    """This process's environment without any TETHER_* or DJANGO_SETTINGS_MODULE of the
    caller's shell, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TETHER_") and k != "DJANGO_SETTINGS_MODULE"
    }
    env.update(settings)
    return env


def log_tail(path: Path, name: str, lines: int = 20) -> None:
    with contextlib.suppress(OSError):
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
        if tail:
            log(f"{name} log (last lines):\n  " + "\n  ".join(tail))


@contextlib.contextmanager
def tether_process(
    args: Sequence[str], env: Mapping[str, str], log_path: Path, name: str, grace: float = 10.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``tether <args>`` in its own process group (so a Ctrl-C of the benchmark does
    not reach it and its pool children go with it), output to ``log_path``; yield it;
    stop it gracefully, and show its log's tail when the block failed."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [*tether_executable(), *args],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    except Exception:
        log_tail(log_path, name)
        raise
    finally:
        stop_process_group(proc, name, grace=grace)


@contextlib.contextmanager
def tether_server(
    home: Path,
    port: int,
    env: Mapping[str, str],
    startup_timeout: float,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run ``tether serve`` (environment ``env``); yield its base URL once healthy."""
    args = ["serve", "--host", HOST, "--port", str(port), *extra_args]
    base = f"http://{HOST}:{port}"
    with tether_process(args, env, home.parent / "server.log", "tether serve", grace=15.0) as proc:
        deadline = time.monotonic() + startup_timeout
        with httpx.Client(base_url=base, timeout=2, trust_env=False) as c:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"tether serve exited with code {proc.returncode}")
                try:
                    if c.get("/api/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tether serve not healthy after {startup_timeout:g} s")
                time.sleep(0.1)
        cmd = " ".join([*tether_executable(), *args])
        log(f"server: {cmd} is up at {base} (TETHER_HOME={home})")
        yield base


# -- HTTP ---------------------------------------------------------------------------------
def expect(resp: httpx.Response, *codes: int) -> Any:
    if resp.status_code not in codes:
        raise RuntimeError(
            f"{resp.request.method} {resp.request.url.path} -> "
            f"{resp.status_code}: {resp.text[:300]}"
        )
    return resp.json() if resp.content else {}


def login(base: str) -> str:
    """Register the user ``bench`` and return a token for it."""
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as c:
        creds = {"username": "bench", "password": PASSWORD}
        expect(c.post("/api/v1/auth/register", json=creds), 201)
        return str(expect(c.post("/api/v1/auth/token", json=creds), 200)["token"])


# -- statistics ---------------------------------------------------------------------------
def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_ms)))
    return sorted_ms[rank - 1]


def summary(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50": None, "p99": None, "max": None, "mean": None}
    s = sorted(ms)
    return {
        "p50": round(percentile(s, 50), 2),
        "p99": round(percentile(s, 99), 2),
        "max": round(s[-1], 2),
        "mean": round(sum(s) / len(s), 2),
    }
