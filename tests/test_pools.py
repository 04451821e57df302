"""The durable core on every worker pool Celery ships besides prefork: ``threads``, ``solo``,
``gevent`` and ``eventlet`` (deprecated upstream, still supported by Celery).

Real ``celery worker -P <pool>`` processes on real Redis; every side effect is counted
outside the worker, in Redis. Each pool gets the step retry path, a SIGKILL of the whole
worker in the middle of a run (a new worker on the same pool resumes it after the last
completed step: the fast lane and the sweeper work there), a step longer than three lease
TTLs kept by the heartbeat, a durable sleep and a parent waiting for child runs.
"""

from __future__ import annotations

import os

import pytest
from harness import wait_for

from celery_durable import RunStatus, get_run

pytestmark = pytest.mark.worker

POOLS = ["threads", "solo", "gevent", "eventlet"]
LEASE_TTL = float(os.environ.get("TEST_LEASE_TTL", "3"))


def count(redis_client, tag: str, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(f"{tag}:{name}") or 0)


@pytest.mark.parametrize("pool", POOLS)
def test_a_retried_step_and_a_sigkill_resume_on_the_pool(start_worker, tag, redis_client,
                                                          pool: str) -> None:
    """A step that fails twice is retried in place (the others run once); a worker SIGKILLed
    in step 3 of 5 is replaced by one on the same pool, which resumes at step 3."""
    from apps.core_app import app, five_with_crash_point, four_steps

    first = start_worker("apps.core_app", concurrency=2, pool=pool)
    done = four_steps.delay(tag, 1, 2)
    assert done.get(timeout=30) == {"a": 2, "b": 3, "c": 30, "d": 31}
    assert count(redis_client, tag, "add_one") == 3 and count(redis_client, tag, "flaky") == 3
    retried = get_run(done.id, app=app)
    assert retried.status is RunStatus.SUCCEEDED
    assert [s.attempts for s in retried.steps] == [1, 1, 3, 1]

    crash = f"{tag}-crash"
    result = five_with_crash_point.delay(crash, 60)
    wait_for(lambda: count(redis_client, crash, "crash_point") == 1, 20,
             message="step 3 running")
    first.kill()
    start_worker("apps.core_app", concurrency=2, pool=pool)
    assert result.get(timeout=4 * LEASE_TTL + 15) == [1, 2, 2, 3, 4]
    assert count(redis_client, crash, "add_one") == 4  # steps 1, 2 never ran again
    assert count(redis_client, crash, "crash_point") == 2
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.recoveries == 1


@pytest.mark.parametrize("pool", POOLS)
def test_a_durable_sleep_and_child_runs_on_the_pool(start_worker, tag, redis_client,
                                                    pool: str) -> None:
    """A run sleeps without holding the worker and wakes; a parent waits for two child runs
    (one of them slow) and gets both results; every step ran once."""
    from apps.controls_app import app, quick_and_slow, sleeper

    start_worker("apps.controls_app", concurrency=2, pool=pool)
    napping = sleeper.delay(tag, 1.0)
    assert napping.get(timeout=30) == "woke"
    assert get_run(napping.id, app=app).status is RunStatus.SUCCEEDED
    assert [s.key for s in get_run(napping.id, app=app).steps] == [
        "mark#0", "sleep#0", "mark#1"]
    assert quick_and_slow.delay(tag).get(timeout=30) == [4, 9]
    assert count(redis_client, tag, "square:2") == 1
    assert count(redis_client, tag, "square:3") == 1


@pytest.mark.parametrize("pool", POOLS)
def test_the_heartbeat_keeps_a_long_step_on_the_pool(start_worker, tag, redis_client,
                                                     pool: str) -> None:
    """A step running over three lease TTLs (of 1 s) is not taken over: the heartbeat
    renews its lease on this pool too (it blocks in ``time.sleep``, which gevent patches)."""
    from apps.core_app import app, outlives_its_lease

    worker = start_worker("apps.core_app", concurrency=2, pool=pool,
                          env={"TEST_LEASE_TTL": "1"})
    result = outlives_its_lease.delay(tag, 3.2)
    assert result.get(timeout=30) == [result.id, "done", 1]
    assert count(redis_client, tag, "long_step") == 1
    assert get_run(result.id, app=app).recoveries == 0
    assert "publishing again" not in worker.log()
