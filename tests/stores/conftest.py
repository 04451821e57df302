"""The ``store`` fixture: every CheckpointStore implementation, each on a real server.

Django stores come from ``tests/django_support.py`` (``make_django_store(kind)``
with kind ``"sqlite"`` or ``"postgres"``; it may return the store, or a
context manager / generator yielding it). Until that module exists those
parameters skip locally (and fail under CI). SQL stores (SQLAlchemy Core) come from
``tests/sql_stores.py``: kinds ``sql-sqlite``, ``sql-postgres``, ``sql-mariadb``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator

import pytest
import services

from celery_durable.stores.base import CheckpointStore
from celery_durable.stores.memory import MemoryStore

STORE_KINDS = ["memory", "redis", "redis-cluster", "django-sqlite", "django-postgres",
               "django-mariadb", "sql-sqlite", "sql-postgres", "sql-mariadb"]


@contextlib.contextmanager
def _redis_store() -> Iterator[CheckpointStore]:
    import redis
    from redis_stores import redis_store

    with redis_store(redis.Redis.from_url(os.environ["TEST_REDIS_URL"]), "contract") as store:
        yield store


@contextlib.contextmanager
def _redis_cluster_store() -> Iterator[CheckpointStore]:
    """A RedisStore on the session's real 3-master Redis Cluster, under a fresh prefix."""
    from redis_stores import redis_store

    from celery_durable.stores.redis import RedisStore

    cluster = RedisStore.from_cluster_url(services.redis_cluster_url()).client
    with redis_store(cluster, "contract-cluster") as store:
        yield store


@contextlib.contextmanager
def _django_store(kind: str) -> Iterator[CheckpointStore]:
    try:
        from django_support import make_django_store
    except ImportError:
        services.unavailable("Django store not built yet")
    made = make_django_store(kind)
    if inspect.isgenerator(made):
        made = contextlib.contextmanager(lambda: made)()
    if hasattr(made, "__enter__"):
        with made as store:
            yield store
    else:
        try:
            yield made
        finally:
            made.close()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Iterator[CheckpointStore]:
    """A fresh, empty store of each kind; Redis ones use a unique key prefix, removed after."""
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "redis":
        with _redis_store() as store:
            yield store
    elif kind == "redis-cluster":
        with _redis_cluster_store() as store:
            yield store
    elif kind.startswith("sql-"):
        from sql_stores import make_sql_store

        with make_sql_store(kind.removeprefix("sql-")) as store:
            yield store
    else:
        with _django_store(kind.removeprefix("django-")) as store:
            yield store
