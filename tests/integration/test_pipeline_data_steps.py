"""Pipelines of the built-in data steps on the embedded executor: fetch a CSV, import
it, export a date range of it (and download that); cancel undoes the import; inputs
naming files outside the owner's own areas are refused; the demo sentinel steps run
the seed's sample payload as it is."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_until
from tests.integration.http_files import Site
from tether import service
from tether.context import TaskContext
from tether.datasets.files import data_dir
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset, Pipeline, PipelineStep, Task, Upload
from tether.pipelines import control, spec
from tether.registry import task
from tether.tasks import areas

ROWS = [f"2024-01-{d:02d},{d * 10},item {d}" for d in range(1, 11)]
CSV = ("day,amount,label\n" + "\n".join(ROWS) + "\n").encode()


@task(
    name="it_emit",
    params={"type": "object", "properties": {"value": {}}, "additionalProperties": False},
    max_attempts=1,
)
def it_emit(ctx: TaskContext, *, value: Any = None) -> Any:
    """Returns its value param: an input of the tester's choice for the next step."""
    return value


@task(name="it_write_csv", rollback=lambda ctx: areas.remove(areas.step_dir(ctx)))
def it_write_csv(ctx: TaskContext) -> Any:
    """The documented pattern: a file in the step's own directory, handed on by path."""
    out = areas.step_dir(ctx) / "sales.csv"
    out.write_bytes(CSV)
    return {"path": areas.relative(out), "rows": len(ROWS)}


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site().start()
    s.files["/sales.csv"] = CSV
    yield s
    s.stop()


@pytest.fixture
def cleaned(datasets_cleaned: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TETHER_FETCH_ALLOW_PRIVATE", "1")
    yield
    for kind in ("fetch", "steps", "sentinel", "s3"):
        shutil.rmtree(data_dir(kind), ignore_errors=True)


def wait_final(pk: int) -> Pipeline:
    final = ("succeeded", "failed", "cancelled")
    return wait_until(
        lambda: (p := Pipeline.objects.get(pk=pk)).status in final and p,
        f"pipeline {pk} to end",
        timeout=60,
    )


def run(owner: Any, body: dict[str, Any]) -> Pipeline:
    return wait_final(control.create(owner, spec.parse(body)).pk)


def steps(*items: tuple[str, dict[str, Any]], data_url: str = "") -> dict[str, Any]:
    return {
        "pipeline_name": "data",
        "project": "it",
        "data_url": data_url,
        "transformers_list": [
            {"name": name, "order_no": i + 1, "context": context}
            for i, (name, context) in enumerate(items)
        ],
    }


def step_task(pipeline: Pipeline, index: int) -> Task:
    found = PipelineStep.objects.get(pipeline=pipeline, index=index).task
    assert found is not None
    return found


def output(item: Task | Pipeline) -> Any:
    return item.result


def test_fetch_import_export_a_date_range(
    executor: EmbeddedExecutor, client_for: Any, site: Site, cleaned: None
) -> None:
    client = client_for("alice")
    alice = client.user
    body = steps(
        ("fetch", {}),
        ("import_csv", {"dataset": "sales"}),
        ("export_csv", {"from_date": "2024-01-03", "to_date": "2024-01-05"}),
        data_url=site.url("/sales.csv"),
    )
    done = run(alice, body)
    assert done.status == "succeeded", done.error
    fetched, imported = output(step_task(done, 0)), output(step_task(done, 1))
    result = output(done)
    assert fetched["path"].startswith(f"fetch/{alice.pk}/") and fetched["bytes"] == len(CSV)
    assert imported["dataset"] == "sales" and imported["rows"] == 10
    export = step_task(done, 2)
    assert result == {
        "path": f"exports/export-{export.pk}.csv",
        "dataset": "sales",
        "rows": 3,
        "bytes": result["bytes"],
        "task": export.pk,
        "from_date": "2024-01-03",
        "to_date": "2024-01-05",
    }
    text = (data_dir("exports").parent / result["path"]).read_text()
    assert text.splitlines() == ["day,amount,label", *ROWS[2:5]]
    assert Dataset.objects.get(owner=alice, name="sales").row_count == 10
    assert not Upload.objects.exists()  # the import's link to the file is gone
    assert (data_dir("fetch").parent / fetched["path"]).exists()  # the fetch's file is not
    answer = client.get(f"/api/v1/tasks/{export.pk}/download")
    assert answer.status_code == 200
    # named as a dataset's export, though the dataset came from the step's input
    assert answer["Content-Disposition"] == f'attachment; filename="sales-{export.pk}.csv"'
    assert b"".join(answer.streaming_content).decode().splitlines()[1:] == ROWS[2:5]


def test_cancel_undoes_import_and_fetch(
    executor: EmbeddedExecutor, make_user: Any, site: Site, cleaned: None
) -> None:
    alice = make_user("alice")
    body = steps(
        ("fetch", {}),
        ("import_csv", {"dataset": "sales"}),
        ("countdown", {"seconds": 600}),
        data_url=site.url("/sales.csv"),
    )
    pipeline = control.create(alice, spec.parse(body))
    wait_until(lambda: PipelineStep.objects.get(pipeline=pipeline, index=2).task_id, "step 2")
    assert Dataset.objects.filter(owner=alice, name="sales").exists()
    control.cancel(pipeline.pk, actor="user:alice")
    done = wait_final(pipeline.pk)
    assert done.status == "cancelled", done.error
    assert not Dataset.objects.filter(owner=alice, name="sales").exists()
    assert list((data_dir("fetch") / str(alice.pk)).iterdir()) == []
    rolled = list(
        PipelineStep.objects.filter(pipeline=pipeline)
        .order_by("index")
        .values_list("rolled_back_at", flat=True)
    )
    assert all(rolled) and rolled[0] > rolled[1] > rolled[2]  # type: ignore[operator]


def test_inputs_outside_the_owners_area_are_refused(
    executor: EmbeddedExecutor, make_user: Any, cleaned: None
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    bobs = data_dir("fetch") / str(bob.pk)
    bobs.mkdir(parents=True)
    (bobs / "secret.csv").write_bytes(CSV)
    mine = data_dir("fetch") / str(alice.pk)
    mine.mkdir(parents=True)
    os.symlink(bobs / "secret.csv", mine / "link.csv")
    os.symlink("/etc", mine / "etc")
    bobs_export = service.submit(bob, "add", {"operand1": 1, "operand2": 2}).pk
    (data_dir("exports") / f"export-{bobs_export}.csv").write_bytes(CSV)
    attempts: list[Any] = [
        "/etc/passwd",
        f"fetch/{bob.pk}/secret.csv",
        {"path": f"fetch/{alice.pk}/../{bob.pk}/secret.csv"},
        {"path": f"fetch/{alice.pk}/link.csv"},
        f"fetch/{alice.pk}/etc/passwd",
        f"exports/export-{bobs_export}.csv",
        "http://example.com/x.csv",
    ]
    pipelines = [
        control.create(
            alice,
            spec.parse(steps(("it_emit", {"value": value}), ("import_csv", {"dataset": "x"}))),
        )
        for value in attempts
    ]
    for pipeline, value in zip(pipelines, attempts, strict=True):
        done = wait_final(pipeline.pk)
        assert done.status == "failed", value
        assert "step import_csv (order 2, transformers_list[1]) failed" in done.error
        expected = "fetch it first" if "://" in str(value) else "is not a file of yours"
        assert expected in done.error, (value, done.error)
    assert not Dataset.objects.exists() and not Upload.objects.exists()
    assert (bobs / "secret.csv").read_bytes() == CSV


def test_a_step_of_your_own_hands_a_file_on_by_path(
    executor: EmbeddedExecutor, make_user: Any, cleaned: None
) -> None:
    alice = make_user("alice")
    done = run(alice, steps(("it_write_csv", {}), ("import_csv", {"dataset": "mine"})))
    assert done.status == "succeeded", done.error
    assert output(done)["rows"] == 10
    written = output(step_task(done, 0))["path"]
    assert written == f"steps/{alice.pk}/{step_task(done, 0).pk}/sales.csv"


SEED: dict[str, Any] = {
    "pipeline_name": "sentinel_pipeline",
    "data_url": "",
    "project": "ids-drr",
    "transformers_list": [
        {"name": "sentinel", "order_no": 1, "context": {"date_start": "2023-05-01"}},
        {"name": "sentinel_upload_to_s3", "order_no": 2, "context": {}},
    ],
}


def test_the_seed_sample_payload_runs_as_it_is(
    executor: EmbeddedExecutor, make_user: Any, cleaned: None
) -> None:
    alice = make_user("alice")
    done = run(alice, SEED)
    assert done.status == "succeeded", done.error
    result = output(done)
    assert result["bucket"] == "tether-demo" and len(result["keys"]) == 1
    copy = data_dir("s3").parent / result["path"] / "S2_2023-05-01.json"
    assert b'"date": "2023-05-01"' in copy.read_bytes()
    month: dict[str, Any] = json.loads(json.dumps(SEED))
    month["transformers_list"][0]["context"] = {
        "date_start": "2023-05-01",
        "date_end": "2023-06-01",
        "seconds_per_day": 0,
    }
    assert len(output(run(alice, month))["keys"]) == 32


def test_sentinel_steps_are_undone(
    executor: EmbeddedExecutor, make_user: Any, cleaned: None
) -> None:
    alice = make_user("alice")
    body = {
        **SEED,
        "transformers_list": [
            *SEED["transformers_list"],
            {"name": "countdown", "order_no": 3, "context": {"seconds": 600}},
        ],
    }
    pipeline = control.create(alice, spec.parse(body))
    wait_until(lambda: PipelineStep.objects.get(pipeline=pipeline, index=2).task_id, "step 2")
    scenes = data_dir("sentinel") / str(alice.pk)
    bucket = data_dir("s3") / str(alice.pk) / "tether-demo"
    assert _files(scenes) and _files(bucket)
    control.cancel(pipeline.pk, actor="user:alice")
    done = wait_final(pipeline.pk)
    assert done.status == "cancelled", done.error
    assert _files(scenes) == [] and _files(bucket) == []


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]
