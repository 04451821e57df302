"""The Celery app, configured from the Django settings (the ``CELERY_`` namespace).

This is the layout of Celery's "First steps with Django" guide: nothing in
it is specific to celery_durable. Durable tasks are ordinary tasks of this
app; with ``CELERY_RESULT_BACKEND = "django-db"`` and ``celery_durable_django``
installed their runs and checkpoints are stored in the Django database.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

app = Celery("mysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
