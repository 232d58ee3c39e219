"""Housekeeping for datasets: what crashes and failures leave behind, and old exports.

- the staging table of an import whose task is final (or gone): an import that failed
  on something other than its data (which it cleans up itself) leaves one; and the
  table a ``replace`` import replaced, kept until its task is over (see
  ``importer.retired_name``);
- uploads whose import task is final (or that never got a task), at the first sweep
  after UPLOAD_GRACE_SECONDS (an import that failed on something other than its data
  leaves its upload), and files in the uploads directory that no upload names, after
  ORPHAN_FILE_SECONDS (a server that died mid-upload leaves one);
- export files older than ``TETHER_EXPORT_TTL_SECONDS`` (default 7 days), and partial
  export files whose task is final.

Runs in every worker's maintenance round (see ``tether.housekeeping``), every
SWEEP_SECONDS. Everything it removes is unreachable or expired, so several workers may
sweep at once.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import connection

from tether.datasets import sql
from tether.datasets.files import data_dir
from tether.executors.base import seconds_setting
from tether.housekeeping import chore
from tether.models import Task, Upload
from tether.states import FINAL

log = logging.getLogger(__name__)
SWEEP_SECONDS = 600.0
ORPHAN_FILE_SECONDS = 3600.0  # a file no upload names, untouched this long, is dropped
UPLOAD_GRACE_SECONDS = 60.0  # an upload no unfinished import needs, this old, is removed
EXPORT_TTL_SECONDS = 7 * 24 * 3600.0
STAGING = re.compile(r"^(?:tstg|tret)_(\d+)$")  # staging, retired (by task id)
EXPORT = re.compile(r"^export-(\d+)\.csv(\.part)?$")


def export_ttl() -> float:
    return seconds_setting("EXPORT_TTL", EXPORT_TTL_SECONDS)


def _unfinished(task_ids: set[int]) -> set[int]:
    """Those of ``task_ids`` whose task exists and is not final."""
    found: set[int] = set()
    ids = sorted(task_ids)
    for i in range(0, len(ids), 500):
        found.update(
            Task.objects.filter(id__in=ids[i : i + 500])
            .exclude(status__in=[str(s) for s in FINAL])
            .values_list("id", flat=True)
        )
    return found


def sweep_staging() -> list[str]:
    with connection.cursor() as cur:
        tables = [
            (int(m.group(1)), name)
            for name in connection.introspection.table_names(cur)
            if (m := STAGING.match(name))
        ]
    busy = _unfinished({task_id for task_id, _ in tables})
    dropped = []
    for task_id, name in tables:
        if task_id not in busy:
            sql.drop_table(name)
            dropped.append(name)
    return dropped


def sweep_uploads(now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    # Uploads an unfinished import of their owner still needs, by public id (or by pk:
    # tasks queued before public ids). Another user's task naming an upload keeps
    # nothing alive.
    # (An import_csv pipeline step names its upload in its checkpoint.)
    live: set[tuple[int, str | int]] = set()
    for owner_id, params, checkpoint in (
        Task.objects.filter(type__in=("csv_import", "import_csv"))
        .exclude(status__in=[str(s) for s in FINAL])
        .values_list("owner_id", "params", "checkpoint")
    ):
        for doc in (params, checkpoint):
            ref = doc.get("upload") if isinstance(doc, dict) else None
            if isinstance(ref, str | int):
                live.add((owner_id, ref))
    removed = []
    settled = datetime.fromtimestamp(now - UPLOAD_GRACE_SECONDS, tz=UTC)
    for upload in Upload.objects.filter(created_at__lt=settled):
        if (upload.owner_id, upload.public_id) in live or (upload.owner_id, upload.pk) in live:
            continue
        (data_dir("uploads") / upload.path).unlink(missing_ok=True)
        upload.delete()
        removed.append(upload.path)
    named = set(Upload.objects.values_list("path", flat=True))
    for path in data_dir("uploads").iterdir():
        if path.name not in named and _age(path, now) > ORPHAN_FILE_SECONDS:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def sweep_exports(now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    parts: dict[int, Path] = {}
    removed = []
    for path in data_dir("exports").iterdir():
        m = EXPORT.match(path.name)
        if m is None:
            continue
        if m.group(2):
            parts[int(m.group(1))] = path
        elif _age(path, now) > export_ttl():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    for task_id in set(parts) - _unfinished(set(parts)):
        parts[task_id].unlink(missing_ok=True)
        removed.append(parts[task_id].name)
    return removed


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


@chore("datasets.sweep", every=SWEEP_SECONDS)
def sweep() -> dict[str, Any]:
    """All of the above; returns what was removed."""
    done = {"staging": sweep_staging(), "uploads": sweep_uploads(), "exports": sweep_exports()}
    if any(done.values()):
        log.info("datasets sweep removed %s", done)
    return done
