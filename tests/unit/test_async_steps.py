"""``async def`` durable tasks and steps in process: eager mode on the MemoryStore.

Concurrency is shown by steps that can only finish together (each waits until all
have started), never by timing them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable

import pytest
from celery import Celery

from celery_durable import (
    DurableError,
    NonDeterministicStepError,
    StepFailedError,
    StepStatus,
    durable_task,
    get_run,
    step,
)


@pytest.fixture
def app(eager_app: Celery) -> Celery:
    return eager_app


def test_sequential_and_gathered_async_steps(app: Celery) -> None:
    """Sequential and gathered async steps (and a sync one) each run once; the values go to
    their awaiters; positions follow the order the coroutines started, and the gathered
    steps' keys name their branch (the n-th task the body created)."""
    runs: Counter[str] = Counter()
    started: list[str] = []
    everyone = asyncio.Event()

    @step
    async def fetch(name: str) -> str:
        runs[name] += 1
        started.append(name)
        if len(started) == 4:  # the first one plus the three gathered ones
            everyone.set()
        if name != "first":
            await asyncio.wait_for(everyone.wait(), 10)  # only if all three run at once
        await asyncio.sleep(0.01 if name == "a" else 0)  # "a" finishes last
        return name.upper()

    @step
    def total(parts: list[str]) -> str:
        runs["total"] += 1
        return "+".join(parts)

    @durable_task(app=app, name="async.main")
    async def main() -> str:
        first = await fetch("first")
        a, b, c = await asyncio.gather(fetch("a"), fetch("b"), fetch("c"))
        return total([first, a, b, c])

    result = main.delay()
    assert result.get() == "FIRST+A+B+C"
    assert runs == {"first": 1, "a": 1, "b": 1, "c": 1, "total": 1}
    run = get_run(result.id, app=app)
    assert [(s.position, s.key, s.value) for s in run.steps] == [
        (0, "fetch#0", "FIRST"), (1, "fetch#0@0", "A"), (2, "fetch#0@1", "B"),
        (3, "fetch#0@2", "C"), (4, "total#0", "FIRST+A+B+C")]


def test_max_parallel_steps_bounds_the_steps_executing_at_once(app: Celery) -> None:
    """With max_parallel_steps=2, at most two of six gathered steps execute at a time."""
    now = peak = 0

    @step
    async def work(i: int) -> int:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        for _ in range(3):
            await asyncio.sleep(0)  # let the others start if they may
        now -= 1
        return i * i

    @durable_task(app=app, name="async.bounded", max_parallel_steps=2)
    async def bounded() -> list[int]:
        return list(await asyncio.gather(*(work(i) for i in range(6))))

    assert bounded.delay().get() == [0, 1, 4, 9, 16, 25]
    assert peak == 2


def test_max_parallel_steps_must_be_positive(app: Celery) -> None:
    with pytest.raises(ValueError, match="max_parallel_steps"):
        durable_task(app=app, name="async.bad_bound", max_parallel_steps=0)


def test_max_parallel_steps_on_a_sync_body_is_refused(app: Celery) -> None:
    with pytest.raises(ValueError, match="plain is a plain function"):
        @durable_task(app=app, name="async.sync_bound", max_parallel_steps=4)
        def plain() -> None:
            pass


def test_a_gathered_step_retried_alone(app: Celery) -> None:
    """A gathered step fails twice then succeeds: its siblings run once, their checkpoints
    are kept across the retries, and each awaiter gets its own value."""
    runs: Counter[str] = Counter()

    @step(max_attempts=3, backoff=0)
    async def call(name: str) -> str:
        runs[name] += 1
        await asyncio.sleep(0)
        if name == "flaky" and runs[name] <= 2:
            raise ConnectionError("flaky")
        return name

    @durable_task(app=app, name="async.retry")
    async def retried() -> list[str]:
        return list(await asyncio.gather(call("one"), call("flaky"), call("two")))

    result = retried.delay()
    assert result.get() == ["one", "flaky", "two"]
    assert runs == {"one": 1, "flaky": 3, "two": 1}
    run = get_run(result.id, app=app)
    assert [(s.key, s.attempts) for s in run.steps] == [
        ("call#0@0", 1), ("call#0@1", 3), ("call#0@2", 1)]


def test_a_sibling_in_flight_keeps_its_checkpoint_when_a_step_fails(app: Celery) -> None:
    """A step fails for good while a sibling is still executing: the sibling finishes and
    its checkpoint is written before the failure ends the run."""
    release = asyncio.Event()

    @step
    async def slow() -> str:
        await asyncio.wait_for(release.wait(), 10)
        for _ in range(5):  # still executing well after broken() raised
            await asyncio.sleep(0)
        return "done"

    @step(max_attempts=1)
    async def broken() -> str:
        release.set()
        raise ValueError("broken for good")

    @durable_task(app=app, name="async.fails")
    async def fails() -> object:
        return await asyncio.gather(slow(), broken())

    result = fails.apply()
    with pytest.raises(StepFailedError, match="broken for good"):
        result.get()
    run = get_run(result.id, app=app)
    assert [(s.key, s.status, s.value) for s in run.steps] == [
        ("slow#0@0", StepStatus.SUCCEEDED, "done"), ("broken#0@1", StepStatus.FAILED, None)]


def test_step_context_in_an_async_step(app: Celery) -> None:
    """step.context() inside an async step: its key, position and idempotency key."""
    @step
    async def which() -> list[object]:
        ctx = step.context()
        return [ctx.key, ctx.position, ctx.idempotency_key]

    @durable_task(app=app, name="async.context")
    async def context() -> object:
        return await asyncio.gather(which(), which())

    result = context.delay()
    assert result.get() == [["which#0@0", 0, f"{result.id}:which#0@0"],
                            ["which#0@1", 1, f"{result.id}:which#0@1"]]


def test_an_async_step_from_a_sync_body_is_an_error_at_the_call(app: Celery) -> None:
    """Calling an async step from a plain body raises DurableError naming the step."""
    @step
    async def lookup() -> int:
        return 1

    @durable_task(app=app, name="async.from_sync")
    def plain() -> object:
        return lookup()

    with pytest.raises(DurableError, match=r"step lookup is async def"):
        plain.delay().get()


def test_a_sync_step_returning_a_coroutine_fails_naming_it(app: Celery) -> None:
    """A forgotten await in a sync step fails the step for good, naming it (no retry)."""
    calls = 0

    async def fetch() -> int:
        return 1

    @step(max_attempts=5, backoff=0)
    def forgot() -> object:
        nonlocal calls
        calls += 1
        return fetch()  # the await is missing

    @durable_task(app=app, name="async.forgot")
    async def body() -> object:
        return forgot()

    result = body.apply()
    with pytest.raises(StepFailedError,
                       match=r"step forgot#0 returned the coroutine \S*fetch\(\) instead"):
        result.get()
    assert calls == 1
    [record] = get_run(result.id, app=app).steps
    assert record.status is StepStatus.FAILED and record.error is not None
    assert record.error.type.endswith("PermanentError")


def test_a_cancelled_error_inside_a_step_is_its_failure(app: Celery) -> None:
    """A CancelledError the step's own code raises fails the step, with that cause."""
    @step(max_attempts=1)
    async def cancelled_inside() -> None:
        raise asyncio.CancelledError()

    @durable_task(app=app, name="async.cancelled")
    async def body() -> object:
        return await cancelled_inside()

    result = body.apply()
    with pytest.raises(StepFailedError, match="CancelledError"):
        result.get()
    [record] = get_run(result.id, app=app).steps
    assert record.status is StepStatus.FAILED and record.error is not None
    assert record.error.type == "asyncio.exceptions.CancelledError"


def test_outside_a_run_an_async_step_is_a_plain_coroutine() -> None:
    @step
    async def double(x: int) -> int:
        return 2 * x

    assert asyncio.run(double(21)) == 42


def test_atomic_async_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="atomic=True"):
        @step(atomic=True)
        async def transfer() -> None:
            pass


def test_a_gather_started_in_another_order_on_replay_is_caught(app: Celery) -> None:
    """The retry delivery starts the gathered steps in another order: NonDeterministicStepError
    naming what was recorded and what the code calls now (nothing runs on top of it)."""
    deliveries = 0

    @step
    async def a() -> str:
        return "a"

    @step(max_attempts=2, backoff=0)
    async def b() -> str:
        if deliveries == 1:
            raise ConnectionError("once")
        return "b"

    @durable_task(app=app, name="async.reordered")
    async def reordered() -> object:
        nonlocal deliveries
        deliveries += 1
        if deliveries == 1:
            return await asyncio.gather(a(), b())
        return await asyncio.gather(b(), a())  # as if timing decided the order

    with pytest.raises(NonDeterministicStepError) as caught:
        reordered.apply().get()
    assert ("at position 0 (in the branch 0 of the async body) the run recorded step "
            "'a#0@0' but the code now calls 'b#0@0'") in str(caught.value)
    assert caught.value.recorded_steps == ["a#0@0"]
    assert caught.value.current_steps == ["b#0@0"]


def test_a_step_cancelled_by_the_body_records_nothing(app: Celery) -> None:
    """The body cancels a step's task (it stopped waiting for it): no failure is recorded for
    it, the run goes on and succeeds."""
    @step
    async def forever() -> None:
        await asyncio.Event().wait()

    @step
    async def after() -> str:
        return "after"

    @durable_task(app=app, name="async.cancel_by_body")
    async def body() -> str:
        task = asyncio.ensure_future(forever())
        for _ in range(3):
            await asyncio.sleep(0)  # it has started
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return await after()

    result = body.apply()
    assert result.get() == "after"
    assert [(s.key, s.status) for s in get_run(result.id, app=app).steps] == [
        ("after#0", StepStatus.SUCCEEDED)]


def test_eager_apply_from_inside_a_running_event_loop(app: Celery) -> None:
    """task.apply() called from async code (a loop runs in the thread already) still runs the
    body, in a loop of its own."""
    @step
    async def inc(x: int) -> int:
        return x + 1

    @durable_task(app=app, name="async.from_a_loop")
    async def body(x: int) -> int:
        return await inc(await inc(x))

    async def caller() -> object:
        return body.apply(args=(1,)).get()

    assert asyncio.run(caller()) == 3


def test_durable_waits_may_be_awaited_or_called_in_an_async_body(app: Celery) -> None:
    """In an async body ``await sleep(...)`` and ``sleep(...)`` both work (eager: the sleep
    returns at once), and so do ``wait_for_event`` (an event sent before: its payload) and
    a child ``call``; a sync body's waits are unchanged."""
    from celery_durable import call, send_event, sleep, wait_for_event

    @durable_task(app=app, name="async.child")
    def child(x: int) -> int:
        return x * 2

    @durable_task(app=app, name="async.waits")
    async def waits(key: str) -> list[object]:
        slept = await sleep(0.01)
        sleep(0.01)
        payload = await wait_for_event("ready", key=key, timeout=0)
        doubled = await call(child, 21)
        also = call(child, 1)
        return [slept, payload, doubled, also]

    send_event("ready", key="k1", payload={"ok": True}, app=app)
    assert waits.apply(args=("k1",)).get() == [None, {"ok": True}, 42, 2]


def test_the_awaited_check_reads_the_call_site() -> None:
    """``awaited`` tells an awaited call from a plain one, in expressions too."""
    import sys

    from celery_durable.engine.awaiting import Ready, awaited

    def probe(value: object) -> object:
        return Ready(value) if awaited(sys._getframe(1)) else value

    async def body() -> list[object]:
        a = await probe(1)
        b = probe(2)
        c = [await probe(3), probe(4)]
        d = (await probe(5)) + 1
        return [a, b, c, d]

    assert asyncio.run(body()) == [1, 2, [3, 4], 6]
    assert awaited(sys._getframe(0)) is False  # a plain function never awaits


def test_step_run_with_an_async_function_in_an_async_body(app: Celery) -> None:
    """``await step.run("name", async_fn, ...)`` is an async step (gathered too); each runs
    once and is checkpointed under its name."""
    runs: Counter[str] = Counter()

    async def lookup(name: str) -> str:
        runs[name] += 1
        await asyncio.sleep(0)
        return name.upper()

    @durable_task(app=app, name="async.step_run")
    async def main() -> list[str]:
        first = await step.run("lookup", lookup, "a")
        rest = await asyncio.gather(step.run("lookup", lookup, "b"),
                                    step.run("lookup", lookup, "c"))
        return [first, *rest]

    result = main.apply()
    assert result.get() == ["A", "B", "C"] and runs == {"a": 1, "b": 1, "c": 1}
    assert [s.key for s in get_run(result.id, app=app).steps] == [
        "lookup#0", "lookup#0@0", "lookup#0@1"]


def _within(seconds: float, run: Callable[[], object]) -> object:
    """``run()`` in a thread; fails the test if it has not returned after ``seconds``."""
    import threading

    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(run()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the delivery hangs"
    return outcome[0]


def test_a_failure_waiting_for_a_sibling_cancelled_from_outside_is_handled(
        app: Celery) -> None:
    """A step fails while a sibling runs; the body's ``wait_for`` then cancels the sibling.
    The failure is handled (the run fails, naming it) instead of waiting forever for the
    cancelled sibling; the cancelled step records nothing."""
    @step
    async def slow() -> str:
        await asyncio.sleep(30)
        return "never"

    @step(max_attempts=1)
    async def broken() -> str:
        await asyncio.sleep(0.05)
        raise ValueError("the tool refused the request")

    async def guarded() -> str:
        try:
            return await asyncio.wait_for(slow(), 0.3)
        except asyncio.TimeoutError:
            return "timed out"

    @durable_task(app=app, name="async.cancelled_sibling")
    async def body() -> object:
        return await asyncio.gather(guarded(), broken())

    result = _within(20, lambda: body.apply())
    run = get_run(result.id, app=app)  # type: ignore[attr-defined]
    assert run.status == "FAILED" and run.error is not None
    assert "the tool refused the request" in run.error.message
    assert [(s.key, s.status) for s in run.steps] == [("broken#0@1", StepStatus.FAILED)]


def test_steps_waiting_for_a_slot_when_a_failure_parks_the_run_start_nothing(
        app: Celery) -> None:
    """``max_parallel_steps=2``: ``a`` fails (retried later) while ``b`` runs and ``c``
    waits for a slot. ``c`` does not start in that delivery, the body's
    ``return_exceptions`` does not keep the parked run going, and the retry runs ``a`` and
    ``c`` once each, ``b`` never again."""
    runs: Counter[str] = Counter()

    @step(max_attempts=2, backoff=0)
    async def work(name: str) -> str:
        runs[name] += 1
        await asyncio.sleep(0.05 if name == "b" else 0)
        if name == "a" and runs["a"] == 1:
            raise ConnectionError("a timed out")
        return name

    @durable_task(app=app, name="async.parked_waiters", max_parallel_steps=2)
    async def body() -> list[object]:
        return list(await asyncio.gather(work("a"), work("b"), work("c"),
                                         return_exceptions=True))

    result = _within(20, lambda: body.apply())
    assert result.get() == ["a", "b", "c"]  # type: ignore[attr-defined]
    assert runs == {"a": 2, "b": 1, "c": 1}


def test_a_sync_transactional_step_in_an_async_body_is_refused_before_it_runs(
        app: Celery) -> None:
    ran: Counter[str] = Counter()

    @step(atomic=True)
    def create(name: str) -> str:
        ran["create"] += 1
        return name

    @durable_task(app=app, name="async.atomic_sync_step")
    async def body() -> str:
        return create("x")

    with pytest.raises(DurableError, match=r"create#0: atomic=True steps cannot run in an "
                                           "async def durable task"):
        body.apply().get()
    assert ran["create"] == 0


def test_a_task_group_in_the_body_parks_and_retries_like_gather(app: Celery) -> None:
    """``asyncio.TaskGroup`` wraps what its tasks raise in an exception group: a step's retry
    inside one still parks the run (not a failure of the body), and the retry runs only
    the failed step."""
    if not hasattr(asyncio, "TaskGroup"):
        pytest.skip("asyncio.TaskGroup needs Python 3.11")
    runs: Counter[str] = Counter()

    @step(max_attempts=2, backoff=0)
    async def work(name: str) -> str:
        runs[name] += 1
        await asyncio.sleep(0)
        if name == "b" and runs["b"] == 1:
            raise ConnectionError("b timed out")
        return name

    @durable_task(app=app, name="async.task_group")
    async def body() -> list[str]:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            tasks = [group.create_task(work(n)) for n in ("a", "b")]
        return [t.result() for t in tasks]

    assert body.apply().get() == ["a", "b"]
    assert runs == {"a": 1, "b": 2}
