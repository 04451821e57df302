"""The Django store on a real MariaDB under real workers: a worker SIGKILLed in the middle
of a run, and a step that fails twice (``tests/apps/mariadb_app.py``). Side effects are
counted in Redis, outside the worker; the run's record is read back from MariaDB.

Skips without MariaDB locally (no server and no ``mariadbd`` to start); fails under
``CI=true``.
"""

from __future__ import annotations

import os

import pytest
import services
from harness import wait_for

from celery_durable import RunStatus, get_run

pytestmark = pytest.mark.worker

LEASE_TTL = float(os.environ.get("TEST_LEASE_TTL", "3"))


@pytest.fixture(scope="module", autouse=True)
def mariadb() -> str:
    """Django's ``mariadb`` alias, migrated, and its URL for the workers."""
    from django_support import require_mariadb, truncate

    require_mariadb()
    os.environ["TEST_MARIADB_URL"] = services.mariadb_url()
    truncate("mariadb")
    return os.environ["TEST_MARIADB_URL"]


def count(redis_client, tag: str, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(f"{tag}:{name}") or 0)


def test_a_killed_worker_s_run_resumes_from_mariadb(start_worker, tag, redis_client) -> None:
    """SIGKILL in the slow step: a new worker's sweeper recovers the run after its lease
    expires and it resumes at that step; the flaky step fails twice, then succeeds; every
    completed step ran once, and MariaDB holds the whole story."""
    from apps.mariadb_app import app, crash_and_retry

    first = start_worker("apps.mariadb_app", concurrency=1)
    result = crash_and_retry.delay(tag, 3.0)
    wait_for(lambda: count(redis_client, tag, "slow") == 1, 30, message="the slow step")
    first.kill()
    start_worker("apps.mariadb_app", concurrency=1)
    assert result.get(timeout=4 * LEASE_TTL + 30) == [1, 2, "slept", 20, 21]
    assert count(redis_client, tag, "add_one") == 3
    assert count(redis_client, tag, "slow") == 2  # the interrupted step ran again, once
    assert count(redis_client, tag, "flaky") == 3
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.recoveries == 1
    assert [s.attempts for s in run.steps] == [1, 1, 1, 3, 1]

    from celery_durable_django.models import Run

    assert Run.objects.using("mariadb").get(pk=result.id).status == "SUCCEEDED"
