from django.urls import path

from tether.api import datasets, views

urlpatterns = [
    path("auth/register", views.RegisterView.as_view(), name="register"),
    path("auth/token", views.TokenView.as_view(), name="token"),
    path("auth/logout", views.LogoutView.as_view(), name="logout"),
    path("auth/tokens", views.TokenListView.as_view(), name="tokens"),
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
    path("datasets", datasets.DatasetListView.as_view(), name="datasets"),
    path("datasets/import", datasets.DatasetImportView.as_view(), name="dataset-import"),
    path("datasets/<str:name>", datasets.DatasetDetailView.as_view(), name="dataset"),
    path("datasets/<str:name>/rows", datasets.DatasetRowsView.as_view(), name="dataset-rows"),
    path("datasets/<str:name>/export", datasets.DatasetExportView.as_view(), name="dataset-export"),
]
