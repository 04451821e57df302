"""The Celery app of the test project, configured from the Django settings.

Unlike a usual project, the app is not made the *current* app: the test
session also holds the other tests' apps, and must not change which one
``celery.current_app`` means for them. The admin finds this app through the
task of the run it re-triggers.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")

app = Celery("django_project", include=["django_project.tasks"], set_as_current=False)
app.config_from_object("django.conf:settings", namespace="CELERY")

from . import tasks  # noqa: E402,F401 - register the tasks in every process that loads the app
