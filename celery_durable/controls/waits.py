"""Durable waits: ``sleep``, ``sleep_until``, ``wait_for_event``, ``send_event``, ``wake_run``.

Inside a durable run each wait is a checkpointed step (``sleep#0``,
``wait_for_event:approval#0``), so replay and the determinism check treat it
like any step. The first time a wait is reached its wake time (or timeout)
is checkpointed and, unless it is already over, the run is *suspended*: its
status becomes ``SLEEPING`` or ``WAITING`` (also as the Celery state, for
Flower and ``AsyncResult``), the lease is released and the Celery task ends
cleanly (``Ignore``: no failure, no retry counted, the worker slot is free).

Timers live in the store, never in broker countdowns: the sweeper (a
worker bootstep, or the ``celery_durable.sweep_due`` periodic task) claims
due runs atomically and publishes them. An event is resolved into the run's
own record by whoever comes second of the sender and the waiter (see the
protocol in :mod:`celery_durable.stores.base`), first write wins, and that
side publishes the run. The next delivery replays the completed steps and
returns from the wait with its outcome, which is then checkpointed too.

Event keys are compared as text: ``key=42`` and ``key="42"`` are the same.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

from celery import Celery

from ..config import app_or_current, settings_for
from ..engine._flow import LeaseLost, Suspend
from ..engine.awaiting import as_awaited
from ..engine.context import RunContext, body_context
from ..engine.publish import publish_run
from ..engine.steps import _replay
from ..errors import NonDeterministicStepError, RunNotFoundError
from ..records import EventRecord, RunStatus, StepRecord, StepStatus, WaitInfo
from ..serialization import decode, encode, get_serializer
from ..stores import get_store
from ..stores.base import waits_of

logger = logging.getLogger(__name__)

SLEEP_STEP = "sleep"
EVENT_STEP = "wait_for_event:"

Duration = dt.timedelta | float | int


def _seconds(duration: Duration | None, what: str) -> float | None:
    if duration is None:
        return None
    if isinstance(duration, dt.timedelta):
        return duration.total_seconds()
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return float(duration)
    raise TypeError(f"{what} must be a timedelta or a number of seconds, "
                    f"not {type(duration).__name__}")


def event_key(key: Any) -> str:
    """The text an event key is compared as (``None`` → ``""``, ``42`` → ``"42"``)."""
    return "" if key is None else str(key)


def _now(ctx: RunContext) -> float:
    """The store's clock (timers fire by it; this worker's may disagree)."""
    return ctx.store_now()


def _save(ctx: RunContext, record: StepRecord, state: dict[str, Any]) -> Any:
    """Checkpoint the wait ``record`` with ``state`` as its value; return the decoded state."""
    record.value = encode(ctx.serializer, state, max_bytes=ctx.settings.max_checkpoint_bytes,
                          what=f"state of wait {record.key}", run_id=ctx.run_id, step=record.key)
    record.finished_at = time.time() if "outcome" in state else None
    if not ctx.store.save_step(ctx.run_id, ctx.token, record):
        raise LeaseLost()
    ctx.checkpoints[record.position] = record
    return decode(ctx.serializer, record.value, what=f"state of wait {record.key}",
                  run_id=ctx.run_id, step=record.key)


def _state(ctx: RunContext, record: StepRecord) -> dict[str, Any]:
    state = decode(ctx.serializer, record.value or "null", what=f"state of wait {record.key}",
                   run_id=ctx.run_id, step=record.key)
    if not isinstance(state, dict) or "kind" not in state:
        raise RuntimeError(f"run {ctx.run_id}: checkpoint {record.key} is not a wait")
    return state


def _resolution(ctx: RunContext, position: int, wait_id: int) -> dict[str, Any] | None:
    """How the store says the wait at ``position`` ended (event or woken), if it did."""
    wait = ctx.wait
    if (wait is None or wait.resolution is None or wait.position != position
            or wait.wait_id != wait_id):
        return None
    resolution: dict[str, Any] = json.loads(wait.resolution)
    if int(resolution.get("wid") or 0) != wait_id:
        return None
    return resolution


def _suspend(ctx: RunContext, status: RunStatus, wait: WaitInfo,
             record: StepRecord | None) -> None:
    """Park the run at ``wait`` and end this delivery (raises :class:`Suspend`)."""
    # (Not "event": Flower's task state has an ``event`` method these would replace.)
    meta = {"run_id": ctx.run_id, "step": wait.step, "wake_at": wait.until,
            "awaited_event": wait.event, "event_key": wait.key}
    # The Celery state first: once the store says WAITING the run may resume on
    # another worker, and a late SLEEPING must not overwrite its outcome.
    ctx.task.update_state(task_id=ctx.run_id, state=status.value, meta=meta)
    try:  # Flower's task list follows events: a custom task-sleeping / task-waiting
        ctx.task.send_event(f"task-{status.value.lower()}", **meta)
    except Exception:
        logger.warning("run %s: could not send the %s event", ctx.run_id, status.value,
                       exc_info=True)
    store = waits_of(ctx.store)
    if not store.suspend(ctx.run_id, ctx.token, status=status, wait=wait, step=record):
        raise LeaseLost()
    publish = None
    if wait.kind == "event":
        # Second look at the mailbox, now that a sender can deliver to us: an
        # event posted between the first look and the suspension is found here.
        assert wait.event is not None and wait.key is not None
        event = store.register_waiter(ctx.run_id, wait.event, wait.key, after=wait.after,
                                      buffer=float(ctx.settings.event_buffer))
        if event is not None:
            runs = store.deliver_event(event, [ctx.run_id],
                                       grace=float(ctx.settings.requeue_grace))
            publish = runs[0] if runs else None
    logger.info("run %s: %s at %s", ctx.run_id, status.value, wait.step)
    raise Suspend(status.value, publish, wait)


def _new_record(position: int, key: str, name: str) -> StepRecord:
    return StepRecord(position, key, name, StepStatus.SUCCEEDED, 1, started_at=time.time())


def _pending(ctx: RunContext, record: StepRecord, state: dict[str, Any]) -> StepRecord:
    """``record`` holding the state of a wait that has not ended (written by ``suspend``)."""
    record.value = encode(ctx.serializer, state, max_bytes=ctx.settings.max_checkpoint_bytes,
                          what=f"state of wait {record.key}", run_id=ctx.run_id, step=record.key)
    return record


# -- sleeping ----------------------------------------------------------------------


def _sleep(ctx: RunContext, wake_at: float) -> None:
    position, key = ctx.next_key(SLEEP_STEP)
    record = _replay(ctx, position, key)
    if record is None:
        record = _new_record(position, key, SLEEP_STEP)
        state: dict[str, Any] = {"kind": "sleep", "until": wake_at, "wid": ctx.token}
        if ctx.eager or wake_at <= _now(ctx):
            # Eager mode has no worker to wake the run later: the sleep is skipped.
            _save(ctx, record, {**state, "outcome": "elapsed"})
            return
        _suspend(ctx, RunStatus.SLEEPING, WaitInfo("sleep", key, position, ctx.token,
                                                   until=wake_at), _pending(ctx, record, state))
    state = _state(ctx, record)
    if "outcome" in state:
        return
    until, wid = float(state["until"]), int(state["wid"])
    if _resolution(ctx, position, wid) is not None:
        _save(ctx, record, {**state, "outcome": "woken"})
    elif ctx.eager or until <= _now(ctx):
        _save(ctx, record, {**state, "outcome": "elapsed"})
    else:  # a delivery before the wake time: park again, same timer
        _suspend(ctx, RunStatus.SLEEPING, WaitInfo("sleep", key, position, wid, until=until),
                 None)


def sleep(duration: Duration) -> None:
    """Suspend the durable run for ``duration`` (a timedelta or seconds).

    The wake time is checkpointed, the run becomes ``SLEEPING`` and the worker
    is released; the run resumes after the call at the wake time (or at
    once after :func:`wake_run`). A sleep that already elapsed on replay
    returns at once. Outside a durable run this is :func:`time.sleep`; in
    eager mode it returns at once.
    """
    seconds = _seconds(duration, "sleep duration")
    assert seconds is not None
    ctx = body_context("sleep")
    if ctx is None:
        time.sleep(max(seconds, 0.0))
        return None
    _sleep(ctx, _now(ctx) + seconds)
    return as_awaited(None)  # type: ignore[no-any-return]


def sleep_until(when: dt.datetime) -> None:
    """Suspend the durable run until the timezone-aware datetime ``when``; see :func:`sleep`."""
    if not isinstance(when, dt.datetime) or when.tzinfo is None:
        raise ValueError("sleep_until() needs a timezone-aware datetime")
    ctx = body_context("sleep_until")
    if ctx is None:
        time.sleep(max(when.timestamp() - time.time(), 0.0))
        return None
    _sleep(ctx, when.timestamp())
    return as_awaited(None)  # type: ignore[no-any-return]


# -- events ------------------------------------------------------------------------


def _cursor(ctx: RunContext, position: int, step_name: str, key: str) -> int:
    """Seq of the last event this run received on ``(name, key)`` before ``position``."""
    last = 0
    for pos, record in ctx.checkpoints.items():
        if pos >= position or record.name != step_name:
            continue
        state = _state(ctx, record)
        if state.get("key") == key and state.get("outcome") == "event":
            last = max(last, int(state.get("seq") or 0))
    return last


def _received(ctx: RunContext, record: StepRecord, state: dict[str, Any],
              event: EventRecord | dict[str, Any]) -> Any:
    """Checkpoint that the wait received ``event``; return its payload."""
    if isinstance(event, EventRecord):
        event_id, seq, payload_text = event.id, event.seq, event.payload
    else:
        event_id, seq, payload_text = event["id"], int(event["seq"]), event["payload"]
    payload = decode(ctx.serializer, payload_text, what=f"payload of event {state['event']!r}",
                     run_id=ctx.run_id, step=record.key)
    done = _save(ctx, record, {**state, "outcome": "event", "event_id": event_id, "seq": seq,
                               "payload": payload})
    waits_of(ctx.store).unregister_waiter(ctx.run_id, state["event"], state["key"])
    return done["payload"]


def _no_event(ctx: RunContext, record: StepRecord, state: dict[str, Any], outcome: str) -> None:
    """Checkpoint that the wait ended without an event (``timeout`` or ``woken``)."""
    _save(ctx, record, {**state, "outcome": outcome})
    waits_of(ctx.store).unregister_waiter(ctx.run_id, state["event"], state["key"])


def wait_for_event(name: str, *, key: Any = None, timeout: Duration | None = None) -> Any:
    """Suspend the durable run until ``send_event(name, key, payload)``; return the payload.

    Returns None when ``timeout`` (a timedelta or seconds; None waits
    forever) passes first, or when the run is woken with :func:`wake_run`.
    An event sent up to ``durable_event_buffer`` seconds before the run gets
    here is delivered too; a run waiting twice on the same name and key
    gets a newer event each time. While suspended the run is ``WAITING``.
    In eager mode only an already-sent event can be received; otherwise the
    wait times out at once.
    """
    ctx = body_context("wait_for_event")
    if ctx is None:
        raise RuntimeError("wait_for_event() only works inside a durable run")
    seconds = _seconds(timeout, "timeout")
    return as_awaited(
        await_event(ctx, name, key, until=None if seconds is None else ("in", seconds))[1])


def await_event(ctx: RunContext, name: str, key: Any, *,
                until: tuple[str, float] | None) -> tuple[str, Any]:
    """:func:`wait_for_event` with how it ended: ``("event", payload)``, ``("timeout",
    None)`` or ``("woken", None)``. ``until`` is ``("in", seconds)`` from now, or ``("at",
    time)`` on the store's clock (a wait token's expiry); None waits forever."""
    key_text, step_name = event_key(key), f"{EVENT_STEP}{name}"
    position, step_key = ctx.next_key(step_name)
    record = _replay(ctx, position, step_key)
    if record is None:
        record = _new_record(position, step_key, step_name)
        deadline = (None if until is None else until[1] if until[0] == "at"
                    else _now(ctx) + until[1])
        state: dict[str, Any] = {
            "kind": "event", "event": name, "key": key_text, "until": deadline,
            "after": _cursor(ctx, position, step_name, key_text), "wid": ctx.token}
        pending: StepRecord | None = record
    else:
        state = _state(ctx, record)
        if state.get("key") != key_text:
            ctx.fatal = NonDeterministicStepError(
                f"run {ctx.run_id}: {step_key} waited for key {state.get('key')!r} but replay "
                f"waits for key {key_text!r}; check that your task is deterministic",
                run_id=ctx.run_id, step=step_key)
            raise ctx.fatal
        if "outcome" in state:
            return str(state["outcome"]), state.get("payload")
        resolution = _resolution(ctx, position, int(state["wid"]))
        if resolution is not None:
            if resolution.get("how") == "event":
                return "event", _received(ctx, record, state, resolution)
            _no_event(ctx, record, state, "woken")
            return "woken", None
        pending = None
    event = waits_of(ctx.store).register_waiter(ctx.run_id, name, key_text,
                                                after=int(state["after"]),
                                                buffer=float(ctx.settings.event_buffer))
    if event is not None:
        return "event", _received(ctx, record, state, event)
    deadline = state["until"]
    if ctx.eager or (deadline is not None and float(deadline) <= _now(ctx)):
        _no_event(ctx, record, state, "timeout")
        return "timeout", None
    _suspend(ctx, RunStatus.WAITING, WaitInfo(
        "event", step_key, position, int(state["wid"]), until=deadline, event=name,
        key=key_text, after=int(state["after"])),
        None if pending is None else _pending(ctx, pending, state))
    raise AssertionError("unreachable: _suspend raises")


def send_event(name: str, key: Any = None, payload: Any = None, *,
               app: Celery | None = None) -> int:
    """Send event ``(name, key)`` with ``payload``; return how many waiting runs it resumed.

    Every run waiting for that name and key gets the event. It is also kept
    for ``durable_event_buffer`` seconds, so a run that reaches its
    ``wait_for_event`` shortly after still receives it (not counted in the
    return value). Works from any process that has the Celery app.
    """
    app = app_or_current(app)
    settings = settings_for(app)
    text = encode(get_serializer(settings.serializer), payload,
                  max_bytes=settings.max_checkpoint_bytes, what=f"payload of event {name!r}")
    return post_event(app, name, key, text)


def post_event(app: Celery, name: str, key: Any, text: str) -> int:
    """Send an event whose payload is serialized already (``text``); how many runs resumed."""
    settings = settings_for(app)
    store = waits_of(get_store(app))
    event, waiters = store.post_event(name, event_key(key), text,
                                      buffer=float(settings.event_buffer))
    runs = store.deliver_event(event, waiters, grace=float(settings.requeue_grace))
    for run in runs:
        publish_run(app, run)
    logger.info("event %s[%s]: resumed %d run(s)", name, event.key, len(runs))
    return len(runs)


def wake_run(run_id: str, *, app: Celery | None = None) -> bool:
    """Resume a ``SLEEPING`` or ``WAITING`` run now; return False if it is not parked.

    A sleeping run continues after its sleep at once. A waiting run
    continues as if its wait had timed out: ``wait_for_event`` returns None.
    Raises :class:`RunNotFoundError` if the run does not exist.
    """
    app = app_or_current(app)
    store = get_store(app)
    run = waits_of(store).wake(run_id, grace=float(settings_for(app).requeue_grace))
    if run is None:
        if store.get_run(run_id) is None:
            raise RunNotFoundError(f"no durable run {run_id!r}", run_id=run_id)
        return False
    publish_run(app, run)
    return True


__all__ = ["send_event", "sleep", "sleep_until", "wait_for_event", "wake_run"]
