from __future__ import annotations

import importlib
import os

from django.apps import AppConfig
from django.core import checks


class TetherConfig(AppConfig):
    name = "tether"
    verbose_name = "Tether"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import tether.datasets.exporter
        import tether.datasets.importer
        import tether.datasets.sweep
        import tether.pipelines.control
        import tether.tasks  # noqa: F401  (registers the built-in task types: csv_import, …)
        from tether.executors import system_check

        checks.register(system_check, "tether")

        for module in filter(None, os.environ.get("TETHER_TASK_MODULES", "").split(",")):
            importlib.import_module(module.strip())
