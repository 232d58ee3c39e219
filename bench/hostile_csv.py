"""Hostile CSV: a real ``tether serve`` handed a file of one long line without a line
break (default 200 MB of ``x``, ``header=false``), while another client asks
``GET /api/v1/health`` over and over.

Figures: seconds from the start of the upload until the file was refused (a 400 at
upload, or the import task ``failed``) and the message; the server's memory growth
(VmHWM from /proc/<pid>/status after resetting it, minus VmRSS before; target < 64 MB);
``/health`` latency meanwhile (p50/p99/max, target p99 < 100 ms) and how many answers.

Progress goes to stderr; the last line of stdout is one JSON object.

    .venv/bin/python bench/hostile_csv.py [--mb 200] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from _common import (
    HOST,
    expect,
    free_port,
    log,
    login,
    summary,
    tether_env,
    tether_process,
)

TARGETS = {"rss_growth_mb": 64, "health_p99_ms": 100, "refused_within_s": 10}


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def one_line_file(path: Path, mb: int) -> None:
    chunk = b"x" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(chunk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the one line (MiB)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-hostile-"))
    home = tmp / "home"
    home.mkdir()
    out: dict[str, Any] = {"benchmark": "hostile_csv", "line_mb": args.mb}
    try:
        data = tmp / "one-line.csv"
        one_line_file(data, args.mb)
        port = free_port()
        base = f"http://{HOST}:{port}"
        env = tether_env(TETHER_HOME=str(home), TETHER_LOG_LEVEL="WARNING")
        serve = ["serve", "--host", HOST, "--port", str(port), "--workers", "1"]
        with tether_process(serve, env, tmp / "server.log", "tether serve") as proc:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tether serve did not start")
                time.sleep(0.1)
            token = login(base)
            auth = {"Authorization": f"Token {token}"}
            before_kb = status_kb(proc.pid, "VmRSS")
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM from here
            latencies: list[float] = []
            statuses: list[int] = []
            done = threading.Event()

            def probe() -> None:
                with httpx.Client(base_url=base, timeout=30, trust_env=False) as h:
                    while not done.is_set():
                        t0 = time.perf_counter()
                        statuses.append(h.get("/api/v1/health").status_code)
                        latencies.append((time.perf_counter() - t0) * 1000)
                        time.sleep(0.01)  # a client polling every 10 ms

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            log(f"upload: {args.mb} MiB, one line, header=false")
            t0 = time.perf_counter()
            with httpx.Client(base_url=base, headers=auth, timeout=600, trust_env=False) as c:
                with open(data, "rb") as f:
                    r = c.post(
                        "/api/v1/datasets/import",
                        data={"dataset": "hostile", "header": "false"},
                        files={"file": ("one-line.csv", f, "text/csv")},
                    )
                uploaded = time.perf_counter() - t0
                if r.status_code == 201:
                    task_id = r.json()["id"]
                    while True:
                        task = expect(c.get(f"/api/v1/tasks/{task_id}"), 200)
                        if task["status"] in ("succeeded", "failed", "cancelled"):
                            break
                        time.sleep(0.02)
                    out.update(refused_by="import", status=task["status"], message=task["error"])
                else:
                    out.update(
                        refused_by="upload",
                        status=r.status_code,
                        message=r.json()["error"]["message"],
                    )
            refused = time.perf_counter() - t0
            done.set()
            prober.join(30)
            peak_kb = status_kb(proc.pid, "VmHWM")
        health = summary(latencies)
        out.update(
            upload_s=round(uploaded, 3),
            refused_s=round(refused, 3),
            rss_before_mb=round(before_kb / 1024, 1),
            rss_peak_mb=round(peak_kb / 1024, 1),
            rss_growth_mb=round((peak_kb - before_kb) / 1024, 1),
            health_answers=len(statuses),
            health_ok=all(s == 200 for s in statuses),
            health_p50_ms=health["p50"],
            health_p99_ms=health["p99"],
            health_max_ms=health["max"],
            cpu_count=os.cpu_count(),
        )
        log(
            f"refused after {out['refused_s']} s ({out['refused_by']}): {out['message']}; "
            f"RSS growth {out['rss_growth_mb']} MB; /health p50 {health['p50']} ms, "
            f"p99 {health['p99']} ms over {len(statuses)} answers"
        )
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out["targets"] = TARGETS
    meets = {
        "rss_growth": out["rss_growth_mb"] < TARGETS["rss_growth_mb"],
        "health_p99": (out["health_p99_ms"] or 1e9) < TARGETS["health_p99_ms"],
        "refused_within": out["refused_s"] < TARGETS["refused_within_s"],
        "field_message": "field larger than 1 MiB" in str(out.get("message")),
    }
    out["meets_target"] = meets
    out["meets_all_targets"] = all(meets.values())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
