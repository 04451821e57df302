"""Durable tasks whose runs live in the Django store on a real MariaDB (``TEST_MARIADB_URL``,
set by ``tests/test_mariadb_worker.py``); broker and results on the test Redis. Every
execution is counted in Redis, outside the worker.

In a worker process this module configures Django itself (no project: the app's models
only), with the MariaDB as both ``default`` and ``mariadb``; in the test process Django is
already configured by ``django_support`` and the ``mariadb`` alias added there. The store
uses the ``mariadb`` alias in both, so producer and worker see the same runs.
"""

from __future__ import annotations

import os
from typing import Any

import django
from celery.signals import worker_process_init
from django.conf import settings

from apps.common import make_app
from apps.core_app import crash_and_retry_body  # the core tests' steps (counted in Redis)
from celery_durable import durable_task

if not settings.configured:  # a worker process
    from django_support import mysql_settings

    database = mysql_settings(os.environ["TEST_MARIADB_URL"])
    settings.configure(
        DATABASES={"default": database, "mariadb": database}, USE_TZ=True, TIME_ZONE="UTC",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "celery_durable_django"])
    django.setup()


def store(app: Any) -> Any:
    """The Django store on the ``mariadb`` alias (``durable_store`` names this factory)."""
    from celery_durable_django.store import DjangoStore

    return DjangoStore(using="mariadb")


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A pool process must not use the connections it inherited (Celery's Django fixup
    does the same in a Django project)."""
    from django.db import connections

    connections.close_all()


app = make_app("mariadb_app", durable_store="apps.mariadb_app:store")


@durable_task(app=app, name="mariadb.crash_and_retry")
def crash_and_retry(tag: str, seconds: float) -> list[object]:
    """Two steps, a slow one (the test kills the worker there), a flaky one, one more."""
    return crash_and_retry_body(tag, seconds)
