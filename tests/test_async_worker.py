"""``async def`` durable tasks through real ``celery worker`` processes (prefork pool) on
real Redis, the Redis store. Every execution is counted from outside the worker, in Redis,
by the steps of ``tests/apps/async_app.py``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import wait_for

from celery_durable import RunStatus, StepStatus, cancel_run, get_run, send_event, testing

pytestmark = pytest.mark.worker

LEASE_TTL = float(os.environ.get("TEST_LEASE_TTL", "3"))
TESTS = Path(__file__).resolve().parent


def count(redis_client, tag: str, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(f"{tag}:{name}") or 0)


def test_sequential_and_gathered_async_steps(start_worker, tag, redis_client) -> None:
    """An async body: one awaited step, three gathered steps that can only finish if they
    execute at once, a sync step; each runs once and the result is right."""
    from apps.async_app import app, fan_out

    start_worker("apps.async_app", concurrency=1)
    result = fan_out.delay(tag)
    assert result.get(timeout=60) == {"n": 42, "joined": "a:True,b:True,c:True"}
    for name in ("double", "a", "b", "c", "join"):
        assert count(redis_client, tag, name) == 1, name
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED
    assert [(s.position, s.key, s.status) for s in run.steps] == [
        (0, "double#0", StepStatus.SUCCEEDED), (1, "meet#0@0", StepStatus.SUCCEEDED),
        (2, "meet#0@1", StepStatus.SUCCEEDED), (3, "meet#0@2", StepStatus.SUCCEEDED),
        (4, "join#0", StepStatus.SUCCEEDED)]
    assert [s.value for s in run.steps[1:4]] == ["a:True", "b:True", "c:True"]


def test_a_gathered_step_fails_twice_then_succeeds(start_worker, tag, redis_client) -> None:
    """The failing step alone is retried (three attempts); its siblings run once."""
    from apps.async_app import app, retry_in_gather

    start_worker("apps.async_app", concurrency=1)
    result = retry_in_gather.delay(tag)
    assert result.get(timeout=60) == [2, "flaky", "quick"]
    assert (count(redis_client, tag, "double"), count(redis_client, tag, "flaky"),
            count(redis_client, tag, "quick")) == (1, 3, 1)
    run = get_run(result.id, app=app)
    assert [(s.key, s.attempts) for s in run.steps] == [
        ("double#0@0", 1), ("flaky#0@1", 3), ("quick#0@2", 1)]


def test_sigkill_while_gathered_steps_are_in_flight(start_worker, tag, redis_client) -> None:
    """SIGKILL the worker while two of three gathered steps are executing and the third is
    checkpointed: the next worker runs only the two again, never the finished one."""
    from apps.async_app import app, crash_in_gather

    first = start_worker("apps.async_app", concurrency=1)
    result = crash_in_gather.delay(tag)

    def in_flight() -> bool:
        if count(redis_client, tag, "slow_a") != 1 or count(redis_client, tag, "slow_b") != 1:
            return False
        steps = get_run(result.id, app=app).steps
        return [(s.key, s.status) for s in steps] == [("quick#0@0", StepStatus.SUCCEEDED)]

    wait_for(in_flight, 30, message="quick checkpointed, slow_a and slow_b executing")
    first.kill()
    redis_client.set(f"{tag}:release", 1)
    start_worker("apps.async_app", concurrency=1)
    assert result.get(timeout=4 * LEASE_TTL + 30) == ["quick", "slow_a", "slow_b"]
    assert count(redis_client, tag, "quick") == 1  # checkpointed before the kill: never again
    assert count(redis_client, tag, "slow_a") == 2
    assert count(redis_client, tag, "slow_b") == 2
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED and run.recoveries == 1
    assert [(s.position, s.key) for s in run.steps] == [
        (0, "quick#0@0"), (1, "blocked#0@1"), (2, "blocked#0@2")]


@pytest.mark.parametrize("pool", ["threads", "solo", "gevent", "eventlet"])
def test_gathered_async_steps_on_other_pools(start_worker, tag, redis_client, pool) -> None:
    """Two runs sent at once to a worker of two threads or greenlets (gevent, eventlet: the
    second async body waits for the first's turn instead of failing with "asyncio.run()
    cannot be called from a running event loop"), and to a solo worker: the gathered steps
    execute at once, each once."""
    from apps.async_app import fan_out

    start_worker("apps.async_app", concurrency=1 if pool == "solo" else 2, pool=pool)
    results = [fan_out.delay(f"{tag}-{i}") for i in range(2)]
    for i, result in enumerate(results):
        assert result.get(timeout=60) == {"n": 42, "joined": "a:True,b:True,c:True"}
        for name in ("double", "a", "b", "c", "join"):
            assert count(redis_client, f"{tag}-{i}", name) == 1, name


def test_a_durable_sleep_in_an_async_body(start_worker, tag, redis_client) -> None:
    """sleep() in an async body, called and awaited (``await sleep(...)``), parks the run
    (SLEEPING) each time; it resumes after each sleep and the step before does not run
    again."""
    from apps.async_app import app, sleeper

    start_worker("apps.async_app", concurrency=1)
    result = sleeper.delay(tag)
    assert result.get(timeout=60) == [2, 4]
    assert count(redis_client, tag, "double") == 2
    run = get_run(result.id, app=app)
    assert [s.key for s in run.steps] == ["double#0", "sleep#0", "sleep#1", "double#1"]


def test_wait_for_event_in_an_async_body(start_worker, tag, redis_client) -> None:
    """``await wait_for_event()`` in an async body: the run waits (WAITING) and resumes
    with the payload; the step before the wait ran once, the gathered ones after it once each."""
    from apps.async_app import app, approval

    start_worker("apps.async_app", concurrency=1)
    event = f"approved-{tag}"
    result = approval.delay(tag, event)
    wait_for(lambda: get_run(result.id, app=app).status is RunStatus.WAITING, 30,
             message="the run to wait")
    assert send_event(event, tag, {"by": "ann"}, app=app) == 1
    assert result.get(timeout=60) == [2, {"by": "ann"}, 4, 6]
    assert count(redis_client, tag, "double") == 3


def test_cancel_during_a_gather(start_worker, tag, redis_client) -> None:
    """cancel_run while two gathered steps execute: the run ends CANCELLED, their results
    are not checkpointed and nothing runs again."""
    from apps.async_app import app, crash_in_gather

    worker = start_worker("apps.async_app", concurrency=1)
    result = crash_in_gather.delay(tag)
    wait_for(lambda: count(redis_client, tag, "slow_a") == count(redis_client, tag, "slow_b")
             == 1, 30, message="slow_a and slow_b executing")
    cancel_run(result.id, app=app)
    redis_client.set(f"{tag}:release", 1)
    wait_for(lambda: f"run {result.id}: cancelled; stopping" in worker.log(), 30,
             message="the delivery to stop")
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.CANCELLED
    assert [(s.key, s.status) for s in run.steps] == [("quick#0@0", StepStatus.SUCCEEDED)]
    assert [count(redis_client, tag, n) for n in ("quick", "slow_a", "slow_b")] == [1, 1, 1]


@pytest.fixture
def crash_worker(tmp_path: Path) -> Iterator[testing.DurableTestWorker]:
    """A crash-ready worker (celery_durable.testing) for ``apps.async_app``."""
    w = testing.start_worker("apps.async_app", queues=[os.environ["TEST_QUEUE"]],
                             concurrency=1, cwd=TESTS, crash_dir=tmp_path / "crash")
    yield w
    w.stop()


def test_assert_resumable_on_an_async_task(crash_worker) -> None:
    """assert_resumable crashes an async run after each of its five checkpoints (one before
    a gather, four in its two branches of two steps); every crashed run resumes to the
    same result and the step checkpointed before the gather never runs again."""
    from apps.async_app import resumable

    report = testing.assert_resumable(resumable, 5)
    assert report.result == [10, 22, 24]
    assert report.steps[0] == "twice#0"
    assert sorted(report.steps[1:]) == ["plus#0@0", "plus#0@1", "twice#0@0", "twice#0@1"]
    assert report.boundaries == 5 and len(report.crashed_runs) == 5
    for run_id in report.crashed_runs:
        assert crash_worker.executions(run_id)["twice#0"] == 1


def test_checkpoints_of_steps_finishing_together_are_written_in_one_call(redis_client) -> None:
    """Four gathered steps released at the same moment: their four checkpoints reach the
    Redis store in one ``save_steps`` call (one pipelined round trip), not four writes;
    a step finishing alone is written by itself. (In process, ``apply``, on real Redis: the
    store is a RedisStore that notes each write call before making it.)"""
    import asyncio

    from celery import Celery

    from celery_durable import durable_task, step
    from celery_durable.stores.redis import RedisStore

    calls: list[tuple[str, int]] = []

    class NotingStore(RedisStore):
        def save_step(self, run_id, token, record):  # type: ignore[no-untyped-def]
            calls.append(("save_step", record.position))
            return super().save_step(run_id, token, record)

        def save_steps(self, run_id, token, records):  # type: ignore[no-untyped-def]
            calls.append(("save_steps", len(records)))
            return super().save_steps(run_id, token, records)

    prefix = f"{os.environ['TEST_PREFIX']}batch-{uuid.uuid4().hex[:8]}:"
    app = Celery("batch", broker="memory://", set_as_current=False)
    app.conf.durable_store = NotingStore(redis_client, prefix=prefix)
    release = asyncio.Event()
    started: list[int] = []

    @step
    async def tool(i: int) -> int:
        started.append(i)
        if len(started) == 4:
            release.set()
        await release.wait()
        return i * 10

    @step
    async def alone() -> str:
        return "done"

    @durable_task(app=app, name="async.batch")
    async def main() -> list[object]:
        found = await asyncio.gather(*(tool(i) for i in range(4)))
        return [*found, await alone()]

    assert main.apply().get() == [0, 10, 20, 30, "done"]
    assert calls == [("save_steps", 4), ("save_step", 4)]


def test_the_soft_time_limit_fails_the_steps_in_flight(start_worker, tag, redis_client) -> None:
    """Celery's soft time limit fires while a gathered step awaits (the event loop is in its
    select()): that step's attempt fails with SoftTimeLimitExceeded and is retried under its
    policy, as a sync step interrupted by the limit is; its finished sibling never runs
    again and the run succeeds."""
    from apps.async_app import app, soft_limited

    start_worker("apps.async_app", concurrency=1)
    result = soft_limited.delay(tag)
    assert result.get(timeout=60) == ["quick", "slow_once"]
    assert (count(redis_client, tag, "quick"), count(redis_client, tag, "slow_once")) == (1, 2)
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.SUCCEEDED
    slow = next(s for s in run.steps if s.name.endswith("slow_once"))
    assert slow.attempts == 2
    assert [(a.number, a.error.type if a.error else None) for a in slow.failures] == [
        (1, "billiard.exceptions.SoftTimeLimitExceeded")]
