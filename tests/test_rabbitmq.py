"""The core promises on a RabbitMQ broker, with real workers: crash and retry, a wait, a
cancel and child runs (``tests/apps/rabbit_app.py``). RabbitMQ redelivers the message of a
killed worker at once (its connection closed): a second path to the same resume.

Skips without a RabbitMQ locally; fails under ``CI=true``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import services
from celery.exceptions import TaskRevokedError
from harness import wait_for

from celery_durable import RunStatus, cancel_run, get_run, send_event

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module", autouse=True)
def rabbitmq() -> Iterator[str]:
    """This session's RabbitMQ (its queue is deleted afterwards)."""
    url = services.rabbitmq_url()
    if url is None:
        services.unavailable("RabbitMQ is not reachable (RABBITMQ_URL)")
    os.environ["TEST_RABBITMQ_URL"] = url
    yield url
    from apps.rabbit_app import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(os.environ["TEST_QUEUE"])


def count(redis_client, tag: str, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(f"{tag}:{name}") or 0)


def test_a_killed_worker_s_run_resumes_and_a_flaky_step_is_retried(start_worker, tag,
                                                                  redis_client) -> None:
    """SIGKILL in the slow step: RabbitMQ redelivers, the run resumes at that step; the flaky
    step fails twice and succeeds; each completed step ran once."""
    from apps.rabbit_app import app, crash_and_retry

    first = start_worker("apps.rabbit_app", concurrency=1)
    result = crash_and_retry.delay(tag, 2.0)
    wait_for(lambda: count(redis_client, tag, "slow") == 1, 30, message="the slow step")
    first.kill()
    start_worker("apps.rabbit_app", concurrency=1)
    assert result.get(timeout=60) == [1, 2, "slept", 20, 21]
    assert count(redis_client, tag, "add_one") == 3
    assert count(redis_client, tag, "slow") == 2  # the interrupted step ran again, once
    assert count(redis_client, tag, "flaky") == 3
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.recoveries == 1


def test_an_event_resumes_a_waiting_run(start_worker, tag, redis_client) -> None:
    """``wait_for_event`` parks the run without a worker; ``send_event`` resumes it."""
    from apps.rabbit_app import app, approval

    start_worker("apps.rabbit_app", concurrency=1)
    result = approval.delay(tag, tag)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.WAITING, 30,
             message="the run waiting")
    assert send_event("approved", key=tag, payload={"by": "ann"}, app=app) == 1
    assert result.get(timeout=30) == {"by": "ann"}
    assert count(redis_client, tag, "add_one") == 1


def test_a_sleeping_run_is_cancelled(start_worker, tag, redis_client) -> None:
    """``cancel_run`` on a sleeping run: CANCELLED, REVOKED for Celery, never resumed."""
    from apps.rabbit_app import app, napper

    start_worker("apps.rabbit_app", concurrency=1)
    result = napper.delay(tag)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.SLEEPING, 30,
             message="the run sleeping")
    assert cancel_run(result.id, app=app)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=20)
    assert get_run(result.id, app=app).status is RunStatus.CANCELLED
    assert count(redis_client, tag, "add_one") == 1


def test_child_runs_gather_their_results(start_worker, tag, redis_client) -> None:
    """``gather`` of three child runs on RabbitMQ: the parent waits without a worker and gets
    the results in order; each child ran once."""
    from apps.rabbit_app import fan_out

    start_worker("apps.rabbit_app", concurrency=2)
    assert fan_out.delay(tag, 3).get(timeout=60) == [0, 1, 4]
    assert [count(redis_client, tag, f"square:{x}") for x in range(3)] == [1, 1, 1]
    assert count(redis_client, tag, "add_one") == 1
