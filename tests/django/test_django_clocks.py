"""The Django store keeps leases and timers by the database's clock, whatever the workers' say.

Workers run with their wall clock 90 s behind or ahead (libfaketime, from PyPI); counts
and times are taken outside them (Redis counters, Redis's clock).
"""

from __future__ import annotations

import pytest
from harness import skewed, wait_for

from celery_durable import get_run

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("db")]


def count(redis_client, key: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(key) or 0)


@pytest.mark.parametrize("offset", ["-90s", "+90s"])
def test_a_sleep_wakes_by_the_database_s_clock(start_worker, tag, redis_client,
                                               offset: str) -> None:
    """The same on the Django store (PostgreSQL): the database's clock decides."""
    from django_project.tasks import clocked_sleep

    start_worker("django_project", concurrency=1, env=skewed(offset))
    assert clocked_sleep.delay(tag, 3.0).get(timeout=40) == 3.0
    slept = float(redis_client.get(f"{tag}:woke-at")) - float(redis_client.get(
        f"{tag}:slept-at"))
    assert slept >= 2.5, slept


def test_a_worker_behind_keeps_its_lease_against_a_correct_one(start_worker, tag,
                                                               redis_client) -> None:
    """A worker 90 s behind holds a run with a slow step while a correct-clock worker sweeps:
    the step starts once and the run is never recovered (its lease looked long expired)."""
    from django_project.tasks import app, slow_run

    start_worker("django_project", concurrency=1, env=skewed("-90s"))
    result = slow_run.delay(tag, 5.0)
    wait_for(lambda: count(redis_client, f"{tag}:slow-start") == 1, 20,
             message="the slow step started on the skewed worker")
    start_worker("django_project", concurrency=1)
    assert result.get(timeout=40) == "slow"
    assert count(redis_client, f"{tag}:slow-start") == 1
    assert get_run(result.id, app=app).recoveries == 0
