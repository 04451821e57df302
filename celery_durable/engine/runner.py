"""One delivery of a durable run: take the lease, replay, run, park or finish."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Any, NoReturn, Protocol

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from .. import signals
from ..config import settings_for
from ..errors import (
    CorruptCheckpointError,
    DurableError,
    SerializationError,
    StoreUnavailableError,
    WorkerLostError,
)
from ..records import Begin, ErrorInfo, NewRun, RunStatus, StepStatus
from ..serialization import decode, encode, get_serializer
from ..stores import get_store
from . import endings, leases, tracing
from ._flow import LeaseLost, Reenqueue, Suspend
from .context import RunContext, current_run
from .labels import code_version, run_tags
from .lifecycle import announce_dead_letter, mark_revoked, notify_parent
from .pinning import misrouted
from .publish import delivery_options, publish_run
from .storeguard import guard

logger = logging.getLogger(__name__)


def _begin(task: Task, run_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
           request: Any, ctx_fields: dict[str, Any]) -> Begin:
    settings = ctx_fields["settings"]
    serializer = ctx_fields["serializer"]
    store = ctx_fields["store"]
    args_text = encode(serializer, list(args), max_bytes=settings.max_checkpoint_bytes,
                       what="task arguments", run_id=run_id)
    kwargs_text = encode(serializer, dict(kwargs), max_bytes=settings.max_checkpoint_bytes,
                         what="task keyword arguments", run_id=run_id)
    owner = leases.owner_id()
    options = delivery_options(request)
    if tracing.active is None:
        tracing.for_app(task.app)  # a tracer provider may have been configured since
    if tracing.active is not None:  # the trace context to keep if the run is new
        ctx_fields["trace_root"] = tracing.active.before_begin(task, options)
    tags, version = run_tags(task), code_version(task)
    ctx_fields["version"] = version  # (the delivery's code version, for its RunContext)
    common = {"task": task.name, "args": args_text, "kwargs": kwargs_text,
              "options": options,
              "owner": owner, "lease_ttl": float(settings.lease_ttl),
              "max_recoveries": int(settings.max_recoveries),
              "tags": tags, "version": version}
    begin: Begin = store.begin(run_id, **common)
    if (begin.outcome == "finished" and request.is_eager
            and begin.run.status is RunStatus.SUCCEEDED):
        # ``task.apply()`` runs the task again, as Celery does, even under the id of a run
        # that succeeded (a frozen chain applied after it ran): a new run replaces it. A
        # failed, dead-lettered or cancelled run is kept for the operator instead.
        store.create_runs([NewRun(run_id, task.name, args_text, kwargs_text, options,
                                  tags=tags, version=version)],
                          grace=float(settings.requeue_grace), replace_finished=True)
        begin = store.begin(run_id, **common)
    if begin.outcome == "busy" and leases.owner_is_dead(begin.run.owner):
        logger.info("run %s: previous holder %s is dead; taking over", run_id, begin.run.owner)
        begin = store.begin(run_id, steal_from=begin.run.owner, **common)
    return begin


class Gate(Protocol):
    """What a delivery passes after taking the lease and before the body: the concurrency
    limits (:mod:`celery_durable.controls.concurrency`, handed in by the task class)."""

    def enter(self, ctx: RunContext, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> str | None:
        """Take a slot (return its group), or park the run (raise ``Suspend``)."""

    def leave(self, ctx: RunContext, group: str | None) -> None:
        """Give the slot of ``group`` back."""


def execute(task: Task, body: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
            gate: Gate) -> Any:
    """Run (or resume) the durable run of the current request (see docs/architecture.md)."""
    request = task.request
    run_id: str = request.id
    app = task.app
    settings = settings_for(app)
    fields: dict[str, Any] = {"settings": settings,
                              "serializer": get_serializer(settings.serializer),
                              "store": get_store(app)}
    asked = time.monotonic()  # the lease, if taken, lasts its ttl from (at least) here
    try:
        begin = _begin(task, run_id, args, kwargs, request, fields)
    except DurableError:
        raise
    except Exception as exc:
        _store_down_at_start(task, run_id, exc)
    if begin.outcome == "dead":
        message = begin.run.error.message if begin.run.error else "worker lost"
        logger.error("run %s dead-lettered: %s", run_id, message)
        announce_dead_letter(app, fields["store"], run_id=run_id, task=task.name,
                             parent=begin.run.parent, error=begin.run.error,
                             failed_step=begin.run.failed_step)
        if begin.run.error is not None and begin.run.error.type == "CorruptCheckpointError":
            raise CorruptCheckpointError(message, run_id=run_id)
        raise WorkerLostError(f"run {run_id}: {message}", run_id=run_id)
    if begin.outcome == "finished":
        # (Again: the delivery that finished it may have died before telling the parent.)
        notify_parent(app, fields["store"], begin.run.parent)
        return endings.report_finished(task, begin.run, get_serializer(settings.serializer))
    if begin.outcome != "acquired":
        logger.info("run %s: delivery ignored (%s, status %s)", run_id, begin.outcome,
                    begin.run.status)
        raise Ignore()
    if not request.is_eager and misrouted(app, begin.run.version, fields["version"]):
        _hand_back(app, fields["store"], begin, fields["version"])
    # The body gets the run's stored arguments: the same values on every delivery, and
    # edited ones (retry_run) even when a stale message still carries the old ones.
    serializer = fields["serializer"]
    try:
        args = tuple(decode(serializer, begin.run.args, what="arguments", run_id=run_id))
        kwargs = decode(serializer, begin.run.kwargs, what="keyword arguments", run_id=run_id)
    except SerializationError as exc:
        _corrupt_arguments(app, fields["store"], begin, exc)
    eager = bool(request.is_eager)
    ctx = RunContext(task=task, run_id=run_id, token=begin.token,
                     store=guard(fields["store"]),
                     settings=settings, serializer=fields["serializer"],
                     policy=endings.task_policy(task), eager=eager,
                     checkpoints=begin.checkpoints,
                     wait=begin.run.wait, clock=begin.run.updated_at or 0.0,
                     parent=begin.run.parent, run_version=begin.run.version,
                     code_version=fields["version"])
    if ctx.run_version != ctx.code_version and len(ctx.checkpoints):
        logger.info("run %s: recorded under version %s, resumed by a worker of version %s",
                    run_id, ctx.run_version or "(none)", ctx.code_version or "(none)")
    if not eager:
        # The unwrapped store: the heartbeat batches renewals per store object.
        leases.hold(fields["store"], run_id, ctx.token, float(settings.lease_ttl),
                    confirmed=asked)
    reset = current_run.set(ctx)
    suspended: Suspend | None = None
    group: str | None = None
    outer = sys.exc_info()[1]  # (eager retries run inside an exception handler)
    if tracing.active is not None:
        tracing.active.start_delivery(ctx, begin.run, fields.get("trace_root"))
    try:
        group = gate.enter(ctx, args, kwargs)
        if signals.run_started.receivers or signals.run_resumed.receivers:
            _announce(ctx, args, kwargs)
        return _run_body(ctx, body, args, kwargs)
    except Reenqueue as signal:
        return endings.step_retry(ctx, args, kwargs, signal)
    except Suspend as signal:
        suspended = signal
    except LeaseLost:
        group = None  # a newer delivery (same run id) may hold the slot now
        _lease_lost(ctx)
        raise Ignore() from None
    except StoreUnavailableError as exc:
        if eager:
            raise
        # Not the task's failure: keep the run RUNNING under its (now unrenewed) lease;
        # the sweeper republishes it when the lease expires and it resumes from the
        # last checkpoint. No FAILURE goes to the result backend.
        logger.warning("run %s: %s; it resumes after its lease expires", run_id, exc)
        raise Ignore() from None
    finally:
        current_run.reset(reset)
        leases.release(run_id)
        gate.leave(ctx, group)
        if tracing.active is not None:
            error = sys.exc_info()[1]
            tracing.active.end_delivery(None if error is outer else error,
                                        suspended is not None)
    assert suspended is not None  # every other path returned or raised
    if signals.run_suspended.receivers and suspended.status in ("SLEEPING", "WAITING"):
        wait = suspended.wait
        signals.run_suspended.send(
            sender=task, run_id=run_id, task=task.name, status=suspended.status,
            step=wait.step if wait else None, wake_at=wait.until if wait else None,
            event=wait.event if wait else None, key=wait.key if wait else None)
    _suspended(app, suspended)


def _announce(ctx: RunContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Send ``run_started`` (no checkpoints yet) or ``run_resumed``.

    A checkpoint that cannot be read ends the run as it would at its step
    (``ctx.fatal``: the body's first step raises it and the run is
    dead-lettered, naming the field); no signal is sent for it.
    """
    if ctx.checkpoints:
        try:
            completed = sum(1 for s in ctx.checkpoints.values()
                            if s.status is StepStatus.SUCCEEDED)
        except CorruptCheckpointError as unreadable:
            ctx.fatal = unreadable
            return
        signals.run_resumed.send(sender=ctx.task, run_id=ctx.run_id, task=ctx.task.name,
                                 completed=completed, args=args, kwargs=kwargs)
    else:
        signals.run_started.send(sender=ctx.task, run_id=ctx.run_id, task=ctx.task.name,
                                 args=args, kwargs=kwargs)


def _store_down_at_start(task: Task, run_id: str, exc: Exception) -> NoReturn:
    """The store failed before the run was taken: hand the message back to the broker.

    Acknowledging it (what a plain failure does with ``acks_late``) would lose
    a run the store may never have recorded. The pause keeps a worker from
    spinning through the queue while the store is down.
    """
    if task.request.is_eager:
        raise exc
    logger.warning("run %s: checkpoint store unavailable at start (%s: %s); requeued",
                   run_id, type(exc).__name__, exc)
    time.sleep(1.0)
    raise Reject(exc, requeue=True) from None


def _corrupt_arguments(app: Any, store: Any, begin: Begin, exc: SerializationError) -> NoReturn:
    """Stored arguments cannot be decoded: dead-letter the run now instead of crash-looping."""
    run = begin.run
    logger.error("run %s failed: %s", run.id, exc)
    error = ErrorInfo("CorruptCheckpointError", str(exc))
    if not store.finish(run.id, begin.token, status=RunStatus.FAILED, error=error):
        raise Ignore() from exc
    announce_dead_letter(app, store, run_id=run.id, task=run.task, parent=run.parent,
                         error=error, failed_step=None)
    raise CorruptCheckpointError(str(exc), run_id=run.id) from exc


def _hand_back(app: Any, store: Any, begin: Begin, version: str | None) -> NoReturn:
    """A pinned run reached a worker of another version: queue it for its own version's
    workers (PENDING again; the sweeper re-sends it if this publish is lost)."""
    run = begin.run
    logger.info("run %s: version %s, not this worker's %s; sent to its version's queue",
                run.id, run.version, version or "(none)")
    if store.park(run.id, begin.token, status=RunStatus.PENDING, delay=0.0,
                  due_in=float(settings_for(app).requeue_grace)):
        publish_run(app, run)
    raise Ignore()


def _lease_lost(ctx: RunContext) -> None:
    """Say why the delivery stops: a cancel, or another delivery took the run over."""
    try:
        run = ctx.store.get_runs([ctx.run_id])[0]
    except Exception:  # a store without run controls, or unreachable
        run = None
    if run is not None and run.status is RunStatus.CANCELLED:
        logger.info("run %s: cancelled; stopping at this step boundary", ctx.run_id)
        # A paused-state update of this delivery may have overwritten cancel_run's REVOKED.
        mark_revoked(ctx.task.app, ctx.run_id, run=run)
        return
    logger.warning("run %s: lease lost to another delivery; stopping", ctx.run_id)


def _suspended(app: Any, signal: Suspend) -> NoReturn:
    """The run is parked at a durable wait (waits.py set the SLEEPING/WAITING state).

    End the task cleanly: no failure, no retry counted. ``Ignore`` is raised
    outside the ``except`` block and the body's frames are cleared, so no
    exception chain keeps them alive: thousands of runs suspending must not
    grow the pool processes' memory.
    """
    traceback.clear_frames(signal.__traceback__)
    signal.__traceback__ = None
    if signal.publish is not None:
        publish_run(app, signal.publish)  # the wait ended while it was being parked
    raise Ignore()


def _run_body(ctx: RunContext, body: Any, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
    """Run the body and end the delivery the way its outcome means (see :mod:`.endings`)."""
    try:
        value = body(*args, **kwargs)
        if ctx.fatal is not None:
            raise ctx.fatal
    except (Reenqueue, LeaseLost, StoreUnavailableError):
        raise
    except Retry as exc:
        endings.celery_retry(ctx, exc)
    except Reject as exc:
        endings.rejected(ctx, exc)
    except Ignore as exc:
        endings.ignored(ctx, exc)
    except Exception as exc:
        _failed(ctx, exc)
        raise
    return endings.succeed(ctx, value)


def _failed(ctx: RunContext, exc: Exception) -> None:
    """The body raised ``exc``: Celery's ``autoretry_for`` first, else a dead letter."""
    try:
        endings.autoretry(ctx, exc)
    except Retry as retry:
        endings.celery_retry(ctx, retry)
    except Exception as final:  # max_retries spent: Celery re-raises (this exc, or its own)
        endings.fail(ctx, final)
        raise
    endings.fail(ctx, exc)
