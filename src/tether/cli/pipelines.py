"""Pipeline commands: ``tether pipeline run|show|watch|pause|resume|cancel|retry`` and
``tether pipelines``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tether.cli import pipeline_watch
from tether.cli.client import JSON_OPT, emit_json, err, out, say_if_more, when
from tether.cli.connection import EXIT_USAGE, CliError, cli_error, connect
from tether.cli.pipeline_view import percent_text, step_labels, step_status, steps_summary
from tether.cli.term import one_line_table
from tether.client import ApiError, BadRequest, Conflict

PANEL = "Pipelines"
pipeline_app = typer.Typer(
    name="pipeline",
    help="Run, show, watch and control one pipeline.",
    no_args_is_help=True,
)
ID_ARG = Annotated[int, typer.Argument(metavar="ID", help="Pipeline id.")]
REASON_OPT = Annotated[
    str | None, typer.Option("--reason", help="Why (kept in the pipeline's history).")
]


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def load_document(source: str) -> dict[str, Any]:
    """The pipeline document in file ``source`` ('-': stdin), as it is: a key given
    twice is refused here, since parsing would silently keep only the last one."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CliError(f"cannot read pipeline file {source}: {why}", EXIT_USAGE) from None
    try:
        doc = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except ValueError as exc:
        raise CliError(f"pipeline file {source} is not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(doc, dict):
        raise CliError(
            f"pipeline file {source} must hold a JSON object "
            "(pipeline_name, data_url, project, transformers_list)",
            EXIT_USAGE,
        )
    return doc


def refusal(exc: BadRequest) -> str:
    """The server's refusal of a pipeline document, naming the bad field."""
    field = exc.body.get("field")
    if isinstance(field, str) and field and field not in exc.message:
        return f"{exc.message} (field {field})"
    return exc.message


def run(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE", help="The pipeline as JSON ('-' = stdin), e.g. the seed's payload."
        ),
    ],
    watch_it: Annotated[bool, typer.Option("--watch", help="Watch it until it ends.")] = False,
    as_json: JSON_OPT = False,
) -> None:
    """Start a pipeline from a JSON file; prints its id."""
    doc = load_document(file)
    with connect(ctx) as api:
        try:
            pipeline = api.submit_pipeline(doc)
        except BadRequest as exc:
            raise CliError(refusal(exc)) from None
        if as_json and not watch_it:
            emit_json(pipeline)
            return
        if not as_json:
            out.print(pipeline["id"])
            steps = pipeline.get("steps") or []
            orders = len({s.get("order_no") for s in steps})
            err.print(
                f"pipeline {pipeline['id']} ({pipeline.get('name')}): {pipeline['status']}, "
                f"{len(steps)} step{'s' * (len(steps) != 1)} in "
                f"{orders} order{'s' * (orders != 1)}",
                style="dim",
            )
        if watch_it:
            sys.stdout.flush()
            raise typer.Exit(pipeline_watch.run_watch(api, int(pipeline["id"]), as_json=as_json))


def watch(ctx: typer.Context, pipeline_id: ID_ARG, as_json: JSON_OPT = False) -> None:
    """Watch a pipeline live until it ends (Ctrl-C stops watching, not the pipeline)."""
    with connect(ctx) as api:
        raise typer.Exit(pipeline_watch.run_watch(api, pipeline_id, as_json=as_json))


def pipelines_table(found: list[dict[str, Any]], con: Console) -> Table:
    """The ``tether pipelines`` table: one line per pipeline on a terminal."""
    rows = [
        (
            str(p["id"]),
            str(p.get("name") or ""),
            str(p.get("project") or "-"),
            str(p["status"]),
            str(p.get("current_order") if p.get("current_order") is not None else "-"),
            steps_summary(p),
            when(p.get("created_at")),
            str(p.get("error") or "").split("\n")[0],
        )
        for p in found
    ]
    headers = ("id", "name", "project", "status", "order", "steps", "created", "error")
    return one_line_table(con, headers, rows)


def ls(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only these statuses (comma-separated).")
    ] = None,
    all_pages: Annotated[
        bool, typer.Option("--all-pages", help="Every pipeline, not a page.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many pipelines.")] = 50,
    as_json: JSON_OPT = False,
) -> None:
    """List your pipelines, newest first."""
    with connect(ctx) as api:
        found, count = api.pipelines_counted(
            project=project, status=status, limit=None if all_pages else limit
        )
    if as_json:
        emit_json(found)
    else:
        out.print(pipelines_table(found, out))
    say_if_more(len(found), count)


def steps_table(pipeline: dict[str, Any], con: Console) -> Table:
    """The steps of ``tether pipeline show``, in ``transformers_list`` order."""
    steps = list(pipeline.get("steps") or [])
    labels = step_labels(steps)
    rows = [
        (
            str(s["index"]),
            str(s["order_no"]),
            labels[s["index"]].split("/", 1)[1],
            str(s["task"]) if s.get("task") is not None else "-",
            step_status({**s, "rolled_back_at": None}),  # rolled back: its own column
            percent_text(s),
            when(s["rolled_back_at"]) if s.get("rolled_back_at") else "-",
        )
        for s in steps
    ]
    headers = ("#", "order", "name", "task", "status", "progress", "rolled back")
    return one_line_table(con, headers, rows)


def header_rows(pipeline: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``key: value`` lines above the steps table."""
    rows = [
        ("id", str(pipeline["id"])),
        ("name", str(pipeline.get("name") or "")),
        ("project", str(pipeline.get("project") or "-")),
        ("owner", str(pipeline.get("owner") or "-")),
        ("status", str(pipeline["status"])),
        ("order", str(pipeline.get("current_order", "-"))),
        ("data_url", str(pipeline.get("data_url") or "-")),
    ]
    if pipeline.get("result") is not None:
        rows.append(("result", json.dumps(pipeline["result"])))
    if pipeline.get("error"):
        rows.append(("error", str(pipeline["error"])))
    if pipeline.get("pause_timeout") is not None:
        rows.append(("pause timeout", f"{pipeline['pause_timeout']}s"))
    for key in ("created_at", "started_at", "paused_at", "finished_at", "updated_at"):
        if pipeline.get(key):
            rows.append((key.removesuffix("_at"), when(pipeline[key])))
    return rows


def show(ctx: typer.Context, pipeline_id: ID_ARG, as_json: JSON_OPT = False) -> None:
    """Show one pipeline: status, timestamps, and its steps."""
    with connect(ctx) as api:
        pipeline = api.pipeline(pipeline_id)
    if as_json:
        emit_json(pipeline)
        return
    for key, value in header_rows(pipeline):
        out.print(f"[bold]{key + ':':<14}[/bold] {value}", markup=True, soft_wrap=True)
    out.print(steps_table(pipeline, out))


def control_refusal(pipeline_id: int, exc: ApiError) -> CliError:
    """A refused pause, resume, cancel or retry as one line naming the pipeline."""
    if isinstance(exc, Conflict):
        status = exc.current_status
        note = f" (it is {status})" if status and status not in exc.message else ""
        return CliError(f"pipeline {pipeline_id}: {exc.message}{note}")
    return cli_error(exc)


def control(action: str) -> Any:
    def command(ctx: typer.Context, pipeline_id: ID_ARG, reason: REASON_OPT = None) -> None:
        with connect(ctx) as api:
            try:
                pipeline = getattr(api, f"{action}_pipeline")(pipeline_id, reason=reason)
            except Conflict as exc:
                raise control_refusal(pipeline_id, exc) from None
        out.print(f"pipeline {pipeline_id}: {pipeline['status']}")

    command.__name__ = action
    command.__doc__ = {
        "pause": "Pause a pipeline: its running steps pause, no new step starts.",
        "resume": "Resume a paused pipeline where it was.",
        "cancel": "Cancel a pipeline: its finished steps are rolled back, last first.",
        "retry": "Run a failed pipeline again from its failed step.",
    }[action]
    return command


def register(app: typer.Typer) -> None:
    pipeline_app.command("run")(run)
    pipeline_app.command("show")(show)
    pipeline_app.command("watch")(watch)
    for action in ("pause", "resume", "cancel", "retry"):
        pipeline_app.command(action)(control(action))
    app.add_typer(pipeline_app, rich_help_panel=PANEL)
    app.command("pipelines", rich_help_panel=PANEL)(ls)
