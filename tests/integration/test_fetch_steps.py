"""The fetch step against a real HTTP server in a thread, on the embedded executor:
download, pause and resume with a byte range (or from the start when the server
ignores ranges), size limits, refused private addresses (also after a redirect),
cancel and undo deleting the file."""

from __future__ import annotations

import hashlib
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_status, wait_until
from tests.integration.http_files import Site
from tether import netguard, service
from tether.datasets.files import data_dir
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Pipeline, PipelineStep
from tether.pipelines import control, spec

BIG = bytes(range(256)) * 12_000  # about 3 MiB: many chunks after the gate


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site().start()
    yield s
    s.stop()


@pytest.fixture
def allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_FETCH_ALLOW_PRIVATE", "1")


@pytest.fixture
def alice(make_user: Any) -> Iterator[Any]:
    user = make_user("alice")
    yield user
    for kind in ("fetch", "uploads", "exports"):
        shutil.rmtree(data_dir(kind), ignore_errors=True)


def fetched(user: Any) -> list[Path]:
    return sorted(p for p in (data_dir("fetch") / str(user.pk)).glob("*") if p.is_file())


def run_fetch(user: Any, url: str) -> Any:
    task = service.submit(user, "fetch", {"url": url})
    return wait_status(task.pk, "succeeded", "failed", timeout=30)


def test_fetch_writes_a_private_file_and_names_it(
    executor: EmbeddedExecutor, alice: Any, site: Site, allow_private: None
) -> None:
    site.files["/data/sales.csv"] = b"day,amount\n2024-01-01,3\n"
    done = run_fetch(alice, site.url("/data/sales.csv", host="localhost"))
    assert done.status == "succeeded", done.error
    result = done.result
    assert result["path"] == f"fetch/{alice.pk}/{done.pk}.csv"
    assert result["bytes"] == 24 and result["content_type"] == "text/csv"
    assert result["sha256"] == hashlib.sha256(site.files["/data/sales.csv"]).hexdigest()
    path = data_dir("fetch").parent / result["path"]
    assert path.read_bytes() == site.files["/data/sales.csv"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert site.requests[0]["host"] == f"localhost:{site.port}"  # the name, not the address
    assert done.progress["done"] == done.progress["total"] == 24


def test_loopback_is_refused_without_allow_private(
    executor: EmbeddedExecutor, alice: Any, site: Site
) -> None:
    site.files["/x.csv"] = b"a\n1\n"
    done = run_fetch(alice, site.url("/x.csv"))
    assert done.status == "failed"
    assert "private, loopback or link-local" in done.error
    assert "TETHER_FETCH_ALLOW_PRIVATE" in done.error
    assert site.requests == [] and fetched(alice) == []
    with pytest.raises(Exception, match="private, loopback"):
        spec.parse(
            {
                "pipeline_name": "p",
                "data_url": site.url("/x.csv"),
                "transformers_list": [{"name": "fetch", "order_no": 1, "context": {}}],
            }
        )


def test_bad_urls_are_refused_on_submit(alice: Any) -> None:
    for url in ("ftp://example.com/x", "file:///etc/passwd", "http://", "example.com/x"):
        with pytest.raises(Exception, match=r"params\.url"):
            service.submit(alice, "fetch", {"url": url})


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_pause_mid_download_then_resume(
    executor: EmbeddedExecutor, alice: Any, site: Site, allow_private: None, ranges: bool
) -> None:
    site.files["/big.bin"] = BIG
    site.ranges = ranges
    site.gate, site.gate_after = threading.Event(), 200_000
    task = service.submit(alice, "fetch", {"url": site.url("/big.bin")})
    assert site.at_gate.wait(30)  # it is downloading
    wait_until(  # its first chunk is in the file: the next control point records it
        lambda: (files := fetched(alice)) and files[0].stat().st_size > 0,
        "the first chunk to reach the file",
        30,
    )
    service.pause(task.pk, actor="user:alice")
    wait_status(task.pk, "pausing")
    site.gate.set()  # the next chunk reaches a control point: it pauses there
    paused = wait_status(task.pk, "paused", "succeeded", "failed", timeout=30)
    assert paused.status == "paused", paused.error
    kept = dict(paused.checkpoint or {})["bytes"]
    assert 0 < kept < len(BIG)
    assert fetched(alice)[0].stat().st_size >= kept
    service.resume(task.pk, actor="user:alice")
    done = wait_status(task.pk, "succeeded", "failed", timeout=30)
    assert done.status == "succeeded", done.error
    result = dict(done.result or {})
    assert result["bytes"] == len(BIG) and result["sha256"] == hashlib.sha256(BIG).hexdigest()
    assert fetched(alice)[0].read_bytes() == BIG
    again = site.requests[1]
    assert again["range"] == f"bytes={kept}-" and again["if_range"] == site.etag("/big.bin")
    assert len(site.requests) == 2


def test_content_length_over_the_limit_fails_at_once(
    executor: EmbeddedExecutor,
    alice: Any,
    site: Site,
    allow_private: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_FETCH_MAX_BYTES", "100000")
    site.huge["/10g.bin"] = 10 << 30
    done = run_fetch(alice, site.url("/10g.bin"))
    assert done.status == "failed"
    assert "10 GiB, more than the 97.7 KiB" in done.error and "TETHER_FETCH_MAX_BYTES" in done.error
    assert fetched(alice) == []
    assert done.attempts == 1  # not retried


def test_a_body_without_length_is_cut_at_the_limit(
    executor: EmbeddedExecutor,
    alice: Any,
    site: Site,
    allow_private: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_FETCH_MAX_BYTES", "100000")
    site.endless.add("/stream")
    done = run_fetch(alice, site.url("/stream"))
    assert done.status == "failed"
    assert "passed 97.7 KiB" in done.error
    assert fetched(alice) == []


def test_a_redirect_to_a_private_address_is_refused(
    executor: EmbeddedExecutor,
    alice: Any,
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two loopback servers stand for the internet and the server's own network: the
    # policy is narrowed so that 127.0.0.1 counts as public and 127.0.0.2 does not.
    inside = Site(host="127.0.0.2").start()
    try:
        inside.files["/secret"] = b"metadata"
        monkeypatch.setattr(netguard, "is_public", lambda a: str(a) == "127.0.0.1")
        site.redirects["/go"] = inside.url("/secret")
        site.redirects["/loop"] = "/loop"
        done = run_fetch(alice, site.url("/go"))
        assert done.status == "failed"
        assert "127.0.0.2" in done.error and "private, loopback" in done.error
        assert inside.requests == [] and fetched(alice) == []
        looped = run_fetch(alice, site.url("/loop"))
        assert looped.status == "failed" and "more than 5 redirects" in looped.error
    finally:
        inside.stop()


def test_cancel_mid_download_deletes_the_file(
    executor: EmbeddedExecutor, alice: Any, site: Site, allow_private: None
) -> None:
    site.files["/big.bin"] = BIG
    site.gate, site.gate_after = threading.Event(), 200_000
    task = service.submit(alice, "fetch", {"url": site.url("/big.bin")})
    assert site.at_gate.wait(30)
    wait_until(lambda: fetched(alice), "the file to be there")
    service.cancel(task.pk, actor="user:alice")
    site.gate.set()
    done = wait_status(task.pk, "cancelled", "failed", timeout=30)
    assert done.status == "cancelled", done.error
    assert fetched(alice) == []


def test_undo_of_a_finished_fetch_deletes_its_file(
    executor: EmbeddedExecutor, alice: Any, site: Site, allow_private: None
) -> None:
    site.files["/a.csv"] = b"a\n1\n"
    body = {
        "pipeline_name": "fetch then wait",
        "data_url": site.url("/a.csv"),
        "transformers_list": [
            {"name": "fetch", "order_no": 1, "context": {}},
            {"name": "countdown", "order_no": 2, "context": {"seconds": 600}},
        ],
    }
    pipeline = control.create(alice, spec.parse(body))
    wait_until(
        lambda: PipelineStep.objects.get(pipeline=pipeline, index=1).task_id, "countdown starts"
    )
    assert len(fetched(alice)) == 1
    control.cancel(pipeline.pk, actor="user:alice")
    done = wait_until(
        lambda: (p := Pipeline.objects.get(pk=pipeline.pk)).status in ("cancelled", "failed") and p,
        "the pipeline to be undone",
        timeout=30,
    )
    assert done.status == "cancelled", done.error
    assert fetched(alice) == []
    step = PipelineStep.objects.get(pipeline=pipeline, index=0)
    assert step.rolled_back_at is not None and step.undo_task_id is not None
