"""The Celery app for Celery's own tools: ``celery -A tether.worker_app inspect active``
(with the same TETHER_* environment as the workers)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tether.server.settings")
django.setup()

from tether.executors.celery_executor import get_app  # noqa: E402

app = get_app()
