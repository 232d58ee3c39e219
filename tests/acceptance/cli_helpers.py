"""Run the real ``tether`` client program against a test server (see test_cli.py)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import PASSWORD, TETHER, Server


class Cli:
    """``tether`` client commands with their own config dir, pointed at ``server``."""

    def __init__(self, server: Server, config_home: Path) -> None:
        self.server = server
        self.config_home = config_home
        config_home.mkdir(parents=True, exist_ok=True)

    @property
    def config_file(self) -> Path:
        return self.config_home / "tether" / "config.json"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env.update(
            XDG_CONFIG_HOME=str(self.config_home),
            TETHER_SERVER=self.server.url,
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)  # may override the above (TETHER_SERVER="": none)
        return env

    def run(
        self, *args: str, input: str | None = None, timeout: float = 30.0, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TETHER), *args],
            env=self.env(**env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run; assert exit 0 and a clean stderr-free traceback; return stdout."""
        r = self.run(*args, input=input)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def login(self, username: str) -> str:
        self.ok("register", username, "--password-stdin", input=PASSWORD + "\n")
        return self.ok("login", username, "--password-stdin", input=PASSWORD + "\n")

    def token(self) -> str:
        return str(json.loads(self.config_file.read_text())["token"])

    def run_in_pty(self, *args: str, timeout: float = 30.0, **env: str) -> tuple[int, str]:
        """Run with stdin/stdout/stderr on a pseudo-terminal; (exit code, output)."""
        master, slave = os.openpty()
        proc = subprocess.Popen(
            [str(TETHER), *args],
            env=self.env(TERM="xterm", COLUMNS="120", **env),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
        )
        os.close(slave)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.1)
                if ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: the child closed the terminal
                        break
                    if not data:
                        break
                    chunks.append(data)
                elif proc.poll() is not None:
                    break
            else:
                proc.kill()
            code = proc.wait(10)
        finally:
            os.close(master)
        return code, b"".join(chunks).decode(errors="replace")
