"""How a delivery ends, with each of Celery's meanings kept.

The body returned (:func:`succeed`), raised (:func:`fail`, after Celery's
``autoretry_for`` had its say: :func:`autoretry`), asked Celery for a retry
(:func:`celery_retry`: ``self.retry()``), or raised one of Celery's control
exceptions: ``Ignore`` (:func:`ignored`; ``self.replace()`` ends in one too,
see :func:`hand_over`) or ``Reject`` (:func:`rejected`). A failed step that
is retried later re-enqueues the run (:func:`step_retry`), and a delivery of a
run that already finished reports what the store knows (:func:`report_finished`).
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from typing import Any, NoReturn

from celery import Task
from celery.backends.base import DisabledBackend
from celery.exceptions import Ignore, Reject, Retry, TimeLimitExceeded
from celery.result import ResultBase
from celery.utils.time import get_exponential_backoff_interval

from .. import signals
from ..config import settings_for
from ..errors import DurableError, SerializationError, StepFailedError, WorkerLostError
from ..records import ErrorInfo, RunRecord, RunStatus
from ..retry import RetryPolicy, policy_from_task
from ..serialization import Serializer, decode, encode
from ..stores import get_store
from ._flow import LeaseLost, Reenqueue
from .context import RunContext
from .leases import ensure_held
from .lifecycle import announce_dead_letter, notify_parent
from .pinning import pinned
from .publish import message_options, publish_run

logger = logging.getLogger(__name__)


def task_policy(task: Task) -> RetryPolicy:
    """The task's default step policy (cached on the task)."""
    policy: RetryPolicy | None = task.__dict__.get("_durable_policy")
    if policy is None:
        # Options given to the decorator become attributes of the generated
        # class; Celery's own defaults live on Task and do not count as choices.
        explicit = frozenset(type(task).__dict__)
        policy = policy_from_task(task, settings_for(task.app).default_max_attempts, explicit)
        task.__dict__["_durable_policy"] = policy
    return policy


def _storable(value: Any) -> Any:
    """What the store keeps of a result: a Celery result object as Celery stores it."""
    return value.as_tuple() if isinstance(value, ResultBase) else value


def succeed(ctx: RunContext, value: Any) -> Any:
    """The body returned ``value``: record SUCCEEDED and hand ``value`` to Celery unchanged.

    Celery gets the body's own value (an eager tuple stays a tuple, an
    ``AsyncResult`` stays one), exactly as from a plain task; the store keeps its
    serialized form, which a redelivery of the finished run reports.
    """
    text = encode(ctx.serializer, _storable(value), max_bytes=ctx.settings.max_checkpoint_bytes,
                  what="task result", run_id=ctx.run_id)
    ensure_held(ctx.run_id)
    if not ctx.store.finish(ctx.run_id, ctx.token, status=RunStatus.SUCCEEDED, result=text,
                            retention=ctx.settings.result_retention):
        raise LeaseLost()
    notify_parent(ctx.task.app, ctx.store, ctx.parent)
    if signals.run_succeeded.receivers:
        result = decode(ctx.serializer, text, what="task result", run_id=ctx.run_id)
        signals.run_succeeded.send(sender=ctx.task, run_id=ctx.run_id, task=ctx.task.name,
                                   result=result)
    return value


def fail(ctx: RunContext, exc: Exception) -> None:
    """Dead-letter the run: FAILED, with its checkpoints, error and traceback kept."""
    if isinstance(exc, StepFailedError):
        error = ErrorInfo(exc.error_type, exc.error_message, exc.traceback)
        failed_step = exc.step
    else:
        error = ErrorInfo.from_exception(exc, traceback.format_exc())
        failed_step = exc.step if isinstance(exc, DurableError) else None
    error = error.redacted(ctx.settings.redact_names)  # durable_redact
    if isinstance(exc, SerializationError | StepFailedError):
        logger.error("run %s failed: %s", ctx.run_id, exc)
    if not ctx.store.finish(ctx.run_id, ctx.token, status=RunStatus.FAILED, error=error,
                            failed_step=failed_step):
        raise LeaseLost() from exc
    announce_dead_letter(ctx.task.app, ctx.store, run_id=ctx.run_id, task=ctx.task.name,
                         parent=ctx.parent, error=error, failed_step=failed_step)


def autoretry(ctx: RunContext, exc: Exception) -> None:
    """Celery's ``autoretry_for``, for an exception the body raised between its steps.

    As Celery's own wrapper does: an exception in ``autoretry_for`` (and not in
    ``dont_autoretry_for``) calls ``self.retry(exc=exc, **retry_kwargs)`` with
    the ``retry_backoff`` countdown, which raises ``Retry`` (the run resumes
    after its last completed step) or, once ``max_retries`` is spent, the
    exception itself. Returns only when the exception is not retried. A
    failed step has had its own retries: it is never retried again here.
    """
    task = ctx.task
    retry_for = tuple(getattr(task, "autoretry_for", ()) or ())
    if not retry_for or isinstance(exc, DurableError) or not isinstance(exc, retry_for):
        return
    if isinstance(exc, tuple(getattr(task, "dont_autoretry_for", ()) or ())):
        return
    options = dict(getattr(task, "retry_kwargs", None) or {})
    backoff = float(getattr(task, "retry_backoff", False) or 0)
    if backoff:
        options["countdown"] = get_exponential_backoff_interval(
            factor=int(max(1.0, backoff)), retries=task.request.retries,
            maximum=int(getattr(task, "retry_backoff_max", 600)),
            full_jitter=getattr(task, "retry_jitter", True))
    raise task.retry(exc=exc, **options)


def retry_delay(when: Any) -> float:
    """Seconds until ``when`` (a countdown, or an ``eta`` datetime), never negative."""
    if isinstance(when, dt.datetime):
        now = dt.datetime.now(when.tzinfo or dt.timezone.utc)
        return max(0.0, (when - now).total_seconds())
    return max(0.0, float(when or 0))


def celery_retry(ctx: RunContext, exc: Retry) -> NoReturn:
    """The body called ``self.retry()``: park the run for its next delivery and re-raise.

    Celery has sent the retry message (with the countdown), unless the delay is
    longer than ``durable_max_countdown`` (then ``DurableTask.retry`` kept it
    back and the store's timer publishes it when due). Either way exactly one
    message follows, carrying ``self.retry``'s arguments, which the run now
    stores (its next delivery runs with them). In eager mode Celery's ``apply``
    runs the retry at once.
    """
    delay = retry_delay(exc.when)
    sig = exc.sig
    new: dict[str, Any] = {}
    if sig is not None:
        max_bytes = ctx.settings.max_checkpoint_bytes
        new["args"] = encode(ctx.serializer, list(sig.args), max_bytes=max_bytes,
                             what="retry arguments", run_id=ctx.run_id)
        new["kwargs"] = encode(ctx.serializer, dict(sig.kwargs), max_bytes=max_bytes,
                               what="retry keyword arguments", run_id=ctx.run_id)
        new["options"] = {**message_options(sig.options), "retries": sig.options.get("retries")}
    grace = float(ctx.settings.requeue_grace)
    if ctx.eager or delay <= ctx.settings.max_countdown:
        parked = ctx.store.park(ctx.run_id, ctx.token, status=RunStatus.RETRYING, delay=0.0,
                                due_in=(0.0 if ctx.eager else delay) + grace, **new)
    else:
        parked = ctx.store.park(ctx.run_id, ctx.token, status=RunStatus.RETRYING, delay=delay,
                                due_in=delay, **new)
    if not parked:
        raise LeaseLost() from exc
    raise exc


def step_retry(ctx: RunContext, args: tuple[Any, ...], kwargs: dict[str, Any],
               signal: Reenqueue) -> Any:
    """A step failed and is retried later (the run is parked): re-enqueue, end as RETRY.

    A delay up to ``durable_max_countdown`` is sent as the message's countdown;
    a longer one waits in the store and the sweeper publishes the run when due.
    In eager mode the next attempt runs at once (there is no worker to deliver it).
    """
    task, request = ctx.task, ctx.task.request
    if ctx.eager:
        return task.apply(args=args, kwargs=kwargs, task_id=ctx.run_id,
                          retries=request.retries + 1).get(disable_sync_subtasks=False)
    if signal.broker:
        sig = task.signature_from_request(request, args, kwargs, countdown=signal.delay,
                                          retries=request.retries + 1)
        # Celery's own apply_async: the run is in the store already, so not registered
        # again (DurableTask.apply_async would spend a store round trip on it).
        Task.apply_async(task, sig.args, sig.kwargs,
                         **pinned(task.app, task.name, ctx.run_version, sig.options))
    raise Retry(exc=signal.cause, when=signal.delay) from None


def ignored(ctx: RunContext, exc: Ignore) -> NoReturn:
    """The body raised Celery's ``Ignore``: the delivery ends with no state change in Celery.

    The run ends too (it would otherwise be recovered and run again): a run
    handed over by ``self.replace()`` is REPLACED already; any other becomes
    CANCELLED, its error saying the task ignored itself. Celery's result
    backend is left as it is, as Celery leaves it.
    """
    if not ctx.handed_over:
        error = ErrorInfo.from_exception(exc)
        error.message = f"the task raised Ignore: {error.message}".rstrip(": ")
        ensure_held(ctx.run_id)
        if not ctx.store.finish(ctx.run_id, ctx.token, status=RunStatus.CANCELLED,
                                error=error, retention=ctx.settings.result_retention):
            raise LeaseLost() from exc
        notify_parent(ctx.task.app, ctx.store, ctx.parent)
    raise exc


def hand_over(ctx: RunContext) -> None:
    """``self.replace(sig)``: the run ends REPLACED before its replacement is sent.

    The replacement takes the run's task id (Celery freezes it so); when it is
    a durable task, its ``apply_async`` registers a new run in place of this
    finished one.
    """
    ensure_held(ctx.run_id)
    if not ctx.store.finish(ctx.run_id, ctx.token, status=RunStatus.REPLACED,
                            retention=ctx.settings.result_retention):
        raise LeaseLost()
    ctx.handed_over = True
    notify_parent(ctx.task.app, ctx.store, ctx.parent)


def rejected(ctx: RunContext, exc: Reject) -> NoReturn:
    """The body raised Celery's ``Reject``: the broker gets the message back, or drops it.

    With ``requeue=True`` the run is released (PENDING) for the redelivery, which
    resumes after its last completed step; without, the message is gone, so the
    run is dead-lettered with the rejection as its error.
    """
    if exc.requeue:
        if not ctx.store.park(ctx.run_id, ctx.token, status=RunStatus.PENDING, delay=0.0,
                              due_in=float(ctx.settings.requeue_grace)):
            raise LeaseLost() from exc
    else:
        fail(ctx, exc)
    raise exc


def report_finished(task: Task, run: RunRecord, serializer: Serializer) -> Any:
    """A delivery of a finished run: report its outcome if the result backend lacks it.

    The worker that finished the run may have died before Celery stored the
    result; without this its redelivery would be ignored and
    ``AsyncResult.get()`` would wait forever. Otherwise the delivery is ignored,
    as it is for a cancelled or replaced run (its id may belong to the replacement).
    """
    if (run.status in (RunStatus.CANCELLED, RunStatus.REPLACED) or task.ignore_result
            or isinstance(task.backend, DisabledBackend) or task.AsyncResult(run.id).ready()):
        logger.info("run %s: delivery ignored (finished, status %s)", run.id, run.status)
        raise Ignore()
    logger.info("run %s: %s in the store but not in the result backend; reporting it",
                run.id, run.status)
    if run.status is RunStatus.SUCCEEDED:
        return decode(serializer, run.result or "null", what="task result", run_id=run.id)
    err = run.error or ErrorInfo("unknown", "")
    if err.type.endswith("WorkerLostError"):
        raise WorkerLostError(f"run {run.id}: {err.message}", run_id=run.id)
    raise StepFailedError(f"run {run.id} failed: {err.type}: {err.message}", run_id=run.id,
                          step=run.failed_step, error_type=err.type, error_message=err.message,
                          traceback=err.traceback)


def time_limit_exceeded(task: Task, run_id: str, *, worker_pid: int | None, retries: int,
                        timeout: float) -> None:
    """A hard time limit killed the pool process running ``run_id``: a failed attempt.

    Called in the worker's main process, where Celery has recorded the failure.
    The run (still RUNNING under the killed process's lease) is retried under
    the task's policy (``TimeLimitExceeded`` counts as an attempt; the message's
    ``retries`` count the attempts), else dead-lettered. It is never counted as
    a lost worker, so the sweeper does not run it again and again.
    """
    app = task.app
    store = get_store(app)
    settings = settings_for(app)
    run = store.get_runs([run_id])[0]
    if run is None or run.status is not RunStatus.RUNNING:
        return
    if worker_pid is not None and run.owner.split(":")[1:2] != [str(worker_pid)]:
        return  # another delivery holds it now
    exc = TimeLimitExceeded(timeout)
    delay = task_policy(task).decide(exc, retries + 1)
    if delay is None:
        error = ErrorInfo.from_exception(exc)
        if store.finish(run_id, run.token, status=RunStatus.FAILED, error=error):
            logger.error("run %s dead-lettered: hard time limit (%ss) exceeded", run_id, timeout)
            announce_dead_letter(app, store, run_id=run_id, task=run.task, parent=run.parent,
                                 error=error, failed_step=None)
        return
    broker = delay <= settings.max_countdown
    options = {**run.options, "retries": retries + 1}
    if not store.park(run_id, run.token, status=RunStatus.RETRYING,
                      delay=0.0 if broker else delay,
                      due_in=delay + float(settings.requeue_grace) if broker else delay,
                      options=options):
        return
    logger.warning("run %s: hard time limit (%ss) exceeded; retry in %ss", run_id, timeout,
                   delay)
    if broker:
        run.options = options
        publish_run(app, run, countdown=delay)
