"""A durable task keeps Celery's meaning under a real worker: canvas across the library's own
re-sends, revoke and expiry, hard time limits, replace, Ignore and Reject, retries, task ids.

Each behaviour is what plain Celery does with the same call; executions are counted in
Redis by the tasks of ``tests/apps/semantics_app.py``.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from celery import chain
from celery.exceptions import TaskRevokedError
from harness import wait_for

from celery_durable import RunNotFoundError, RunStatus, get_run

pytestmark = pytest.mark.worker


def count(redis_client, key: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(key) or 0)


def test_a_chain_survives_a_retry_that_waits_in_the_store(start_worker, tag,
                                                           redis_client) -> None:
    """``self.retry(countdown=2)`` longer than ``durable_max_countdown``: the retry waits in
    the store and the sweeper re-sends it with the rest of the chain (dropped before)."""
    from apps.semantics_app import app, plain_add, retry_once

    start_worker("apps.semantics_app", concurrency=1)
    result = chain(retry_once.s(tag, 7, 2.0), plain_add.s(1)).apply_async()
    assert result.get(timeout=30) == 8
    assert count(redis_client, f"{tag}:body") == 2
    assert count(redis_client, f"{tag}:before") == 1  # the step before the retry: once
    first = result.parent
    assert first is not None and get_run(first.id, app=app).status is RunStatus.SUCCEEDED
    assert count(redis_client, f"prerun:{first.id}") == 2  # one message per retry, not two


def test_a_chain_survives_a_worker_killed_mid_run(start_worker, tag, redis_client) -> None:
    """SIGKILL in the middle of the first task: the sweeper's recovery re-sends the run with
    its chain, and the chain finishes (it stayed PENDING forever before)."""
    from apps.semantics_app import plain_record, slow

    worker = start_worker("apps.semantics_app", concurrency=1)
    result = chain(slow.s(tag, 3.0), plain_record.s(tag)).apply_async()
    wait_for(lambda: redis_client.get(f"{tag}:slow-started"), 20, message="the nap started")
    worker.kill()
    start_worker("apps.semantics_app", concurrency=1)
    assert result.get(timeout=60) == "done"
    assert count(redis_client, f"{tag}:first") == 1
    assert [json.loads(v) for v in redis_client.lrange(f"{tag}:recorded", 0, -1)] == ["done"]


def test_retry_with_new_arguments_runs_with_them(start_worker, tag, redis_client) -> None:
    """``self.retry(args=...)``: each attempt receives the arguments it was retried with."""
    from apps.semantics_app import retry_with_args

    start_worker("apps.semantics_app", concurrency=1)
    assert retry_with_args.delay(tag, 1).get(timeout=30) == 3
    assert [count(redis_client, f"{tag}:n={n}") for n in (1, 2, 3)] == [1, 1, 1]


def test_autoretry_for_retries_an_error_the_body_raises(start_worker, tag,
                                                        redis_client) -> None:
    """``autoretry_for`` with an error raised between steps: retried as Celery retries it,
    resuming after the last completed step."""
    from apps.semantics_app import body_autoretry

    start_worker("apps.semantics_app", concurrency=1)
    assert body_autoretry.delay(tag).get(timeout=30) == "shipped"
    assert count(redis_client, f"{tag}:body") == 3
    assert count(redis_client, f"{tag}:step") == 1


def test_a_revoked_run_never_runs(start_worker, tag, redis_client) -> None:
    """``revoke`` before the ETA: REVOKED, the run CANCELLED, nothing re-sends it later."""
    from apps.semantics_app import app, echo

    start_worker("apps.semantics_app", concurrency=1)
    result = echo.apply_async((tag, 1), countdown=2)
    result.revoke()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=20)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.CANCELLED, 20,
             message="the run cancelled")
    time.sleep(3)
    assert count(redis_client, f"{tag}:echo") == 0


def test_an_expired_run_never_runs(start_worker, tag, redis_client) -> None:
    """``expires=1`` and no worker until it passed: REVOKED, CANCELLED, never executed."""
    from apps.semantics_app import app, echo

    result = echo.apply_async((tag, 1), expires=1)
    time.sleep(1.5)
    start_worker("apps.semantics_app", concurrency=1)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=20)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.CANCELLED, 20,
             message="the run cancelled")
    assert count(redis_client, f"{tag}:echo") == 0


def test_revoke_with_terminate_stops_the_run_for_good(start_worker, tag,
                                                      redis_client) -> None:
    """``revoke(terminate=True)`` kills the step in flight and the run is not run again
    (the killed delivery used to be redelivered as a lost worker)."""
    from apps.semantics_app import app, slow

    start_worker("apps.semantics_app", concurrency=1)
    result = slow.delay(tag, 6.0)
    wait_for(lambda: redis_client.get(f"{tag}:slow-started"), 20, message="the nap started")
    result.revoke(terminate=True, signal="SIGKILL")
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.CANCELLED, 20,
             message="the run cancelled")
    time.sleep(4)
    assert count(redis_client, f"{tag}:nap") == 1


def test_a_call_with_the_wrong_arguments_registers_nothing(start_worker, tag) -> None:
    """``delay()`` with the wrong arity raises TypeError at the call, and no run is left."""
    from apps.semantics_app import app, echo

    run_id = f"arity-{uuid.uuid4().hex}"
    with pytest.raises(TypeError):
        echo.apply_async((tag,), task_id=run_id)
    with pytest.raises(RunNotFoundError):
        get_run(run_id, app=app)


def test_a_hard_time_limit_is_a_failed_attempt_not_a_lost_worker(start_worker, tag,
                                                                  redis_client) -> None:
    """``time_limit`` with ``max_retries=0``: one execution, then FAILED with
    TimeLimitExceeded (it ran 6 times, each kill counted as a lost worker)."""
    from apps.semantics_app import app, limited

    start_worker("apps.semantics_app", concurrency=1)
    result = limited.delay(tag)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.FAILED, 30,
             message="the run dead-lettered")
    run = get_run(result.id, app=app)
    assert run.error is not None and "TimeLimitExceeded" in run.error.type
    assert run.recoveries == 0
    time.sleep(4)  # longer than a lease: the sweeper must not bring it back
    assert count(redis_client, f"{tag}:nap") == 1


def test_a_hard_time_limit_is_retried_under_the_task_s_policy(start_worker, tag,
                                                               redis_client) -> None:
    """``time_limit`` with ``max_retries=2``: three attempts, then FAILED."""
    from apps.semantics_app import app, limited_retried

    start_worker("apps.semantics_app", concurrency=1)
    result = limited_retried.delay(tag)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.FAILED, 60,
             message="the run dead-lettered")
    assert count(redis_client, f"{tag}:nap") == 3


@pytest.mark.parametrize("which", ["plain", "durable"])
def test_replace_hands_the_run_over_to_its_replacement(start_worker, tag, redis_client,
                                                       which: str) -> None:
    """``self.replace(sig)``: the result is the replacement's (it failed with
    'Ignore: Replaced by new task' before); the replaced run is REPLACED, or gives way to a
    new durable run under the same id."""
    from apps.semantics_app import app, replaced, replaced_by_durable

    start_worker("apps.semantics_app", concurrency=1)
    task, expected = (replaced, 105) if which == "plain" else (replaced_by_durable, 1005)
    result = task.delay(tag, 5)
    assert result.get(timeout=30) == expected
    assert count(redis_client, f"{tag}:before-replace") == 1
    run = get_run(result.id, app=app)
    if which == "plain":
        assert run.status is RunStatus.REPLACED
    else:  # the durable replacement's own run now holds the id
        assert run.status is RunStatus.SUCCEEDED and run.task == "semantics.add"


def test_ignore_ends_the_run_without_a_failure(start_worker, tag, redis_client) -> None:
    """``raise Ignore()``: no FAILURE, no dead letter, not run again."""
    from apps.semantics_app import app, ignored

    start_worker("apps.semantics_app", concurrency=1)
    result = ignored.delay(tag)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.CANCELLED, 20,
             message="the run ended")
    time.sleep(4)
    assert count(redis_client, f"{tag}:before-ignore") == 1
    assert result.state != "FAILURE"


def test_reject_with_requeue_runs_the_message_again(start_worker, tag, redis_client) -> None:
    """``Reject(requeue=True)``: the broker redelivers and the run resumes after its step."""
    from apps.semantics_app import rejected_once

    start_worker("apps.semantics_app", concurrency=1)
    assert rejected_once.delay(tag).get(timeout=30) == "accepted"
    assert count(redis_client, f"{tag}:body") == 2
    assert count(redis_client, f"{tag}:before-reject") == 1


def test_a_task_id_used_again_starts_a_new_run(start_worker, tag, redis_client) -> None:
    """A second ``apply_async(task_id=same)`` after the first finished runs again with its
    own arguments, as with Celery (it was ignored for 7 days). Celery's Redis backend keeps
    the first SUCCESS (it ignores later updates of a successful task): so does this test."""
    from apps.semantics_app import app, echo

    start_worker("apps.semantics_app", concurrency=1)
    run_id = f"again-{uuid.uuid4().hex}"
    assert echo.apply_async((tag, "first"), task_id=run_id).get(timeout=20) == "first"
    echo.apply_async((tag, "second"), task_id=run_id)
    wait_for(lambda: get_run(run_id, app=app).result == "second", 20,
             message="the second run's result")
    assert get_run(run_id, app=app).args == [tag, "second"]
    assert count(redis_client, f"{tag}:echo") == 2
    assert app.backend.get_task_meta(run_id, cache=False)["result"] == "first"  # Celery's rule


def test_a_short_lease_is_renewed_on_an_idle_worker(start_worker, tag, redis_client) -> None:
    """``durable_lease_ttl=2`` on a ``-c 1`` worker that was idle: a 5 s step holds its lease
    (the heartbeat slept 10 s between runs and a step ran twice)."""
    from apps.semantics_app import app, echo, slow

    start_worker("apps.semantics_app", concurrency=1, env={"TEST_LEASE_TTL": "2"})
    assert echo.delay(tag, "warm-up").get(timeout=20) == "warm-up"  # the heartbeat goes idle
    time.sleep(1.5)
    result = slow.delay(tag, 5.0)
    assert result.get(timeout=30) == "done"
    assert count(redis_client, f"{tag}:nap") == 1
    assert get_run(result.id, app=app).recoveries == 0


def test_sys_exit_in_a_step_dead_letters_the_run_naming_the_step(start_worker, tag,
                                                                 redis_client) -> None:
    """``sys.exit(3)`` in a step's code: the process ends as asked, and the next delivery
    dead-letters the run naming the step and SystemExit, after one execution (it ran six
    times and ended as 'worker lost 6 times' with no failed step)."""
    from apps.semantics_app import app, exiting

    start_worker("apps.semantics_app", concurrency=1)
    result = exiting.delay(tag)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.FAILED, 40,
             message="the run dead-lettered")
    run = get_run(result.id, app=app)
    assert run.failed_step == "exits#0"
    assert run.error is not None and "SystemExit" in run.error.type
    assert count(redis_client, f"{tag}:exits") == 1
    assert count(redis_client, f"{tag}:before-exit") == 1


def test_a_task_returning_an_async_result_behaves_as_a_plain_one(start_worker) -> None:
    """A body that returns an ``AsyncResult``: the caller gets what a plain task's caller gets
    (it failed: the result object could not be serialized)."""
    from apps.semantics_app import plain_returns_result, returns_result

    start_worker("apps.semantics_app", concurrency=2)
    plain = plain_returns_result.delay().get(timeout=20)
    durable = returns_result.delay().get(timeout=20)
    assert type(durable) is type(plain)
    assert len(durable) == len(plain)
