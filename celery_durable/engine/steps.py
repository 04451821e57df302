"""``@step``: checkpointed calls inside a durable run, and their replay.

Every step call inside a run gets a key (its name plus an occurrence
counter: ``charge#0``, ``poll#3``) and a position. If the run's checkpoints
hold that position, the recorded value is returned (or the recorded failure
raised) without calling the function; otherwise the function runs and its
outcome is written before the body continues. Outside a run a step is a
plain function call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, TypeVar, overload

from .. import signals
from ..errors import (
    CorruptCheckpointError,
    DurableError,
    PermanentError,
    SerializationError,
    StepFailedError,
)
from ..records import ErrorInfo, RunStatus, StepRecord, StepStatus
from ..retry import FOREVER, Backoff, RetryPolicy, as_backoff, merge
from ..serialization import decode, encode
from ..stores.atomic import FEATURE as ATOMIC_FEATURE
from ..stores.atomic import AtomicCheckpoint, AtomicSteps, eager_transaction
from . import _testhooks, steplogs
from ._flow import HistoryEnded, LeaseLost, Reenqueue
from .context import (
    RunContext,
    active_run,
    current_loop,
    current_step,
    require_step_context,
)
from .context import StepContext as _BaseStepContext
from .divergence import diverged
from .leases import ensure_held
from .metadata import RunMetadata

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class StepContext(_BaseStepContext):
    """What a step can know about itself while it runs (``step.context()``): run id, key,
    attempt, position, ``idempotency_key`` and the run's ``metadata``."""

    @property
    def metadata(self) -> RunMetadata:
        """The run's metadata, to report progress: ``metadata["page"] = "3 of 10"``."""
        return RunMetadata()
MAX_TRACEBACK = 32 * 1024


def _qualified(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _failed(ctx: RunContext, record: StepRecord) -> StepFailedError:
    err = record.error or ErrorInfo("unknown", "")
    return StepFailedError(
        f"run {ctx.run_id}: step {record.key} failed after {record.attempts} attempt(s): "
        f"{err.type}: {err.message}", run_id=ctx.run_id, step=record.key,
        error_type=err.type, error_message=err.message, traceback=err.traceback,
        attempts=record.attempts)


def recorded_at(ctx: RunContext, position: int) -> StepRecord | None:
    """The checkpoint at ``position``, or None; an unreadable one ends the run even if the
    body catches the error (``ctx.fatal``): nothing may run on top of it."""
    try:
        return ctx.checkpoints.get(position)
    except CorruptCheckpointError as unreadable:
        ctx.fatal = unreadable
        raise


def write_checkpoint(ctx: RunContext, record: StepRecord) -> None:
    """Write ``record`` under the run's lease (LeaseLost if refused) and keep it for replay
    (a crash boundary of ``assert_resumable``, as a step's checkpoint is)."""
    if not ctx.store.save_step(ctx.run_id, ctx.token, record):
        raise LeaseLost()
    if _testhooks.active is not None:
        _testhooks.active.checkpointed(ctx.run_id, record.position)
    ctx.checkpoints[record.position] = record


def _replay(ctx: RunContext, position: int, key: str) -> StepRecord | None:
    """The recorded outcome at ``position``, after checking it is the same step.

    An unreadable or foreign record ends the run even if the body catches the
    error (``ctx.fatal``): nothing may run on top of it.
    """
    record = recorded_at(ctx, position)
    if record is not None and record.key != key:
        exc = diverged(ctx, position, record.key, key)
        ctx.fatal = exc
        raise exc
    return record


def _step_transaction(ctx: RunContext, key: str) -> AbstractContextManager[Any]:
    """The transaction of one attempt of a transactional step (``atomic=True``): the
    store's (its ``save`` writes the checkpoint in it); in eager mode on another store
    Django's ``transaction.atomic()`` if installed (without the checkpoint), else none.
    Elsewhere, and in an async body: a clear error, before the step runs."""
    if current_loop.get() is not None:  # its transaction would be on another thread's
        raise DurableError(f"run {ctx.run_id}: step {key}: atomic=True steps cannot run in "
                           "an async def durable task yet (make the task's body a plain "
                           "function, or the step a plain one)", run_id=ctx.run_id, step=key)
    store = getattr(ctx.store, "wrapped", ctx.store)
    if isinstance(store, AtomicSteps):
        return store.atomic_step(ctx.run_id, ctx.token)
    if ctx.eager:
        return eager_transaction() or contextlib.nullcontext()
    raise DurableError(f"run {ctx.run_id}: step {key}: atomic=True needs {ATOMIC_FEATURE}; "
                       f"{type(store).__name__} keeps checkpoints elsewhere (use the Django "
                       "store, or make this a plain step)", run_id=ctx.run_id, step=key)


def _call(ctx: RunContext, fn: Callable[..., Any], args: tuple[Any, ...],
          kwargs: dict[str, Any], position: int, key: str) -> str:
    """Call a step's function; its value, encoded for the checkpoint."""
    value = fn(*args, **kwargs)
    if type(value) is CoroutineType:
        _forgot_await(ctx, value, key)
    return encoded(ctx, value, position, key)


def encoded(ctx: RunContext, value: Any, position: int, key: str) -> str:
    """The value step ``key`` returned, encoded for its checkpoint (its execution logged to
    the test hooks' ledger first)."""
    if _testhooks.active is not None:
        _testhooks.active.executed(ctx.run_id, position, key)
    return encode(ctx.serializer, value, max_bytes=ctx.settings.max_checkpoint_bytes,
                  what=f"result of step {key}", run_id=ctx.run_id, step=key)


def _forgot_await(ctx: RunContext, value: CoroutineType[Any, Any, Any], key: str) -> None:
    """A sync step returned a coroutine (an ``await`` forgotten in it): fail the step for
    good, naming it, instead of checkpointing the coroutine's repr."""
    what = getattr(value, "__qualname__", "a coroutine")
    value.close()  # never awaited, on purpose: no "was never awaited" warning
    raise PermanentError(f"step {key} returned the coroutine {what}() "
                         "instead of a value: await it inside the step (make the step "
                         "`async def` and await it from an async durable task)",
                         run_id=ctx.run_id, step=key)


def _call_in_transaction(ctx: RunContext, tx: AbstractContextManager[Any],
                         fn: Callable[..., Any], args: tuple[Any, ...],
                         kwargs: dict[str, Any], pending: StepRecord
                         ) -> tuple[str, StepRecord | None]:
    """Call a transactional step's function in ``tx`` and write its checkpoint
    (``pending`` with the value) before the commit; the encoded value and the record
    written (None in eager mode on a store without transactions: written after, as for a
    plain step)."""
    with tx as checkpoint:
        text = _call(ctx, fn, args, kwargs, pending.position, pending.key)
        if not isinstance(checkpoint, AtomicCheckpoint):
            return text, None
        done = dataclasses.replace(pending, value=text, finished_at=time.time())
        if not checkpoint.save(done):
            raise LeaseLost()
        if _testhooks.active is not None:
            _testhooks.active.before_commit(ctx.run_id, pending.position)
    return text, done


def run_step(ctx: RunContext, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any], options: dict[str, Any], atomic: bool = False) -> Any:
    """Execute or replay one step call of the run ``ctx`` (in one transaction with its
    checkpoint when ``atomic``: see celery_durable/stores/atomic.py)."""
    if ctx.fatal is not None:  # the body caught an error that ends the run: nothing more runs
        raise ctx.fatal
    ensure_held(ctx.run_id)
    position, key = ctx.next_key(name)
    recorded = ctx.replayed(position, key)
    if recorded is not None:  # the usual replay: a success of this very step
        return _value(ctx, recorded, key)
    attempt, text = pending(ctx, position, key)
    if text is not None:
        return _value(ctx, text, key)
    tx = _step_transaction(ctx, key) if atomic else None
    step_ctx = StepContext(ctx.run_id, key, attempt, position)
    if signals.step_started.receivers:
        announce_start(ctx, name, step_ctx)
    reset = current_step.set(step_ctx)
    lines = steplogs.start(ctx.settings.step_log_lines)
    started = time.time()
    done: StepRecord | None = None
    try:
        if tx is None:
            text = _call(ctx, fn, args, kwargs, position, key)
        else:
            text, done = _call_in_transaction(ctx, tx, fn, args, kwargs,
                                              StepRecord(position, key, name,
                                                         StepStatus.SUCCEEDED, attempt,
                                                         started_at=started, atomic=True))
    except (Reenqueue, LeaseLost):
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        failed = failure(ctx, exc, lines, name, step_ctx, started, atomic)
        if isinstance(exc, Exception):
            return _on_error(ctx, exc, failed, options)
        _record_exit(ctx, failed)
        raise  # the process exits as asked (sys.exit, a SIGTERM from revoke(terminate=True))
    finally:
        current_step.reset(reset)
        steplogs.stop(lines)
    return succeeded(ctx, name, step_ctx, started, text, done)


def pending(ctx: RunContext, position: int, key: str) -> tuple[int, str | None]:
    """Past the fast replay: ``(0, value text)`` for a recorded success, else ``(attempt
    number, None)`` for a step to run now; a recorded failure raises it (and the end of a
    replayed history ``HistoryEnded``)."""
    record = _replay(ctx, position, key)
    if record is not None and record.status is StepStatus.SUCCEEDED:
        return 0, record.value or "null"
    if record is not None and record.status is StepStatus.FAILED:
        raise _failed(ctx, record)
    if ctx.replay_only:
        raise HistoryEnded(f"step {key} at position {position} has no checkpoint", position)
    return (record.attempts if record is not None else 0) + 1, None


def announce_start(ctx: RunContext, name: str, step_ctx: _BaseStepContext) -> None:
    """Send ``step_started`` (only called with receivers)."""
    signals.step_started.send(sender=ctx.task, run_id=ctx.run_id, task=ctx.task.name,
                              step=step_ctx.key, name=name, attempt=step_ctx.attempt,
                              position=step_ctx.position)


def failure(ctx: RunContext, exc: BaseException, lines: Any, name: str,
            step_ctx: _BaseStepContext, started: float, atomic: bool = False) -> StepRecord:
    """The FAILED record of the attempt ``step_ctx`` that raised ``exc`` (called in its
    ``except`` block: the traceback is the current one), with its log lines, redacted."""
    error = ErrorInfo.from_exception(exc, traceback.format_exc()[-MAX_TRACEBACK:])
    if lines is not None:
        error.logs = list(lines)
    error = error.redacted(ctx.settings.redact_names)  # durable_redact
    return StepRecord(step_ctx.position, step_ctx.key, name, StepStatus.FAILED,
                      step_ctx.attempt, started_at=started, finished_at=time.time(),
                      error=error, atomic=atomic)


def succeeded(ctx: RunContext, name: str, step_ctx: _BaseStepContext, started: float,
              text: str, done: StepRecord | None = None) -> Any:
    """Write the checkpoint of the successful attempt ``step_ctx`` (unless ``done``, written
    already in the step's transaction) and return its value."""
    position, key, attempt = step_ctx.position, step_ctx.key, step_ctx.attempt
    if done is None:
        done = StepRecord(position, key, name, StepStatus.SUCCEEDED, attempt, value=text,
                          started_at=started, finished_at=time.time())
        if not ctx.store.save_step(ctx.run_id, ctx.token, done):
            raise LeaseLost()
    if _testhooks.active is not None:
        _testhooks.active.checkpointed(ctx.run_id, position)
    ctx.checkpoints[position] = done
    if signals.step_succeeded.receivers:
        signals.step_succeeded.send(sender=ctx.task, run_id=ctx.run_id, task=ctx.task.name,
                                    step=key, name=name, attempt=attempt, position=position,
                                    duration=(done.finished_at or started) - started)
    return _value(ctx, text, key)


def _record_exit(ctx: RunContext, record: StepRecord) -> None:
    """``SystemExit``/``KeyboardInterrupt`` from a step's code: the step failed for good.

    Recorded (if the lease still holds) before the exit goes on, so the next
    delivery dead-letters the run naming this step and its cause, instead of
    running it again and again as a lost worker.
    """
    try:
        if ctx.store.save_step(ctx.run_id, ctx.token, record):
            ctx.checkpoints[record.position] = record
    except Exception:  # exiting anyway; the next delivery retries the step
        pass


def _value(ctx: RunContext, text: str, key: str) -> Any:
    """The step's recorded value; a corrupt one raises the error :func:`decode` words.

    The fast path (every replayed step) builds no error text.
    """
    try:
        return ctx.serializer.loads(text)
    except Exception:
        return decode(ctx.serializer, text, what=f"value of step {key}", run_id=ctx.run_id,
                      step=key)


def _send_failure(signal: Any, ctx: RunContext, exc: BaseException, record: StepRecord,
                  **extra: Any) -> None:
    """Send ``step_failed`` / ``step_retrying`` for ``record`` (only called with receivers)."""
    duration = ((record.finished_at or 0.0) - record.started_at) if record.started_at else 0.0
    signal.send(sender=ctx.task, run_id=ctx.run_id, task=ctx.task.name, step=record.key,
                name=record.name, attempt=record.attempts, position=record.position, error=exc,
                duration=duration, logs=list(record.error.logs) if record.error else [],
                **extra)


def _on_error(ctx: RunContext, exc: BaseException, record: StepRecord,
              options: dict[str, Any]) -> Any:
    """Retry the step later (re-enqueue the run) or record its failure and raise it.

    A value that cannot be stored fails the step at once: retrying cannot change it.
    """
    policy = merge(options, ctx.policy) if options else ctx.policy
    delay = None if isinstance(exc, SerializationError) else policy.decide(exc, record.attempts)
    record.max_attempts = policy.max_attempts if policy.max_attempts < FOREVER else None
    if delay is None:
        if not ctx.store.save_step(ctx.run_id, ctx.token, record):
            raise LeaseLost() from exc
        ctx.checkpoints[record.position] = record
        if signals.step_failed.receivers:
            _send_failure(signals.step_failed, ctx, exc, record)
        raise _failed(ctx, record) from exc
    record.status = StepStatus.RETRYING
    record.retry_delay = delay
    broker_countdown = delay <= ctx.settings.max_countdown
    wait = 0.0 if ctx.eager else delay
    due_in = wait + ctx.settings.requeue_grace if broker_countdown else wait
    if not ctx.store.park(ctx.run_id, ctx.token, status=RunStatus.RETRYING, delay=wait,
                          due_in=due_in, step=record):
        raise LeaseLost() from exc
    if signals.step_retrying.receivers:
        _send_failure(signals.step_retrying, ctx, exc, record, delay=delay)
    raise Reenqueue(wait, exc, broker=broker_countdown)


class _StepFunction:
    """A function wrapped by ``@step``: checkpointed inside a run, plain outside."""

    def __init__(self, fn: Callable[..., Any], name: str | None, options: dict[str, Any],
                 atomic: bool = False):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.step_name = name or _qualified(fn)
        self.options = options
        self.atomic = atomic

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = active_run()
        if ctx is None or current_step.get() is not None:
            return self.fn(*args, **kwargs)
        return run_step(ctx, self.step_name, self.fn, args, kwargs, self.options, self.atomic)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return functools.partial(self.__call__, obj)


class _AsyncStepFunction(_StepFunction):
    """An ``async def`` function wrapped by ``@step``: awaiting it inside an async durable
    task is checkpointed (see :mod:`.async_steps`); outside a run it is the plain coroutine."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = active_run()
        if ctx is None or current_step.get() is not None:
            return self.fn(*args, **kwargs)
        steps = current_loop.get()
        if steps is None:
            raise DurableError(
                f"run {ctx.run_id}: step {self.step_name} is async def: await it from an "
                "async def durable task (this task's body is a plain function)",
                run_id=ctx.run_id, step=self.step_name)
        return steps.step(ctx, self.step_name, self.fn, args, kwargs, self.options)


def _wrap(fn: Callable[..., Any], name: str | None, options: dict[str, Any],
          atomic: bool) -> _StepFunction:
    """The step wrapping ``fn``: async for an ``async def`` function."""
    if not inspect.iscoroutinefunction(fn):
        return _StepFunction(fn, name, options, atomic)
    if atomic:
        raise ValueError(f"@step(atomic=True) is not supported on the async def function "
                         f"{_qualified(fn)} yet")
    return _AsyncStepFunction(fn, name, options)


def _options(max_attempts: int | None, retry_on: Any, no_retry_on: Any,
             backoff: Backoff | float | None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if max_attempts is not None:
        opts["max_attempts"] = int(max_attempts)
    if retry_on is not None:
        opts["retry_on"] = tuple(retry_on) if isinstance(retry_on, (list, tuple)) else (retry_on,)
    if no_retry_on is not None:
        opts["no_retry_on"] = (tuple(no_retry_on) if isinstance(no_retry_on, (list, tuple))
                               else (no_retry_on,))
    if backoff is not None:
        opts["backoff"] = as_backoff(backoff)
    return opts


class _StepAPI:
    """The ``step`` object: a decorator, plus ``step.run`` and ``step.context``."""

    @overload
    def __call__(self, fn: F, /) -> F: ...

    @overload
    def __call__(self, *, name: str | None = ..., max_attempts: int | None = ...,
                 retry_on: Any = ..., no_retry_on: Any = ...,
                 backoff: Backoff | float | None = ..., atomic: bool = ...
                 ) -> Callable[[F], F]: ...

    def __call__(self, fn: Any = None, /, *, name: str | None = None,  # type: ignore[misc]
                 max_attempts: int | None = None, retry_on: Any = None,
                 no_retry_on: Any = None, backoff: Backoff | float | None = None,
                 atomic: bool = False) -> Any:
        """Decorate a function as a step: ``@step`` or ``@step(name=..., max_attempts=...)``;
        ``atomic=True``: its database writes and its checkpoint commit in one transaction
        (the Django store; see docs/steps-and-replay.md)."""
        options = _options(max_attempts, retry_on, no_retry_on, backoff)
        if fn is not None:
            return _wrap(fn, name, options, atomic)
        return lambda f: _wrap(f, name, options, atomic)

    def run(self, name: str, fn: Callable[..., Any], /, *args: Any, atomic: bool = False,
            **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` as a step named ``name`` (``atomic``: see ``@step``;
        the keyword is step.run's, not passed to ``fn``). In an async body an ``async def``
        ``fn`` gives an awaitable step, as ``@step`` on it does."""
        ctx = active_run()
        if ctx is None or current_step.get() is not None:
            return fn(*args, **kwargs)
        if current_loop.get() is not None and inspect.iscoroutinefunction(fn):
            return _wrap(fn, name, {}, atomic)(*args, **kwargs)  # awaited by the async body
        return run_step(ctx, name, fn, args, kwargs, {}, atomic)

    @staticmethod
    def context() -> StepContext:
        """The running step's :class:`StepContext` (run id, key, attempt, idempotency key)."""
        ctx = require_step_context()
        if isinstance(ctx, StepContext):
            return ctx
        return StepContext(ctx.run_id, ctx.key, ctx.attempt, ctx.position)


step = _StepAPI()
"""Mark a function as a checkpointed step; see :class:`_StepAPI`."""

__all__ = ["RetryPolicy", "StepContext", "recorded_at", "run_step", "step", "write_checkpoint"]
