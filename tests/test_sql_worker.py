"""The SQL store under real workers, as a plain Celery project meets it: results in Celery's
SQL database backend (``db+sqlite://`` and ``db+postgresql://``), a RabbitMQ broker, no
``durable_store`` (``tests/apps/sql_app.py``). A worker is SIGKILLed in the middle of a run
and the body fails once outside a step (``autoretry_for`` with ``retry_kwargs`` and
``retry_backoff``); side effects are counted in Redis, outside the worker; the run's record
is read back from the database.

Skips without RabbitMQ or PostgreSQL locally; fails under ``CI=true``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import services
from harness import wait_for

from celery_durable import RunStatus, get_run

pytestmark = pytest.mark.worker

LEASE_TTL = float(os.environ.get("TEST_LEASE_TTL", "3"))


@pytest.fixture(params=["sqlite", "postgres"])
def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``TEST_SQL_BACKEND`` for the app (a fresh SQLite file, or the session's PostgreSQL);
    RabbitMQ for its broker. The app module is imported afresh for each."""
    import sys

    rabbit = services.rabbitmq_url()
    if rabbit is None:
        services.unavailable("RabbitMQ is not reachable (RABBITMQ_URL)")
    if request.param == "sqlite":
        url = f"db+sqlite:///{tmp_path / 'results.sqlite'}"
    else:
        from sql_stores import sqlalchemy_url

        try:
            url = "db+" + sqlalchemy_url(services.postgres_server_url())
        except Exception as exc:
            services.unavailable(f"PostgreSQL unavailable: {exc}")
    os.environ.update(TEST_SQL_BACKEND=url, TEST_RABBITMQ_URL=rabbit)
    sys.modules.pop("apps.sql_app", None)
    yield url
    from apps.sql_app import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(os.environ["TEST_QUEUE"])
    sys.modules.pop("apps.sql_app", None)


def count(redis_client, tag: str, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(f"{tag}:{name}") or 0)


def test_a_killed_worker_s_run_resumes_from_the_result_backend_s_database(
        sql_backend, start_worker, tag, redis_client) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL in the slow step: the run resumes at that step on a new worker; the body's
    failure outside a step is retried by Celery's autoretry (retries = 1) without repeating a
    completed step; the database holds the whole story."""
    from apps.sql_app import app, order

    from celery_durable.stores import get_store
    from celery_durable.stores.sql import SqlStore

    first = start_worker("apps.sql_app", concurrency=1)
    result = order.delay(tag, 3.0)
    wait_for(lambda: count(redis_client, tag, "slow") == 1, 30, message="the slow step")
    first.kill()
    start_worker("apps.sql_app", concurrency=1)
    assert result.get(timeout=4 * LEASE_TTL + 60) == [1, "slept", 2, 1]
    assert count(redis_client, tag, "add_one") == 2   # each completed step ran once
    assert count(redis_client, tag, "slow") == 2      # the interrupted step ran again, once
    assert count(redis_client, tag, "body-failure") == 2
    store = get_store(app)
    assert isinstance(store, SqlStore)
    assert str(store.engine.url) == sql_backend.removeprefix("db+")
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.recoveries == 1
    assert [(s.name, s.attempts) for s in run.steps] == [
        ("add_one", 1), ("slow", 1), ("add_one", 1)]
