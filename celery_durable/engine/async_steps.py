"""``async def`` durable tasks and steps: an event loop per delivery, steps run at once.

An async body runs in an event loop of its own, made for its delivery in the
worker's thread (``asyncio.run``) and closed when the delivery ends. Its async
steps are checkpointed as sync ones are (:func:`.steps.run_step`: the same keys,
positions, retry policy and ``step.context()``), and several may execute at once
(``asyncio.gather``), at most ``max_parallel_steps`` of one delivery at a time.

* A step's key and position are those of its branch, the asyncio task that calls
  it (:mod:`.branches`): ``asyncio.gather(fetch(a), fetch(b))`` records
  ``fetch#0@0`` and ``fetch#0@1``, so a replay hands each recorded value back to
  the awaiter of that very call, whatever order the branches reach their steps in.
* A failed attempt is handled (recorded, or the run parked for its retry) only
  once no other step of the delivery is executing: the steps in flight finish
  and write their checkpoints first, and steps not yet started wait meanwhile.
  The retry delivery replays the finished ones and runs only the missing ones.
* An ``asyncio.CancelledError`` raised inside a step is a failure of that step,
  unless the step's task itself was cancelled (the body or the loop's shutdown
  cancelled it: nothing is recorded) or the run lost its lease (a cancel).

Checkpoints are written by the store's ordinary (blocking) calls; those of steps that
finish in the same turn of the loop in one call (``save_steps``: one round trip on Redis).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import signals
from ..records import StepRecord, StepStatus
from . import green, soft_limit, steplogs
from ._flow import ControlSignal, LeaseLost, Reenqueue
from .branches import Branches
from .context import RunContext, current_loop, current_run, current_step
from .leases import ensure_held, lease_lost
from .steps import (
    StepContext,
    _on_error,
    _record_exit,
    _value,
    announce_start,
    encoded,
    failure,
    pending,
    recorded_at,
    succeeded,
)

#: The default of ``@durable_task(max_parallel_steps=...)``: how many async steps of one
#: delivery may execute at the same time.
MAX_PARALLEL_STEPS = 16


class Delivery:
    """The async steps of one delivery: their slots and the handling of failed attempts."""

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        #: Set (and replaced) whenever ``running``, ``failing`` or ``parked`` changes.
        self.changed = asyncio.Event()
        #: Attempts executing now, and failed ones waiting for them to finish.
        self.running = 0
        self.failing = 0
        #: The retry that parked the run (no more steps start in this delivery).
        self.parked: Reenqueue | None = None
        #: Successes waiting to be written together (see :meth:`_checkpoint`).
        self.batch: list[tuple[StepRecord, asyncio.Future[bool]]] = []
        #: The tasks whose step function is executing now, the body's own task, and what
        #: interrupted them (Celery's soft time limit: :mod:`.soft_limit`).
        self.executing: set[asyncio.Future[Any]] = set()
        self.body: asyncio.Future[Any] | None = None
        self.interrupted: BaseException | None = None
        self.interrupting: set[asyncio.Future[Any]] = set()

    def interrupt(self, exc: BaseException) -> None:
        """Fail every step attempt in flight with ``exc``; with none, raise it in the body."""
        self.interrupted = exc
        self.interrupting = set(self.executing) or ({self.body} if self.body else set())
        for task in self.interrupting:
            task.cancel()

    def withdrawn(self, task: asyncio.Future[Any] | None) -> bool:
        """True if :meth:`interrupt` cancelled ``task`` (the cancellation is withdrawn)."""
        if task not in self.interrupting:
            return False
        self.interrupting.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        return True

    def step(self, ctx: RunContext, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any], options: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        """The coroutine that executes or replays one call of the async step ``name``."""
        return self._step(ctx, name, fn, args, kwargs, options)

    async def _step(self, ctx: RunContext, name: str, fn: Callable[..., Any],
                    args: tuple[Any, ...], kwargs: dict[str, Any],
                    options: dict[str, Any]) -> Any:
        if ctx.fatal is not None:  # the body caught an error that ends the run
            raise ctx.fatal
        ensure_held(ctx.run_id)
        position, key = ctx.next_key(name)  # at the start, before waiting for a slot
        recorded = ctx.replayed(position, key)
        if recorded is not None:
            return _value(ctx, recorded, key)
        attempt, text = pending(ctx, position, key)
        if text is not None:
            return _value(ctx, text, key)
        async with self.slots:
            await self._until(lambda: self.failing == 0 or self.parked is not None)
            if self.parked is not None:  # a failure parked the run meanwhile: start nothing
                raise self.parked
            ensure_held(ctx.run_id)  # (it may have waited)
            self.running += 1
            return await self._attempt(ctx, name, fn, args, kwargs, options,
                                       StepContext(ctx.run_id, key, attempt, position))

    async def _checkpoint(self, ctx: RunContext, record: StepRecord) -> None:
        """Write the success ``record``: the checkpoints of steps that finish in the same
        turn of the loop go to the store together (one round trip on Redis)."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[bool] = loop.create_future()
        self.batch.append((record, written))
        if len(self.batch) == 1:
            loop.call_soon(self._flush, ctx)
        if not await written:
            raise LeaseLost()

    def _flush(self, ctx: RunContext) -> None:
        # A step cancelled while its checkpoint waited (``wait_for``, the loop's shutdown)
        # records nothing: its entry is left out.
        batch = [(record, written) for record, written in self.batch if not written.done()]
        self.batch = []
        if not batch:
            return
        try:
            records = [record for record, _ in batch]
            saved = (ctx.store.save_steps(ctx.run_id, ctx.token, records) if len(records) > 1
                     else [ctx.store.save_step(ctx.run_id, ctx.token, records[0])])
        except BaseException as exc:  # an outage: each step's awaiter raises it
            for _, written in batch:
                if not written.done():
                    written.set_exception(exc)
            return
        for (_, written), ok in zip(batch, saved, strict=True):
            if not written.done():
                written.set_result(ok)

    def _notify(self) -> None:
        """Wake every waiter of :meth:`_until` (no lock, no await: safe in ``finally``)."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self.changed.wait()

    async def _attempt(self, ctx: RunContext, name: str, fn: Callable[..., Any],
                       args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any],
                       step_ctx: StepContext) -> Any:
        """Run one attempt (``self.running`` counts it); checkpoint it or hand on its failure."""
        failed: StepRecord | None = None
        error: BaseException | None = None
        try:
            if signals.step_started.receivers:
                announce_start(ctx, name, step_ctx)
            reset = current_step.set(step_ctx)
            lines = steplogs.start(ctx.settings.step_log_lines)
            started = time.time()
            task = asyncio.current_task()
            assert task is not None  # (a step's coroutine runs in a task)
            try:
                self.executing.add(task)
                try:
                    value = await fn(*args, **kwargs)
                finally:
                    self.executing.discard(task)
                text = encoded(ctx, value, step_ctx.position, step_ctx.key)
            except (Reenqueue, LeaseLost):
                raise
            except asyncio.CancelledError as exc:
                error = self.interrupted if self.withdrawn(task) else exc  # a soft time limit
                if error is exc and _cancelled_from_outside():
                    raise  # the body or the loop's shutdown cancelled it: record nothing
                if error is exc and lease_lost(ctx.run_id):
                    raise LeaseLost() from exc  # the run was cancelled (or taken over)
                assert error is not None
                failed = failure(ctx, error, lines, name, step_ctx, started)
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                failed, error = failure(ctx, exc, lines, name, step_ctx, started), exc
                if not isinstance(exc, Exception):
                    _record_exit(ctx, failed)
                    raise  # the process exits as asked
            finally:
                current_step.reset(reset)
                steplogs.stop(lines)
            if failed is None:
                done = StepRecord(step_ctx.position, step_ctx.key, name, StepStatus.SUCCEEDED,
                                  step_ctx.attempt, value=text, started_at=started,
                                  finished_at=time.time())
                await self._checkpoint(ctx, done)
                value = succeeded(ctx, name, step_ctx, started, text, done)
            else:
                self.failing += 1  # now, so that no other step starts meanwhile
        finally:
            self.running -= 1
            self._notify()  # a failure may be waiting for the steps in flight
        if failed is None:
            return value
        assert error is not None
        return await self._handle_failure(ctx, error, failed, options)

    async def _handle_failure(self, ctx: RunContext, exc: BaseException, record: StepRecord,
                              options: dict[str, Any]) -> Any:
        """Once no step executes: record the failure or park the run for its retry."""
        try:
            await self._until(lambda: self.running == 0)
            if self.parked is not None:  # another failure parked the run already
                raise Reenqueue(self.parked.delay, exc, broker=self.parked.broker)
            try:
                return _on_error(ctx, exc, record, options)
            except Reenqueue as parked:
                self.parked = parked
                raise
        finally:
            self.failing -= 1
            self._notify()


def _cancelled_from_outside() -> bool:
    """True if the running task was cancelled (by its awaiter, the body or the loop's
    shutdown), not just handed a CancelledError by the step's own code. Before Python
    3.11 (no ``Task.cancelling``) every CancelledError counts as such."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or bool(cancelling())


def delivery_body(task: Any) -> Callable[..., Any]:
    """The task's body as a delivery (or a replay of its history) calls it: the user's
    function unwrapped (Celery wraps ``run`` for ``autoretry_for``; retries are ours), in an
    event loop of its own when it is ``async def``."""
    body: Callable[..., Any] = task.__dict__.get("_orig_run") or task.run
    if getattr(task, "_async_body", False):
        return body_runner(body, task.max_parallel_steps)
    return body


def body_runner(fn: Callable[..., Any], limit: int) -> Callable[..., Any]:
    """A plain callable that runs the ``async def`` body ``fn`` to its end in an event loop
    of its own per call, at most ``limit`` async steps executing at once."""
    def run(*args: Any, **kwargs: Any) -> Any:
        with green.turn():
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # as always in a worker: no loop runs in this thread
                with soft_limit.kept():
                    return asyncio.run(_main(fn, limit, args, kwargs))
        # An eager ``apply()`` from async code: this thread's loop is busy; run the body's
        # own loop in a helper thread (with this context: the run) and wait for it.
        with ThreadPoolExecutor(1, thread_name_prefix="durable-async-body") as helper:
            return helper.submit(contextvars.copy_context().run, asyncio.run,
                                 _main(fn, limit, args, kwargs)).result()
    return run


async def _main(fn: Callable[..., Any], limit: int, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
    delivery = Delivery(limit)
    current_loop.set(delivery)  # in this loop's context: its tasks inherit it
    ctx = current_run.get()
    if ctx is not None:  # steps are matched to checkpoints branch by branch
        recorded = [(p, record.key) for p in sorted(ctx.checkpoints)
                    if (record := recorded_at(ctx, p)) is not None]
        ctx.branches = Branches(recorded)
        ctx.branches.install(asyncio.get_running_loop())
    delivery.body = asyncio.current_task()
    soft_limit.take(asyncio.get_running_loop(), delivery.interrupt)
    try:
        result = await fn(*args, **kwargs)
    except asyncio.CancelledError:
        if delivery.withdrawn(delivery.body) and delivery.interrupted is not None:
            raise delivery.interrupted from None  # the soft time limit, between steps
        raise
    except BaseException as exc:
        signal = _control_signal(exc)
        if signal is None:
            raise
        raise signal from exc
    if delivery.parked is not None:  # the body went on past a parked run (return_exceptions)
        raise delivery.parked
    return result


def _control_signal(exc: BaseException) -> ControlSignal | None:
    """The engine's control signal (a park, a lost lease, a suspension) inside an exception
    group (``asyncio.TaskGroup`` wraps what its tasks raise), or None."""
    if isinstance(exc, ControlSignal):
        return None  # raised as it is
    for inner in getattr(exc, "exceptions", ()):
        if isinstance(inner, ControlSignal):
            return inner
        found = _control_signal(inner)
        if found is not None:
            return found
    return None


__all__ = ["MAX_PARALLEL_STEPS", "Delivery", "body_runner", "delivery_body"]
