"""The pipeline calls of ``Client``: submit a pipeline document, list, read and control
pipelines. Every call returns the API's parsed JSON or raises a
``tether.client.errors`` error (``NotFound`` names the pipeline, ``Conflict`` carries
its ``current_status``, ``BadRequest`` the bad field in ``body["field"]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class PipelineCalls:
    """Mixed into ``Client``, whose ``request`` these calls use."""

    if TYPE_CHECKING:

        def request(self, *args: Any, **kw: Any) -> Any: ...

    def submit_pipeline(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Start a pipeline from its document (``pipeline_name``, ``data_url``,
        ``project``, ``transformers_list``) as the data-pipeline service's users send
        it; returns the new pipeline with its steps. A bad step raises ``BadRequest``
        whose ``body`` names the ``field`` (and the ``step`` index); nothing is created."""
        return dict(self.request("POST", "/pipelines", json=doc))

    def pipeline(self, pipeline_id: int) -> dict[str, Any]:
        """One pipeline with its steps (each step's task id, status and progress)."""
        return dict(
            self.request("GET", f"/pipelines/{pipeline_id}", missing=f"pipeline {pipeline_id}")
        )

    def pipelines(
        self, *, project: str | None = None, status: str | None = None, limit: int | None = 50
    ) -> list[dict[str, Any]]:
        """Your pipelines, newest first (``status``: comma-separated); ``limit=None``: all."""
        return self.pipelines_counted(project=project, status=status, limit=limit)[0]

    def pipelines_counted(
        self,
        *,
        project: str | None = None,
        status: str | None = None,
        limit: int | None = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """(pipelines newest first, how many match in all); ``limit=None`` follows every
        page."""
        params: dict[str, Any] = {"page_size": 500 if limit is None else max(1, min(limit, 500))}
        if project is not None:
            params["project"] = project
        if status:
            params["status"] = status
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.request("GET", "/pipelines", params={**params, "page": page})
            found.extend(data["results"])
            count = int(data.get("count") or 0)
            if not data.get("next") or (limit is not None and len(found) >= limit):
                break
            page += 1
        found = found if limit is None else found[:limit]
        return found, max(count, len(found))

    def pipeline_events(self, pipeline_id: int) -> list[dict[str, Any]]:
        """The pipeline's status changes, oldest first: id, from_status, to_status, at,
        actor, reason."""
        data = self.request(
            "GET", f"/pipelines/{pipeline_id}/events", missing=f"pipeline {pipeline_id}"
        )
        # one page of a paginated answer, should the server page it
        return list(data["results"] if isinstance(data, dict) else data)

    def _pipeline_control(
        self, action: str, pipeline_id: int, reason: str | None
    ) -> dict[str, Any]:
        body = {"reason": reason} if reason is not None else None
        return dict(
            self.request(
                "POST",
                f"/pipelines/{pipeline_id}/{action}",
                json=body,
                missing=f"pipeline {pipeline_id}",
            )
        )

    def pause_pipeline(self, pipeline_id: int, reason: str | None = None) -> dict[str, Any]:
        """Pause the whole pipeline: its running steps pause, no new step starts.
        Raises ``Conflict`` when it cannot pause now."""
        return self._pipeline_control("pause", pipeline_id, reason)

    def resume_pipeline(self, pipeline_id: int, reason: str | None = None) -> dict[str, Any]:
        """Resume a paused pipeline where it was."""
        return self._pipeline_control("resume", pipeline_id, reason)

    def cancel_pipeline(self, pipeline_id: int, reason: str | None = None) -> dict[str, Any]:
        """Cancel the pipeline: running steps are cancelled, then every finished step's
        rollback runs in reverse order."""
        return self._pipeline_control("cancel", pipeline_id, reason)

    def retry_pipeline(self, pipeline_id: int, reason: str | None = None) -> dict[str, Any]:
        """Run a failed pipeline again from its failed step."""
        return self._pipeline_control("retry", pipeline_id, reason)
