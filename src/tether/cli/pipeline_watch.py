"""Watching a pipeline until it ends: one progress bar per step on a terminal, plain
lines elsewhere. It follows the pipeline's events on the server's event stream: the
pipeline is read at the start and again only when the events cannot tell the rest
(after a reconnection, a task it does not know yet, the end; see ``PipelineView``).
A server without a stream is polled, and the watcher says so. Stopping it never
touches the pipeline."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import Progress, TaskID

from tether.cli.pipeline_view import PipelineView, final_line, percent, step_labels, step_line
from tether.cli.watch import POLL, RECONNECT_SECONDS, STATUS_STYLE, Voice, bar_columns, bar_fields
from tether.client import Client, EventStream, Notice, StreamUnavailable, Unreachable

T = TypeVar("T")


class PipelineFollower:
    """``view`` of pipeline ``pipeline_id`` kept up to date; ``next(timeout)`` waits
    for a change."""

    def __init__(self, api: Client, pipeline_id: int, voice: Voice) -> None:
        self.api = api
        self.pipeline_id = pipeline_id
        self.voice = voice
        self.stream: EventStream | None = None
        self._hello: dict[str, Any] | None = None
        self.view = PipelineView(self._read())

    def start(self) -> PipelineFollower:
        """Subscribe, then read the pipeline again: a change made before the
        subscription took effect is in that answer, any later one comes as an event."""
        if self.view.done:
            return self
        try:
            self.stream = self.api.events(
                [],
                pipelines=[self.pipeline_id],
                retry_for=RECONNECT_SECONDS,
                notify=self.voice.notify,
            )
        except StreamUnavailable as exc:
            self.voice.notify(Notice.POLLING, str(exc))
            return self
        self._hello = self.stream.hello
        self.view.reset(self._read())
        return self

    def _read(self) -> dict[str, Any]:
        return self._patiently(lambda: self.api.pipeline(self.pipeline_id))

    def next(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for an event and apply it."""
        if self.view.done:
            return
        if self.stream is None:
            time.sleep(min(timeout, POLL))
            self.view.reset(self._read())
            return
        try:
            event = self.stream.get(timeout)
        except StreamUnavailable as exc:  # came back without a stream (an older server)
            self.stream = None
            self.voice.notify(Notice.POLLING, str(exc))
            return
        if self.stream.hello is not self._hello:
            # connected again: the pipeline's own events are not replayed, so catch up
            self._hello = self.stream.hello
            self.view.reset(self._read())
        if event is not None and self.view.apply(event):
            self.view.reset(self._read())

    def _patiently(self, call: Callable[[], T]) -> T:
        """``call()``, retried each second while the server cannot be reached (a
        restart), for up to RECONNECT_SECONDS."""
        lost: float | None = None
        while True:
            try:
                result = call()
            except Unreachable:
                now = time.monotonic()
                if lost is None:
                    lost = now
                    self.voice.notify(Notice.LOST, "")
                elif now - lost > RECONNECT_SECONDS:
                    raise
                time.sleep(1.0)
                continue
            if lost is not None:
                self.voice.notify(Notice.BACK, "")
            return result

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def _moved(view: PipelineView) -> str:
    reason = f" ({view.reason})" if view.reason else ""
    return f"pipeline {view.id}: {view.pipeline['status']}{reason}"


def _bars(follower: PipelineFollower, console: Console, voice: Voice) -> None:
    columns = bar_columns()
    view = follower.view
    console.print(f"pipeline {view.id} ({view.pipeline.get('name')}): {view.pipeline['status']}")
    shown = view.pipeline["status"]
    with Progress(*columns, console=console, refresh_per_second=8) as bars:
        rows: dict[int, TaskID] = {}
        voice.say = lambda line: bars.console.print(f"tether: {line}")
        while True:
            view = follower.view
            if view.pipeline["status"] != shown:
                shown = view.pipeline["status"]
                if not view.done:  # the final line says it
                    bars.console.print(_moved(view))
            labels = step_labels(view.steps)
            for step in view.steps:
                status = view.status_of(step)
                fields = bar_fields({**step, "status": status})
                fields["status"] = f"[{STATUS_STYLE.get(status, 'blue')}]{status}[/]"
                pct = percent(step)
                # a bar pulses only while a running step does not say how far it is
                total = None if pct is None and status == "running" else 100.0
                if step["index"] not in rows:
                    rows[step["index"]] = bars.add_task(
                        labels[step["index"]], total=total, **fields
                    )
                bars.update(rows[step["index"]], total=total, completed=pct or 0, **fields)
            if view.done:
                bars.refresh()
                return
            follower.next(0.5)


def _lines(follower: PipelineFollower) -> None:
    view = follower.view
    print(f"pipeline {view.id} ({view.pipeline.get('name')}): {view.pipeline['status']}")
    shown_pipeline = view.pipeline["status"]
    shown: dict[int, str] = {}
    while True:
        view = follower.view
        if view.pipeline["status"] != shown_pipeline:
            shown_pipeline = view.pipeline["status"]
            if not view.done:  # the final line says it
                print(_moved(view), flush=True)
        labels = step_labels(view.steps)
        for step in view.steps:
            status = view.status_of(step)
            if shown.get(step["index"], "pending") != status:
                print(step_line(labels[step["index"]], step, status), flush=True)
            shown[step["index"]] = status
        if view.done:
            return
        follower.next(0.5)


def run_watch(api: Client, pipeline_id: int, *, as_json: bool = False) -> int:
    """Watch the pipeline until it is final. Returns the exit code: 0 if it
    succeeded, 1 otherwise, 130 on Ctrl-C. With ``as_json`` only the final pipeline is
    printed, as JSON."""
    console = Console(highlight=False)
    voice = Voice()
    follower: PipelineFollower | None = None
    try:
        follower = PipelineFollower(api, pipeline_id, voice).start()
        if as_json:
            while not follower.view.done:
                follower.next(1.0)
        elif console.is_terminal:
            _bars(follower, console, voice)
        else:
            _lines(follower)
    except KeyboardInterrupt:
        print(f"stopped watching; pipeline {pipeline_id} keeps going", file=sys.stderr, flush=True)
        return 130
    finally:
        if follower is not None:
            follower.close()
    pipeline = follower.view.pipeline
    if as_json:
        sys.stdout.write(json.dumps(pipeline, indent=2) + "\n")
    else:
        print(final_line(pipeline, 120 if console.is_terminal else None), flush=True)
    return 0 if pipeline["status"] == "succeeded" else 1
