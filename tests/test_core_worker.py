"""The durable core through real ``celery worker`` processes on real Redis.

Every side effect is counted from outside the worker, in Redis, by the steps
of ``tests/apps/core_app.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time

import pytest
from celery.result import AsyncResult
from harness import wait_for

from celery_durable import (
    RunStatus,
    StepStatus,
    cancel_run,
    get_run,
    list_runs,
    replay_run,
    retry_run,
)

pytestmark = pytest.mark.worker

LEASE_TTL = float(os.environ.get("TEST_LEASE_TTL", "3"))


def count(redis_client, tag: str, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(f"{tag}:{name}") or 0)


def times(redis_client, tag: str, name: str) -> list[float]:  # type: ignore[no-untyped-def]
    return [float(t) for t in redis_client.lrange(f"{tag}:{name}:times", 0, -1)]


def gaps(values: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(values)]


# -- (a) a failing step is retried; the others run once; the worker is free meanwhile ----------


def test_third_step_fails_twice_then_succeeds_and_frees_the_worker(
        start_worker, tag, redis_client) -> None:
    """Steps 1, 2, 4 run once, step 3 three times, and another run completes during the backoff."""
    from apps.core_app import app, four_steps_backoff, quick

    start_worker("apps.core_app", concurrency=1)
    result = four_steps_backoff.delay(tag, 1, 2)
    wait_for(lambda: count(redis_client, tag, "flaky") >= 1, 20, message="first attempt")
    # one pool process: the quick run can only run if the retrying run let go of it
    assert quick.delay(tag).get(timeout=20)
    assert result.get(timeout=30) == {"a": 2, "b": 3, "c": 30, "d": 31}
    assert count(redis_client, tag, "add_one") == 3
    assert count(redis_client, tag, "flaky") == 3
    attempts = times(redis_client, tag, "flaky")
    quick_at = times(redis_client, tag, "quick")[0]
    assert attempts[0] < quick_at < attempts[1], (attempts, quick_at)
    assert all(g >= 1.0 for g in gaps(attempts)), attempts  # the step's 1 s backoff
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED
    assert [(s.key, s.attempts) for s in run.steps] == [
        ("add_one#0", 1), ("add_one#1", 1), ("flaky_slow_backoff#0", 3), ("add_one#2", 1)]
    assert run.result == {"a": 2, "b": 3, "c": 30, "d": 31}
    assert AsyncResult(result.id, app=app).state == "SUCCESS"


# -- (b) crash recovery ------------------------------------------------------------------------


def test_sigkilled_worker_resumes_on_a_new_worker_within_lease_ttls(
        start_worker, tag, redis_client) -> None:
    """SIGKILL the whole worker in step 3 of 5: a new worker resumes there within ~a lease TTL."""
    from apps.core_app import app, five_with_crash_point

    assert app.conf.broker_transport_options["visibility_timeout"] == 3600
    first = start_worker("apps.core_app", concurrency=1)
    result = five_with_crash_point.delay(tag, 60)
    wait_for(lambda: count(redis_client, tag, "crash_point") == 1, 20, message="step 3 running")
    assert count(redis_client, tag, "add_one") == 2
    first.kill()
    killed_at = time.time()
    start_worker("apps.core_app", concurrency=1)
    ready_at = time.time()
    assert result.get(timeout=4 * LEASE_TTL + 10) == [1, 2, 2, 3, 4]
    assert count(redis_client, tag, "add_one") == 4  # steps 1-2 never ran again
    starts = times(redis_client, tag, "crash_point")
    assert len(starts) == 2
    resumed_after = starts[1] - killed_at
    assert starts[1] - ready_at < 2 * LEASE_TTL, (resumed_after, ready_at - killed_at)
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.recoveries == 1
    assert [s.attempts for s in run.steps] == [1, 1, 1, 1, 1]


def test_sigkilled_pool_process_is_redelivered_and_taken_over(
        start_worker, tag, redis_client) -> None:
    """SIGKILL only the pool child in step 3: the redelivery takes over from the dead holder."""
    from apps.core_app import app, five_with_crash_point

    # A lease far longer than the test: only a take-over can explain a quick resume.
    worker = start_worker("apps.core_app", concurrency=1, env={
        "TEST_LEASE_TTL": "30", "TEST_APP_CONF": json.dumps({"worker_lost_wait": 1})})
    result = five_with_crash_point.delay(tag, 60)
    wait_for(lambda: redis_client.get(f"{tag}:crash_point:pid"), 20, message="step 3 running")
    pid = int(redis_client.get(f"{tag}:crash_point:pid"))
    assert pid in worker.pool_pids()
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    assert result.get(timeout=4 * LEASE_TTL + 10) == [1, 2, 2, 3, 4]
    assert worker.proc.poll() is None  # the parent stayed up
    assert count(redis_client, tag, "add_one") == 4
    starts = times(redis_client, tag, "crash_point")
    assert len(starts) == 2
    # the dead holder is recognised at once: no need to wait for its lease to expire
    assert starts[1] - killed_at < 20, starts[1] - killed_at
    assert "is dead; taking over" in worker.log()
    assert "publishing again" not in worker.log()  # not the sweeper's doing
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.recoveries == 1


def test_heartbeat_keeps_the_lease_of_a_step_longer_than_the_ttl(
        start_worker, tag, redis_client) -> None:
    """A step running over three lease TTLs is not taken over: the heartbeat renews its lease."""
    from apps.core_app import app, outlives_its_lease

    worker = start_worker("apps.core_app", concurrency=2, env={"TEST_LEASE_TTL": "1"})
    result = outlives_its_lease.delay(tag, 3.2)
    assert result.get(timeout=30) == [result.id, "done", 1]
    assert count(redis_client, tag, "long_step") == 1
    run = get_run(result.id, app=app)
    assert run.recoveries == 0
    assert "publishing again" not in worker.log()


def test_a_paused_stale_holder_cannot_write_after_a_take_over(
        start_worker, tag, redis_client) -> None:
    """A worker frozen past its lease loses the run; when it wakes its writes are refused."""
    from apps.core_app import app, five_with_crash_point

    frozen = start_worker("apps.core_app", concurrency=1)
    result = five_with_crash_point.delay(tag, 2 * LEASE_TTL)
    wait_for(lambda: count(redis_client, tag, "crash_point") == 1, 20, message="step 3 running")
    os.killpg(frozen.pid, signal.SIGSTOP)  # heartbeat and step stop; the host is not dead
    try:
        start_worker("apps.core_app", concurrency=1)
        assert result.get(timeout=4 * LEASE_TTL + 10) == [1, 2, 2, 3, 4]
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    # the stale step finishes its sleep, its checkpoint is refused, and its delivery ends
    wait_for(lambda: f"{result.id}] ignored" in frozen.log(), 20,
             message="the stale delivery to end")
    assert "lost the lease" in frozen.log() or "lease lost" in frozen.log()
    assert count(redis_client, tag, "crash_point") == 2
    assert count(redis_client, tag, "add_one") == 4  # steps 4-5 ran once, on the new worker
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.result == [1, 2, 2, 3, 4]
    assert run.steps[2].value == 2  # the new holder's checkpoint, not the stale one
    assert AsyncResult(result.id, app=app).get(timeout=5) == [1, 2, 2, 3, 4]


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_a_finished_run_whose_result_never_reached_the_backend_is_reported(
        start_worker, tag, redis_client, outcome: str) -> None:
    """A redelivered message of a run the store has finished stores its outcome for AsyncResult."""
    from apps.core_app import app, four_steps

    from celery_durable.records import ErrorInfo
    from celery_durable.stores import get_store

    # The state a worker leaves when it dies between finishing the run in the store and
    # writing the result backend: the run is finished, the backend knows nothing.
    run_id = f"orphan-{tag}"
    store = get_store(app)
    b = store.begin(run_id, task=four_steps.name, args=json.dumps([tag, 1, 0]), kwargs="{}",
                    options={}, owner="gone:1:1", lease_ttl=30)
    if outcome == "succeeded":
        assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='{"d": 21}')
    else:
        assert store.finish(run_id, b.token, status=RunStatus.FAILED,
                            error=ErrorInfo("builtins.ValueError", "bad input", "tb"),
                            failed_step="add_one#0")
    start_worker("apps.core_app", concurrency=1)
    # the redelivery: the same message again (a new apply_async would start a new run)
    result = app.send_task(four_steps.name, args=(tag, 1, 0), task_id=run_id)
    if outcome == "succeeded":
        assert result.get(timeout=10) == {"d": 21}
    else:
        with pytest.raises(Exception, match="bad input"):
            result.get(timeout=10)
    assert count(redis_client, tag, "add_one") == 0  # nothing ran again


def test_duplicate_of_a_finished_run_without_a_result_backend_is_ignored(
        start_worker, tag, redis_client) -> None:
    """With no result backend (``durable_store`` set), a finished run's duplicate is ignored."""
    from apps.core_app import app, four_steps

    from celery_durable.stores import get_store

    run_id = f"nobackend-{tag}"
    store = get_store(app)  # the same Redis and key prefix as the worker's durable_store
    b = store.begin(run_id, task=four_steps.name, args=json.dumps([tag, 1, 0]), kwargs="{}",
                    options={}, owner="gone:1:1", lease_ttl=30)
    assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='{"d": 21}')
    worker = start_worker("apps.core_app", concurrency=1, env={"TEST_APP_CONF": json.dumps({
        "result_backend": "disabled", "durable_store": os.environ["TEST_REDIS_URL"]})})
    app.send_task(four_steps.name, args=(tag, 1, 0), task_id=run_id)  # the duplicate
    wait_for(lambda: f"{run_id}] ignored" in worker.log() or "raised unexpected" in worker.log(),
             20, message="the delivery to end")
    assert "raised unexpected" not in worker.log()
    assert count(redis_client, tag, "add_one") == 0


def test_celery_self_retry_in_a_durable_body_resumes_the_run(
        start_worker, tag, redis_client) -> None:
    """Existing code calling ``self.retry()`` re-runs the body, replaying completed steps."""
    from apps.core_app import app, retries_itself

    start_worker("apps.core_app", concurrency=1)
    result = retries_itself.delay(tag)
    assert result.get(timeout=20) == [1, 2]
    assert count(redis_client, tag, "body") == 2
    assert count(redis_client, tag, "add_one") == 2  # add_one#0 ran once, add_one#1 once
    assert get_run(result.id, app=app).status is RunStatus.SUCCEEDED


# -- (c) duplicate deliveries ------------------------------------------------------------------


def test_same_message_on_two_workers_runs_each_step_once(start_worker, tag, redis_client) -> None:
    """One task id published twice to two workers at once: each step's side effect happens once."""
    from apps.core_app import app, duplicated

    workers = [start_worker("apps.core_app", concurrency=1) for _ in range(2)]
    task_id = f"dup-{tag}"
    first = duplicated.apply_async((tag, 1.5), task_id=task_id)
    duplicated.apply_async((tag, 1.5), task_id=task_id)
    assert first.get(timeout=30) == ["slow", 2, 3]
    time.sleep(0.5)  # let the other delivery finish too
    assert count(redis_client, tag, "slow_first") == 1
    assert count(redis_client, tag, "add_one") == 2
    logs = [w.log() for w in workers]
    assert all(f"[{task_id}] received" in log for log in logs)  # both workers got a copy
    assert sum(f"run {task_id}: delivery ignored" in log for log in logs) == 1
    run = get_run(task_id, app=app)
    assert run.status is RunStatus.SUCCEEDED
    assert [s.attempts for s in run.steps] == [1, 1, 1]


# -- (d) one row per kind of error -------------------------------------------------------------


def _dead_lettered(app, run_id: str):  # type: ignore[no-untyped-def]
    run = get_run(run_id, app=app)
    assert run.status is RunStatus.FAILED
    assert run_id in [r.id for r in list_runs(status="FAILED", app=app, limit=1000)]
    assert run.error is not None and run.error.traceback
    return run


@pytest.mark.parametrize("row", ["timeout", "retry_after", "retry_after_timer", "permanent",
                                 "unknown"])
def test_error_table(start_worker, tag, redis_client, row: str) -> None:
    """Each kind of step error gets its policy: backoff, exact delay, no retry, task default."""
    from apps.core_app import app, default_task, timeout_task

    # retry_after_timer: delays over durable_max_countdown are store timers, not broker ETAs
    conf = {"durable_max_countdown": 0.5} if row == "retry_after_timer" else {}
    worker = start_worker("apps.core_app", concurrency=1,
                          env={"TEST_APP_CONF": json.dumps(conf)})
    if row == "timeout":
        # autoretry_for=(TimeoutError,), retry_backoff=True, no jitter, max_retries=2
        result = timeout_task.delay(tag, 99)
        with pytest.raises(Exception, match="upstream timed out"):
            result.get(timeout=30)
        attempts = times(redis_client, tag, "attempt")
        assert len(attempts) == 3
        first, second = gaps(attempts)
        assert 1.0 <= first < 1.9, attempts
        assert 2.0 <= second < 3.0, attempts
        run = _dead_lettered(app, result.id)
        assert run.steps[0].attempts == 3 and run.steps[0].status is StepStatus.FAILED
        assert "TimeoutError" in run.error.traceback
    elif row in ("retry_after", "retry_after_timer"):
        result = default_task.delay(tag, "retry_after", 1)
        assert result.get(timeout=30) == "ok after 2"
        (gap,) = gaps(times(redis_client, tag, "attempt"))
        assert 2.0 <= gap < 3.5, gap
        assert get_run(result.id, app=app).steps[0].attempts == 2
        assert ("publishing again" in worker.log()) == (row == "retry_after_timer")
    elif row == "permanent":
        result = default_task.delay(tag, "permanent", 99)
        with pytest.raises(Exception, match="invalid credentials"):
            result.get(timeout=30)
        assert result.state == "FAILURE"
        run = _dead_lettered(app, result.id)
        assert run.failed_step == "call_api#0"
        assert run.steps[0].attempts == 1 and run.steps[0].status is StepStatus.FAILED
        assert run.steps[0].error.type.endswith("PermanentError")
        assert "invalid credentials" in run.error.traceback
        time.sleep(1.5)  # a wrongly scheduled retry would show up by now
        assert count(redis_client, tag, "attempt") == 1
    else:
        result = default_task.delay(tag, "unknown", 99)
        with pytest.raises(Exception, match="something odd"):
            result.get(timeout=30)
        assert count(redis_client, tag, "attempt") == 3  # durable_default_max_attempts
        run = _dead_lettered(app, result.id)
        assert run.steps[0].error.type.endswith("UnknownError")


# -- (e) determinism and serialization ---------------------------------------------------------


def test_reordered_steps_under_an_in_flight_run_fail_the_run(
        start_worker, tag, redis_client) -> None:
    """Swapping two steps between attempts raises NonDeterministicStepError naming both."""
    from apps.core_app import app, reorderable

    start_worker("apps.core_app", concurrency=1)
    result = reorderable.delay(tag)
    wait_for(lambda: count(redis_client, tag, "fails_once") == 1, 20, message="first attempt")
    redis_client.set(f"{tag}:swap", "1")  # "deploy" the new code before the retry
    with pytest.raises(Exception) as info:
        result.get(timeout=30)
    assert type(info.value).__name__ == "NonDeterministicStepError"
    message = str(info.value)
    assert "step_a#0" in message and "step_b#0" in message
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error.type.endswith("NonDeterministicStepError")
    assert count(redis_client, tag, "step_a") == 1 and count(redis_client, tag, "step_b") == 1
    assert count(redis_client, tag, "fails_once") == 1


def test_now_uuid4_random_are_the_same_on_replay(start_worker, tag, redis_client) -> None:
    """``now()``, ``uuid4()`` and ``random()`` give the body the same values after a retry."""
    from apps.core_app import uses_deterministic_helpers

    start_worker("apps.core_app", concurrency=1)
    result = uses_deterministic_helpers.delay(tag)
    final = result.get(timeout=20)
    seen = [json.loads(s) for s in redis_client.lrange(f"{tag}:seen", 0, -1)]
    assert len(seen) == 2  # first execution and the replay after the failed step
    assert seen[0] == seen[1] == final
    assert seen[0][1] == "datetime" and seen[0][3] == "UUID"
    assert seen[0][0].endswith("+00:00")  # timezone-aware UTC


def test_non_serializable_step_result_fails_at_once(start_worker, tag, redis_client) -> None:
    """A step returning a non-serializable value fails the run at once, naming run, step, type."""
    from apps.core_app import app, unserializable

    start_worker("apps.core_app", concurrency=1)
    result = unserializable.delay(tag)
    with pytest.raises(Exception) as info:
        result.get(timeout=30)
    message = str(info.value)
    assert result.id in message and "returns_opaque#0" in message and "Opaque" in message
    time.sleep(1.5)
    assert count(redis_client, tag, "returns_opaque") == 1
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.FAILED
    assert run.failed_step == "returns_opaque#0"
    assert run.error is not None and "SerializationError" in run.error.type + run.error.message


# -- (f) retry_run -----------------------------------------------------------------------------


def _fail_gated(redis_client, tag: str, x: int):  # type: ignore[no-untyped-def]
    from apps.core_app import gated

    result = gated.delay(tag, x)
    with pytest.raises(Exception, match="gate closed"):
        result.get(timeout=30)
    assert (count(redis_client, tag, "add_one"), count(redis_client, tag, "gate")) == (1, 1)
    redis_client.set(f"{tag}:open", "1")
    return result


def test_retry_run_resumes_a_dead_lettered_run_from_the_failed_step(
        start_worker, tag, redis_client) -> None:
    """``retry_run`` re-runs the failed step and what follows, never the completed steps."""
    from apps.core_app import app

    start_worker("apps.core_app", concurrency=1)
    result = _fail_gated(redis_client, tag, 5)
    again = retry_run(result.id, app=app)
    assert again.id == result.id
    assert again.get(timeout=30) == 7
    assert AsyncResult(result.id, app=app).get(timeout=5) == 7
    assert (count(redis_client, tag, "add_one"), count(redis_client, tag, "gate")) == (2, 2)
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.error is None
    assert [s.key for s in run.steps] == ["add_one#0", "gate#0", "add_one#1"]


def test_retry_run_from_start_reruns_every_step(start_worker, tag, redis_client) -> None:
    """``retry_run(from_step="start")`` runs every step again."""
    from apps.core_app import app

    start_worker("apps.core_app", concurrency=1)
    result = _fail_gated(redis_client, tag, 5)
    assert retry_run(result.id, from_step="start", app=app).get(timeout=30) == 7
    assert (count(redis_client, tag, "add_one"), count(redis_client, tag, "gate")) == (3, 2)


def test_retry_with_edited_arguments_is_a_new_run_that_uses_them(
        start_worker, tag, redis_client) -> None:
    """Edited arguments start a new run (from scratch): the original stays as the record,
    linked both ways, and no step of the new run replays a value computed from the old
    arguments. Old main re-ran the same run, keeping its checkpoints."""
    from apps.core_app import app, validated

    start_worker("apps.core_app", concurrency=1)
    result = validated.delay(tag, 0)
    with pytest.raises(Exception, match="x must be positive"):
        result.get(timeout=30)
    again = retry_run(result.id, args=[tag, 5], app=app)
    assert again.id != result.id
    assert again.get(timeout=30) == 1 + 5
    assert count(redis_client, tag, "add_one") == 2  # run again with the new arguments
    assert count(redis_client, tag, "must_be_positive") == 2
    original, replay = get_run(result.id, app=app), get_run(again.id, app=app)
    assert (original.status, original.args) == (RunStatus.FAILED, [tag, 0])
    assert original.replayed_as == [again.id]
    assert (replay.replay_of, replay.args, replay.status) == (result.id, [tag, 5],
                                                              RunStatus.SUCCEEDED)


def test_a_replay_from_a_step_keeps_only_the_steps_before_it(start_worker, tag,
                                                             redis_client) -> None:
    """``from_step`` names where the replay starts: the successes before it keep their values."""
    from apps.core_app import app, validated

    start_worker("apps.core_app", concurrency=1)
    result = validated.delay(tag, -1)
    with pytest.raises(Exception, match="x must be positive"):
        result.get(timeout=30)
    original = get_run(result.id, app=app)
    assert [s.key for s in original.steps] == ["add_one#0", "must_be_positive#0"]
    with pytest.raises(ValueError, match="no step 'nope#0'"):
        replay_run(result.id, args=[tag, 3], from_step="nope#0", app=app)
    again = replay_run(result.id, args=[tag, 3], from_step="must_be_positive#0", app=app)
    assert again.get(timeout=30) == 1 + 3
    assert count(redis_client, tag, "add_one") == 1  # kept from the original
    assert [s.key for s in get_run(again.id, app=app).steps] == ["add_one#0",
                                                                "must_be_positive#0"]


def test_edited_arguments_are_bound_to_the_task_signature_first() -> None:
    """Arguments that do not fit the task are refused before any run is created (old main
    accepted ``{"bogus": 1}`` and the run died with TypeError)."""
    from apps.core_app import app, validated

    run_id = validated.apply_async(("t", 0), countdown=3600).id  # never delivered here
    before = len(list_runs(task=validated.name, limit=1000, app=app))
    with pytest.raises(TypeError, match="bogus"):
        retry_run(run_id, args=["t", 1], kwargs={"bogus": 1}, app=app)
    with pytest.raises(TypeError, match="missing a required argument"):
        replay_run(run_id, args=["t"], app=app)
    assert len(list_runs(task=validated.name, limit=1000, app=app)) == before
    cancel_run(run_id, app=app)


def test_a_stale_message_of_the_original_does_not_run_after_a_replay(
        start_worker, tag, redis_client) -> None:
    """A late redelivery of the replayed (failed) run is ignored; the replay runs once."""
    from apps.core_app import app, validated

    worker = start_worker("apps.core_app", concurrency=1)
    result = validated.delay(tag, 0)
    with pytest.raises(Exception, match="x must be positive"):
        result.get(timeout=30)
    worker.stop()
    app.send_task(validated.name, args=(tag, 0), task_id=result.id)  # a late redelivery
    again = retry_run(result.id, args=[tag, 5], app=app)
    start_worker("apps.core_app", concurrency=1)
    assert AsyncResult(again.id, app=app).get(timeout=30) == 1 + 5
    time.sleep(1)
    assert count(redis_client, tag, "must_be_positive") == 2  # the original once, the replay
    assert get_run(result.id, app=app).status is RunStatus.FAILED


# -- (g) the recovery cap ----------------------------------------------------------------------


def test_a_step_that_kills_its_worker_every_time_is_dead_lettered(
        start_worker, tag, redis_client) -> None:
    """A poison run stops after ``durable_max_recoveries`` take-overs: FAILED, WorkerLostError."""
    from apps.core_app import app, poison

    start_worker("apps.core_app", concurrency=1, env={
        "TEST_APP_CONF": json.dumps({"durable_max_recoveries": 1, "worker_lost_wait": 1})})
    result = poison.delay(tag)
    with pytest.raises(Exception) as info:
        result.get(timeout=60)
    assert "WorkerLostError" in type(info.value).__name__ + repr(info.value)
    assert count(redis_client, tag, "kill_own_process") == 2  # first try + 1 recovery
    assert count(redis_client, tag, "add_one") == 1
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error.type.endswith("WorkerLostError")
    assert "durable_max_recoveries=1" in run.error.message
    time.sleep(LEASE_TTL + 1)  # no further deliveries, no sweeper loop
    assert count(redis_client, tag, "kill_own_process") == 2


def test_sweeper_dead_letters_a_run_whose_host_keeps_dying(
        start_worker, tag, redis_client) -> None:
    """Past the recovery cap the sweeper dead-letters the run and AsyncResult.get() raises."""
    from apps.core_app import app, kills_host

    conf = {"TEST_APP_CONF": json.dumps({"durable_max_recoveries": 0})}
    first = start_worker("apps.core_app", concurrency=1, env=conf)
    result = kills_host.delay(tag)
    wait_for(lambda: first.proc.poll() is not None, 20, message="the worker to die")
    start_worker("apps.core_app", concurrency=1, env=conf)
    with pytest.raises(Exception) as info:
        result.get(timeout=4 * LEASE_TTL + 10)
    assert type(info.value).__name__ == "WorkerLostError"
    assert count(redis_client, tag, "kill_whole_worker") == 1  # never run again
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.FAILED and run.recoveries == 1
    assert run.error is not None and run.error.type.endswith("WorkerLostError")


# -- (h) what is stored where ------------------------------------------------------------------


def test_store_keeps_out_of_celery_meta_and_unfinished_runs_never_expire(
        start_worker, tag, redis_client) -> None:
    """Checkpoints live only under the durable prefix, without a TTL until the run finishes."""
    from apps.core_app import holds_open

    start_worker("apps.core_app", concurrency=1, env={
        "TEST_APP_CONF": json.dumps({"result_expires": 1})})
    result = holds_open.delay(tag)
    wait_for(lambda: count(redis_client, tag, "park_here") == 1, 20, message="step 2 running")
    prefix = os.environ["TEST_PREFIX"]
    run_key = f"{prefix}run:{{{result.id}}}"
    keys = {k.decode() for k in redis_client.scan_iter(match=f"*{result.id}*", count=1000)}
    assert run_key in keys
    assert redis_client.ttl(run_key) == -1  # no expiry while unfinished
    assert redis_client.hget(run_key, "v:0") == b"42"  # the checkpoint is in the run's hash
    assert not any(k.startswith("celery-task-meta-") for k in keys), keys
    time.sleep(1.5)  # longer than result_expires
    assert redis_client.ttl(run_key) == -1
    redis_client.set(f"{tag}:go", "1")
    assert result.get(timeout=30) == [42, "released"]
    meta = redis_client.get(f"celery-task-meta-{result.id}")
    assert meta is not None and json.loads(meta)["status"] == "SUCCESS"
    assert set(json.loads(meta)) >= {"status", "result", "task_id"}  # Celery's own record
    assert redis_client.hget(run_key, "status") == b"SUCCEEDED"
    assert 0 < redis_client.ttl(run_key) <= 7 * 24 * 3600  # finished: kept for the retention


# -- (i) an unreachable store ------------------------------------------------------------------


def test_worker_with_an_unreachable_store_fails_at_start(start_worker) -> None:
    """A worker whose ``durable_store`` cannot be reached exits at start with a clear error."""
    worker = start_worker("apps.core_app", concurrency=1, wait=False, env={
        "TEST_APP_CONF": json.dumps({"durable_store": "redis://127.0.0.1:1/0"})})
    wait_for(lambda: worker.proc.poll() is not None, 30, message="the worker to exit")
    assert worker.proc.returncode != 0
    log = worker.log()
    assert "StoreUnavailableError" in log
    assert "127.0.0.1:1" in log or "unreachable" in log
    assert " ready." not in log


def test_shared_task_only_app_runs_durably_with_the_worker_step(
        start_worker, tag, redis_client) -> None:
    """An app with only bare ``@durable_task`` tasks gets the store check and runs them durably."""
    from apps.shared_app import app, shared_double

    broken = start_worker("apps.shared_app", concurrency=1, wait=False, env={
        "TEST_APP_CONF": json.dumps({"durable_store": "redis://127.0.0.1:1/0"})})
    wait_for(lambda: broken.proc.poll() is not None, 30, message="the misconfigured worker")
    assert "StoreUnavailableError" in broken.log()
    start_worker("apps.shared_app", concurrency=1)
    result = shared_double.delay(tag, 4)
    assert result.get(timeout=20) == 16
    assert count(redis_client, tag, "shared_step") == 2
    run = get_run(result.id, app=app)
    assert [s.key for s in run.steps] == ["shared_step#0", "shared_step#1"]
