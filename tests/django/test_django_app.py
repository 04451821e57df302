"""The Django app's wiring: AppConfig, store selection, worker connection handling."""

from __future__ import annotations

import pytest
from django_support import setup


def test_app_config_label_name_and_auto_field():
    """The app is labelled ``celery_durable`` with a readable name and an explicit auto field."""
    setup()
    from django.apps import apps

    config = apps.get_app_config("celery_durable")
    assert config.name == "celery_durable_django"
    assert config.verbose_name == "Durable runs"
    assert config.default_auto_field == "django.db.models.BigAutoField"


def test_django_db_backend_selects_the_django_store():
    """With django-celery-results' backend (or durable_store="django://") the store is Django's."""
    setup()
    from celery import Celery

    from celery_durable.stores import get_store, store_from_spec
    from celery_durable_django.store import DjangoStore

    app = Celery("selection", backend="django-db", broker="memory://", set_as_current=False)
    assert isinstance(get_store(app), DjangoStore)
    assert isinstance(store_from_spec(app, "django://"), DjangoStore)


def test_the_django_store_declares_every_capability():
    """Waits, child runs, idempotency keys, concurrency slots and retention: all of them."""
    setup()
    from celery_durable.stores.base import CAPABILITIES
    from celery_durable_django.store import DjangoStore

    assert all(issubclass(DjangoStore, capability) for capability in CAPABILITIES)


def test_connections_are_closed_around_tasks_but_not_eager_ones():
    """task_prerun/postrun close old connections for worker tasks, never for eager ones."""
    setup()
    from celery import signals
    from django.db import connections

    from celery_durable_django.apps import _close_old_connections

    assert any(r[1]() is _close_old_connections or r[1] is _close_old_connections
               for r in signals.task_prerun.receivers)
    assert any(r[1]() is _close_old_connections or r[1] is _close_old_connections
               for r in signals.task_postrun.receivers)
    class Task:
        class request:
            is_eager = True

    conn = connections["sqlite"]
    conn.ensure_connection()
    _close_old_connections(Task)  # an eager task leaves the caller's connection alone
    assert conn.connection is not None
    Task.request.is_eager = False
    _close_old_connections(Task)  # CONN_MAX_AGE = 0: a worker task starts afresh
    assert conn.connection is None


def test_ping_explains_missing_tables():
    """ping() on a database without the app's tables says to run migrate."""
    setup()
    from django.db import connections

    from celery_durable.errors import StoreUnavailableError
    from celery_durable_django.store import DjangoStore

    with connections["sqlite"].cursor() as cursor:
        cursor.execute("ALTER TABLE celery_durable_run RENAME TO celery_durable_run_away")
    try:
        with pytest.raises(StoreUnavailableError, match="migrate"):
            DjangoStore(using="sqlite").ping()
    finally:
        with connections["sqlite"].cursor() as cursor:
            cursor.execute("ALTER TABLE celery_durable_run_away RENAME TO celery_durable_run")
