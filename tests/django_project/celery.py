"""The Celery app of the test project, configured from the Django settings."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")

app = Celery("django_project", include=["django_project.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
