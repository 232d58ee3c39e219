"""Hostile CSV against a real ``tether serve``: a 200 MB line without a line break
fails fast in bounded memory while the API keeps answering. (How fast ``/health``
answers meanwhile is measured by ``bench/hostile_csv.py``, not asserted here.)"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import ServerFactory, assert_error, login, wait_for

LINE_BYTES = 200 << 20
GROWTH_LIMIT_KB = 64 * 1024


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class MemoryWatch:
    """How much a process grows while the block runs: its peak since entry (VmHWM,
    restarted through clear_refs) or, where that is not allowed, the highest RSS
    sampled. ``also`` runs in the sampling loop (a /health request, say)."""

    def __init__(self, pid: int, also: Callable[[], None] | None = None) -> None:
        self.pid = pid
        self.also = also
        self.samples: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="memory-watch", daemon=True)

    def __enter__(self) -> MemoryWatch:
        self.base = status_kb(self.pid, "VmRSS")
        self.reset = False
        with contextlib.suppress(OSError):  # "5": the peak (VmHWM) starts again from here
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.reset = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(60)

    def _sample(self) -> None:
        while not self._done.wait(0.01):  # (a sampling interval, not a synchronisation)
            if self.also is not None:
                self.also()
            self.samples.append(status_kb(self.pid, "VmRSS"))

    def growth_kb(self) -> int:
        peak = status_kb(self.pid, "VmHWM") if self.reset else max([self.base, *self.samples])
        return peak - self.base


def one_line_file(path: Path, size: int) -> Path:
    """``size`` bytes of ``x`` and no line break, written a MiB at a time."""
    chunk = b"x" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
    return path


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")
def test_a_200_mb_line_fails_on_its_field_in_bounded_memory(
    server: ServerFactory, tmp_path: Path
) -> None:
    srv = server(workers=1)
    assert srv.proc is not None
    pid = srv.proc.pid
    client = login(srv)
    path = one_line_file(tmp_path / "one-line.csv", LINE_BYTES)
    with srv.client() as warm:  # what every request needs is loaded before the baseline
        assert warm.get("/health").status_code == 200
    answers: list[int] = []
    health = httpx.Client(base_url=f"{srv.url}/api/v1", timeout=30)
    with (
        health,
        MemoryWatch(pid, also=lambda: answers.append(health.get("/health").status_code)) as memory,
    ):
        with open(path, "rb") as f:
            r = client.post(
                "/datasets/import",
                data={"dataset": "hostile", "header": "false"},
                files={"file": ("one-line.csv", f, "text/csv")},
                timeout=300,
            )
        if r.status_code == 201:  # refused by the import (else: when it was uploaded)
            task = wait_for(client, r.json()["id"], {"succeeded", "failed"}, timeout=120)
            assert task["status"] == "failed", task
            message = task["error"]
        else:
            message = assert_error(r, 400)["message"]
    assert "line 1: field larger than 1 MiB" in message, message
    assert memory.growth_kb() < GROWTH_LIMIT_KB, (memory.base, memory.growth_kb())
    assert answers and set(answers) == {200}, answers
    assert client.get("/datasets").json() == []
    assert not any((srv.home / "uploads").glob("*"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")
def test_a_line_of_five_million_fields_is_refused_at_upload_in_bounded_memory(
    server: ServerFactory, tmp_path: Path
) -> None:
    """15 MB, one line of 5,000,000 ``ab,`` fields, header=false (under the record
    limit): 400 too_many_columns when it arrives, no task, and the server reads the
    start of the line only (it grew by 2.9 GB when the record was parsed whole)."""
    srv = server(workers=1)
    assert srv.proc is not None
    pid = srv.proc.pid
    client = login(srv)
    path = tmp_path / "wide.csv"
    path.write_bytes(b"ab," * 5_000_000)
    with srv.client() as warm:
        assert warm.get("/health").status_code == 200
    with MemoryWatch(pid) as memory, open(path, "rb") as f:
        r = client.post(
            "/datasets/import",
            data={"dataset": "wide", "header": "false"},
            files={"file": ("wide.csv", f, "text/csv")},
            timeout=300,
        )
    e = assert_error(r, 400)
    assert e["code"] == "too_many_columns", e
    assert "line 1: " in e["message"] and "(TETHER_CSV_MAX_COLUMNS)" in e["message"], e
    assert memory.growth_kb() < GROWTH_LIMIT_KB, (memory.base, memory.growth_kb())
    assert client.get("/datasets").json() == []
    assert not any((srv.home / "uploads").glob("*"))
