from typing import Any

from django.urls import URLPattern, path
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tether.api import account, datasets, pipelines, views


class DatasetImportRoute(datasets.DatasetImportView):
    """POST uploads a file; GET or DELETE of /datasets/import ask for a dataset named
    "import", a name no dataset can have: say so instead of 405 Method not allowed."""

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        raise exceptions.ValidationError(
            "'import' is a reserved name: no dataset can have it (POST /datasets/import "
            "uploads a CSV file)"
        )

    delete = get

    @property
    def allowed_methods(self) -> list[str]:
        """The Allow header names what the OpenAPI document lists: POST (and OPTIONS)."""
        return [m for m in super().allowed_methods if m not in ("GET", "HEAD", "DELETE")]


urlpatterns = [
    path("auth/register", views.RegisterView.as_view(), name="register"),
    path("auth/token", views.TokenView.as_view(), name="token"),
    path("auth/logout", views.LogoutView.as_view(), name="logout"),
    path("auth/tokens", views.TokenListView.as_view(), name="tokens"),
    path("auth/me", account.MeView.as_view(), name="me"),
    path("auth/tokens/<int:pk>", views.TokenRevokeView.as_view(), name="token-revoke"),
    path("health", views.HealthView.as_view(), name="health"),
    path("task-types", views.TaskTypeListView.as_view(), name="task-types"),
    path("tasks", views.TaskListView.as_view(), name="tasks"),
    path("tasks/<int:pk>", views.TaskDetailView.as_view(), name="task"),
    path("tasks/<int:pk>/events", views.TaskEventsView.as_view(), name="task-events"),
    *[
        path(f"tasks/<int:pk>/{a}", views.ControlView.as_view(action_name=a), name=f"task-{a}")
        for a in ("pause", "resume", "cancel")
    ],
    path("tasks/<int:pk>/download", datasets.TaskDownloadView.as_view(), name="task-download"),
    path("pipelines", pipelines.PipelineListView.as_view(), name="pipelines"),
    path("pipelines/<int:pk>", pipelines.PipelineDetailView.as_view(), name="pipeline"),
    path(
        "pipelines/<int:pk>/events",
        pipelines.PipelineEventsView.as_view(),
        name="pipeline-events",
    ),
    *[
        path(
            f"pipelines/<int:pk>/{a}",
            pipelines.PipelineControlView.as_view(action_name=a),
            name=f"pipeline-{a}",
        )
        for a in ("pause", "resume", "cancel", "retry")
    ],
    path("datasets", datasets.DatasetListView.as_view(), name="datasets"),
    path("datasets/import", DatasetImportRoute.as_view(), name="dataset-import"),
    path("datasets/<str:name>", datasets.DatasetDetailView.as_view(), name="dataset"),
    path("datasets/<str:name>/rows", datasets.DatasetRowsView.as_view(), name="dataset-rows"),
    path("datasets/<str:name>/export", datasets.DatasetExportView.as_view(), name="dataset-export"),
]


def with_trailing_slash(pattern: URLPattern) -> URLPattern:
    """``pattern`` with a trailing slash, served as it is: a redirect would make clients
    resend a POST as a GET without its body. Left out of the OpenAPI document, which lists
    each route once."""
    callback: Any = pattern.callback
    kwargs = dict(callback.view_initkwargs)
    if issubclass(callback.view_class, APIView):
        kwargs["schema"] = None
    return path(f"{pattern.pattern}/", callback.view_class.as_view(**kwargs))


urlpatterns += [with_trailing_slash(p) for p in urlpatterns if isinstance(p, URLPattern)]
