"""Hostile input in the Redis store: corrupt checkpoints, huge payloads, odd arguments.

Runs are executed in eager mode against the real Redis store: a corrupted run
must end FAILED (dead letter) with a clear error on its first delivery, and
every further delivery must be ignored, never loop.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_durable import RunStatus, SerializationError, durable_task, get_run, signals, step
from celery_durable.controls.waits import sleep as durable_sleep
from celery_durable.errors import CorruptCheckpointError
from celery_durable.records import StepRecord, StepStatus
from celery_durable.stores import get_store

CALLS: list[str] = []


@pytest.fixture
def app() -> Iterator[Celery]:
    """An eager app on the real Redis store with its own key prefix."""
    app = Celery("hostile", set_as_current=False)
    app.conf.update(task_always_eager=True, task_store_eager_result=False,
                    durable_store=os.environ["TEST_REDIS_URL"],
                    durable_key_prefix=f"{os.environ['TEST_PREFIX']}hostile-{uuid.uuid4().hex[:6]}:",
                    durable_max_checkpoint_bytes=4096)
    CALLS.clear()
    yield app
    get_store(app).close()


@step
def double(x: int) -> int:
    CALLS.append("double")
    return x * 2


@step
def echo(value: Any) -> Any:
    CALLS.append("echo")
    return value


def two_steps(app: Celery) -> Any:
    @durable_task(app=app, name=f"hostile.two_steps.{uuid.uuid4().hex[:6]}")
    def task(x: int) -> int:
        return double(double(x))
    return task


def parked_run(app: Celery, task: Any, args: list[Any]) -> tuple[str, Any]:
    """A run whose first step is checkpointed and whose (dead) holder's lease has expired."""
    store = get_store(app)
    run_id = str(uuid.uuid4())
    begin = store.begin(run_id, task=task.name, args=str(args).replace("'", '"'), kwargs="{}",
                        options={}, owner="gone-host:1:1", lease_ttl=0.05)
    assert begin.outcome == "acquired"
    assert store.save_step(run_id, begin.token, StepRecord(0, "double#0", "double",
                                                           StepStatus.SUCCEEDED, value="20"))
    time.sleep(0.1)  # the lease expires: the next delivery takes the run over
    return run_id, store


def deliver(task: Any, run_id: str, args: list[Any]) -> BaseException | None:
    """One eager delivery of ``run_id``; the exception it ended with, if any."""
    result = task.apply(args=args, task_id=run_id)
    return result.result if isinstance(result.result, BaseException) else None


@pytest.mark.parametrize(("field", "corrupt"), [
    ("v:0", '{"__cd__":["decimal"'),           # a truncated value
    ("v:0", b"\xff\xfe\x00garbage"),           # not UTF-8 at all
    ("c:0", '{"k":"double#0","n":"dou'),       # a truncated step record
    ("c:0", b"\xc3\x28"),                      # an invalid UTF-8 sequence
    # success records of a shape the store never writes (the replay shortcut must not
    # take them for a success: the full decode names them)
    ("c:0", '{"k":"double#0","s":"succeeded","a":1}'),
    ("c:0", '{"k":"double#0","n":"double","s":"succeeded","a":"x","t0":null,"t1":null}'),
    ("c:0", '{"k":"double#0","n":"double","s":"succeeded","a":1,"t0":null,"t1":null}junk}'),
    ("args", "[10, "),                         # truncated arguments
    ("options", "{\"queue\": "),               # truncated delivery options
])
def test_corrupt_checkpoint_dead_letters_the_run_instead_of_looping(app, redis_client, field,
                                                                    corrupt) -> None:
    """A corrupted field ends the run FAILED with a 'corrupt'/'cannot be decoded' error, once."""
    task = two_steps(app)
    run_id, store = parked_run(app, task, [10])
    redis_client.hset(store.run_key(run_id), field, corrupt)
    dead: list[str] = []

    def on_dead(sender: Any = None, run_id: str = "", **kwargs: Any) -> None:
        dead.append(run_id)

    signals.run_dead_lettered.connect(on_dead)
    try:
        error = deliver(task, run_id, [10])
    finally:
        signals.run_dead_lettered.disconnect(on_dead)
    assert dead == [run_id], "a dead letter is announced once, whatever was corrupt"
    assert isinstance(error, SerializationError), error
    assert "corrupt" in str(error) or "cannot be decoded" in str(error)
    assert CALLS == [], "no step may run on top of a corrupt checkpoint"
    raw = redis_client.hgetall(store.run_key(run_id))
    assert raw[b"status"] == b"FAILED"
    assert b"corrupt" in raw[b"error"] or b"cannot be decoded" in raw[b"error"]
    # A second delivery (a redelivered message) is ignored: no loop, no step.
    deliver(task, run_id, [10])
    assert CALLS == [] and redis_client.hget(store.run_key(run_id), "status") == b"FAILED"
    # Nothing left to loop on: the sweeper drops the run instead of republishing it.
    assert store.claim_due(run_id, grace=0, max_recoveries=5).action == "gone"


def test_a_corrupt_checkpoint_dead_letters_the_run_when_resumes_are_announced(
        app, redis_client) -> None:
    """With a ``run_resumed`` receiver connected (tracing, a user's handler), counting the
    completed steps meets the corrupt record first: the run is still dead-lettered once,
    naming it, and no step runs (the delivery raised and left the run RUNNING)."""
    task = two_steps(app)
    run_id, store = parked_run(app, task, [10])
    redis_client.hset(store.run_key(run_id), "c:0", b"\xc3\x28")
    dead: list[str] = []
    resumed: list[str] = []

    def on_dead(sender: Any = None, run_id: str = "", **kwargs: Any) -> None:
        dead.append(run_id)

    def on_resumed(sender: Any = None, run_id: str = "", **kwargs: Any) -> None:
        resumed.append(run_id)

    signals.run_dead_lettered.connect(on_dead)
    signals.run_resumed.connect(on_resumed)
    try:
        error = deliver(task, run_id, [10])
    finally:
        signals.run_dead_lettered.disconnect(on_dead)
        signals.run_resumed.disconnect(on_resumed)
    assert dead == [run_id] and resumed == []
    assert isinstance(error, SerializationError) and "position 0 is corrupt" in str(error)
    assert CALLS == []
    assert redis_client.hget(store.run_key(run_id), "status") == b"FAILED"


@pytest.mark.parametrize("then", ["step", "sleep"])
def test_a_body_that_catches_the_corruption_error_still_dead_letters_the_run(
        app, redis_client, then) -> None:
    """A step call wrapped in ``except Exception`` cannot run the body on past a corrupt
    checkpoint (neither a step nor a wait): the run ends FAILED with
    CorruptCheckpointError all the same."""
    @durable_task(app=app, name=f"hostile.swallow.{uuid.uuid4().hex[:6]}")
    def task(x: int) -> int:
        try:
            x = double(x)
        except Exception:
            x = -1
        if then == "sleep":
            durable_sleep(3600)  # (skipped in eager mode, but checkpointed)
            return x
        return double(x)

    run_id, store = parked_run(app, task, [10])
    redis_client.hset(store.run_key(run_id), "c:0", '{"k":"double#0","n":"dou')
    error = deliver(task, run_id, [10])
    assert isinstance(error, CorruptCheckpointError), error
    assert CALLS == [], "no step may run on top of a corrupt checkpoint"
    assert redis_client.hget(store.run_key(run_id), "c:1") is None, "nor a wait"
    assert redis_client.hget(store.run_key(run_id), "status") == b"FAILED"


def test_corrupt_options_of_a_routed_run_dead_letter_it_when_a_traced_delivery_begins(
        app, redis_client) -> None:
    """BEGIN merges a trace header into stored routing; corrupt routing is not merged but
    reported (the run is dead-lettered with CorruptCheckpointError), never a script error."""
    from celery_durable.records import NewRun

    store = get_store(app)
    run_id = str(uuid.uuid4())
    store.create_runs([NewRun(run_id, "hostile.t", options={"queue": "q"})], grace=60)
    redis_client.hset(store.run_key(run_id), "options", '{"queue": ')
    begin = store.begin(run_id, task="hostile.t", args="[]", kwargs="{}",
                        options={"headers": {"durable_traceparent": "00-ab-cd-01"}},
                        owner="host:1:1", lease_ttl=30.0)
    assert begin.outcome == "dead"
    assert begin.run.error is not None and begin.run.error.type == "CorruptCheckpointError"


def test_get_run_of_a_corrupt_run_names_the_damage(app, redis_client) -> None:
    """Reading a run whose step record is corrupt returns what can be read and names the
    checkpoint that cannot (it raised, so an operator could not inspect the run at all)."""
    task = two_steps(app)
    run_id, store = parked_run(app, task, [1])
    redis_client.hset(store.run_key(run_id), "c:0", "{")
    info = get_run(run_id, app=app)
    assert info.id == run_id and info.task == task.name
    assert info.damage == ["checkpoint at position 0"]
    assert info.steps == []


def test_intact_run_resumes_after_the_checkpoint(app) -> None:
    """Control: the same parked run, not corrupted, replays step 1 and runs only step 2."""
    task = two_steps(app)
    run_id, _ = parked_run(app, task, [10])
    assert deliver(task, run_id, [10]) is None
    assert CALLS == ["double"]
    assert get_run(run_id, app=app).result == 40


def test_huge_step_value_fails_the_run_and_stores_no_value(app) -> None:
    """A step value over durable_max_checkpoint_bytes dead-letters the run; no value is stored."""
    @durable_task(app=app, name="hostile.huge")
    def huge() -> Any:
        return echo("x" * 10_000)

    result = huge.apply()
    assert "durable_max_checkpoint_bytes=4096" in str(result.result)
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert run.error.type.endswith("CheckpointTooLargeError")
    assert [(s.key, s.status, s.value) for s in run.steps] == [
        ("echo#0", StepStatus.FAILED, None)]


def test_unserializable_step_value_fails_at_once_and_stores_no_value(app) -> None:
    """A step returning an object fails the run at once (no retry) with SerializationError."""
    @durable_task(app=app, name="hostile.opaque")
    def opaque() -> Any:
        return echo(object())

    result = opaque.apply()
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert "SerializationError" in run.error.type and "builtins.object" in run.error.message
    assert CALLS == ["echo"] and run.steps[0].value is None and run.steps[0].attempts == 1


@pytest.mark.parametrize("args", [
    (object(),), ({1, 2, object()},), ("x" * 10_000,), (float("nan"),),
])
def test_arguments_that_are_not_json_are_refused_before_anything_runs(app, args) -> None:
    """Arguments JSON cannot hold (or too big) fail with SerializationError; no step runs."""
    @durable_task(app=app, name=f"hostile.args.{uuid.uuid4().hex[:6]}")
    def takes(value: Any) -> Any:
        return echo(1)

    result = takes.apply(args=args)
    assert isinstance(result.result, SerializationError), result.result
    assert "task arguments" in str(result.result)
    assert CALLS == []


def test_lone_surrogates_and_control_characters_survive_a_step(app) -> None:
    """Strings with lone surrogates, NULs and RTL marks round-trip through the Redis store."""
    nasty = "a\ud800b\udfff\x00\u202e<script>\U0001f600"

    @durable_task(app=app, name="hostile.text")
    def text(value: str) -> Any:
        return echo(value)

    result = text.apply(args=(nasty,))
    assert result.result == nasty
    run = get_run(result.id, app=app)
    assert run.args == [nasty] and run.result == nasty and run.steps[0].value == nasty


# -- control fields: one bad run never affects another ---------------------------------------


@pytest.mark.parametrize(("field", "garbage"), [
    ("nb", "garbage"), ("token", "garbage"), ("lease", "x"), ("rec", "many"),
    ("status", "ZOMBIE")])
def test_a_garbage_control_field_dead_letters_the_run_naming_it(app: Celery, field: str,
                                                                  garbage: str) -> None:
    """``HSET <run> nb garbage``: the next delivery dead-letters the run, its error naming the
    field (the BEGIN script errored, the message was requeued: 2,169 bounces in 35 min)."""
    task = two_steps(app)
    run_id, store = parked_run(app, task, [5])
    store.client.hset(store.run_key(run_id), field, garbage)
    error = deliver(task, run_id, [5])
    assert isinstance(error, CorruptCheckpointError)
    run = get_run(run_id, app=app)
    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error.type == "CorruptCheckpointError"
    assert f"field {field} " in run.error.message
    assert CALLS == []
    assert deliver(task, run_id, [5]) is None or True  # a redelivery ends at once, no loop
    assert get_run(run_id, app=app).status is RunStatus.FAILED


def test_a_garbage_due_time_never_stops_the_sweep(app: Celery) -> None:
    """``HSET <run> due garbage``: the sweep dead-letters that run and still wakes the others
    (CLAIM_DUE errored and aborted every sweep, so no timer or recovery happened anywhere)."""
    from celery_durable.ops.sweeper import sweep

    task = two_steps(app)
    bad, store = parked_run(app, task, [1])
    good, _ = parked_run(app, task, [2])
    store.client.hset(store.run_key(bad), "due", "garbage")
    for run_id in (bad, good):
        store.client.zadd(store._due_key, {run_id: 0})
    app.conf.task_always_eager = False  # publish the woken run to the (unconsumed) broker
    app.conf.broker_url = "memory://"
    assert sweep(app) == 2
    assert get_run(bad, app=app).status is RunStatus.FAILED
    assert "field due" in (get_run(bad, app=app).error.message or "")
    assert get_run(good, app=app).status is RunStatus.PENDING  # recovered and published


def test_one_corrupt_run_does_not_hide_the_dead_letters(app: Celery) -> None:
    """``list_runs(status="FAILED")`` and ``get_run`` with a corrupt run among them: the others
    are listed, and the corrupt one is shown with the damage named (both raised before)."""
    from celery_durable import list_runs
    from celery_durable.records import ErrorInfo

    task = two_steps(app)
    store = get_store(app)
    failed_ids = []
    for x in (1, 2):
        run_id, _ = parked_run(app, task, [x])
        b = store.begin(run_id, task=task.name, args="[1]", kwargs="{}", options={},
                        owner="h:1:1", lease_ttl=30)
        assert store.finish(run_id, b.token, status=RunStatus.FAILED,
                            error=ErrorInfo("builtins.ValueError", "no"))
        failed_ids.append(run_id)
    store.client.hset(store.run_key(failed_ids[0]), "options", "{not json")
    store.client.hset(store.run_key(failed_ids[0]), "c:0", "\\xff truncated")
    listed = {r.id: r for r in list_runs(status="FAILED", app=app)}
    assert set(failed_ids) <= set(listed)
    assert listed[failed_ids[1]].damage == []
    shown = get_run(failed_ids[0], app=app)
    assert any(d.startswith("options") for d in shown.damage)
    assert "checkpoint at position 0" in shown.damage
    assert shown.error is not None and shown.error.message == "no"


def test_a_run_whose_message_cannot_be_built_is_dead_lettered_by_the_sweep(app: Celery) -> None:
    """A queued run whose stored arguments do not decode: the sweep dead-letters it with the
    reason instead of failing to publish it every ``durable_requeue_grace`` forever."""
    from celery_durable.ops.sweeper import sweep
    from celery_durable.records import NewRun

    task = two_steps(app)
    store = get_store(app)
    run_id = str(uuid.uuid4())
    assert store.create_runs([NewRun(run_id, task.name, "[1]")], grace=60) == [True]
    store.client.hset(store.run_key(run_id), mapping={"args": "[1, ", "due": "1"})  # due now
    store.client.zadd(store._due_key, {run_id: 0})
    app.conf.task_always_eager = False
    app.conf.broker_url = "memory://"
    assert sweep(app) == 1
    run = get_run(run_id, app=app)
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "cannot be sent" in run.error.message
    assert sweep(app) == 0  # not due any more: nothing loops
