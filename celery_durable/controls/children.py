"""Child runs: ``call``, ``gather`` and ``map`` start durable runs from a durable run.

Each is one checkpointed step of the parent (``call:<task>#n``, ``gather#n``,
``map:<task>#n``). The children's run ids derive from the parent's run id and
the step's position (``<parent>~<position>`` for ``call``,
``<parent>~<position>.<i>`` for the i-th child of ``gather``/``map``), so a
parent that crashes and replays finds the same children instead of starting
new ones.

The first time the step is reached its pending state (the child ids) is
checkpointed, the children are created in the store and published, and the
parent is parked (``WAITING``, wait kind ``children``) without holding a
worker. Every child that finishes notifies its parent
(:meth:`~celery_durable.stores.base.CheckpointStore.notify_parent`), which
counts the notices and resumes the parent once all the children it waits
for have reported (one wake for a whole ``map``, not one per child); the
parent's next delivery replays up to the step, reads the children's records
in one round trip and either parks again or checkpoints their results (in
order) and returns them.

A child that failed or was cancelled makes the step raise
:class:`~celery_durable.errors.ChildRunError` under the parent's retry policy:
a retry re-triggers the failed children from their failed step (siblings that
succeeded are kept); a cancelled child fails the step at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery
from celery.canvas import Signature

from ..config import settings_for
from ..engine import _testhooks, tracing
from ..engine._flow import LeaseLost, Suspend
from ..engine.awaiting import as_awaited
from ..engine.context import RunContext, body_context
from ..engine.labels import code_version
from ..engine.lifecycle import CALL_STEP, GATHER_STEP, MAP_STEP
from ..engine.publish import ROUTING, publish_run
from ..engine.steps import _failed, _on_error, _replay, recorded_at
from ..errors import ChildCancelledError, ChildRunError, InvalidRunStateError
from ..records import ErrorInfo, NewRun, RunRecord, RunStatus, StepRecord, StepStatus, WaitInfo
from ..serialization import decode, encode
from ..stores.base import child_runs_of
from ..task import DurableTask

logger = logging.getLogger(__name__)

def child_id(parent_id: str, position: int, index: int | None = None) -> str:
    """The run id of a child: ``<parent>~<position>`` or ``<parent>~<position>.<index>``."""
    return f"{parent_id}~{position}" if index is None else f"{parent_id}~{position}.{index}"


def _durable(app: Celery, task: Any) -> Any:
    """The registered durable task named by ``task`` (a task object or a name)."""
    name = task if isinstance(task, str) else getattr(task, "name", None)
    registered = app.tasks.get(name) if name else None
    if not isinstance(registered, DurableTask):
        raise TypeError(f"{name or task!r} is not a durable task registered on {app.main!r}: "
                        "child runs must be @durable_task tasks")
    return registered


def _state(ctx: RunContext, record: StepRecord) -> dict[str, Any]:
    state = decode(ctx.serializer, record.value or "null", what=f"state of {record.key}",
                   run_id=ctx.run_id, step=record.key)
    if not isinstance(state, dict) or state.get("kind") != "children":
        raise RuntimeError(f"run {ctx.run_id}: checkpoint {record.key} is not a child-run step")
    return state


def _encode(ctx: RunContext, record: StepRecord, state: dict[str, Any]) -> StepRecord:
    record.value = encode(ctx.serializer, state, max_bytes=ctx.settings.max_checkpoint_bytes,
                          what=f"state of {record.key}", run_id=ctx.run_id, step=record.key)
    return record


def _start(ctx: RunContext, specs: Sequence[Signature], ids: Sequence[str]) -> None:
    """Create the children that do not exist yet and publish them."""
    app = ctx.task.app
    max_bytes = ctx.settings.max_checkpoint_bytes
    new = [NewRun(id=run_id, task=spec.task, parent=ctx.run_id,
                  args=encode(ctx.serializer, list(spec.args), max_bytes=max_bytes,
                              what="child arguments", run_id=run_id),
                  kwargs=encode(ctx.serializer, dict(spec.kwargs), max_bytes=max_bytes,
                                what="child keyword arguments", run_id=run_id),
                  options=_child_options(spec), version=_child_version(app, str(spec.task)))
           for spec, run_id in zip(specs, ids, strict=True)]
    created = ctx.store.create_runs(new, grace=float(ctx.settings.requeue_grace))
    fresh = [n for n, made in zip(new, created, strict=True) if made]
    if fresh:
        logger.info("run %s: starting %d child run(s)", ctx.run_id, len(fresh))
    for n in fresh:
        publish_run(app, RunRecord(id=n.id, task=n.task, status=RunStatus.PENDING, args=n.args,
                                   kwargs=n.kwargs, options=n.options, version=n.version))


def _child_version(app: Celery, name: str) -> str | None:
    """The code version a child run starts under: its task's here, else this app's."""
    task = app.tasks.get(name)
    return code_version(task) if task is not None else settings_for(app).version


def _child_options(spec: Signature) -> dict[str, Any]:
    """A child's stored options: its routing, and the parent's trace (so it joins it)."""
    options = {k: v for k, v in (spec.options or {}).items()
               if k in ROUTING}
    if tracing.active is not None:
        tracing.active.inject(str(spec.task), options)
    return options


def _retrigger(ctx: RunContext, runs: Sequence[RunRecord | None]) -> None:
    """The parent retries the step: re-trigger each failed child from its failed step."""
    app = ctx.task.app
    for run in runs:
        if run is None or run.status is not RunStatus.FAILED:
            continue
        try:
            reset = ctx.store.reset_run(run.id, from_start=False,
                                        grace=float(ctx.settings.requeue_grace))
        except InvalidRunStateError:
            continue
        if reset is not None:
            app.backend.forget(run.id)
            publish_run(app, reset)


def _failure(ctx: RunContext, key: str, runs: Sequence[RunRecord]) -> ChildRunError:
    failed = {r.id: f"{r.status}" + (f": {r.error.type}: {r.error.message}" if r.error else "")
              for r in runs if r.status is not RunStatus.SUCCEEDED}
    cls = (ChildCancelledError if any(r.status is RunStatus.CANCELLED for r in runs)
           else ChildRunError)
    shown = "; ".join(f"{i} {why}" for i, why in list(failed.items())[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return cls(f"run {ctx.run_id}: {len(failed)} child run(s) of {key} did not succeed: "
               f"{shown}{more}", run_id=ctx.run_id, step=key, children=failed)


def _resolve(ctx: RunContext, record: StepRecord, state: dict[str, Any],
             runs: Sequence[RunRecord], single: bool) -> Any:
    """Every child finished: checkpoint their results, or fail the step."""
    if all(r.status is RunStatus.SUCCEEDED for r in runs):
        results = [decode(ctx.serializer, r.result or "null", what=f"result of child {r.id}",
                          run_id=ctx.run_id, step=record.key) for r in runs]
        done = _encode(ctx, record, {**state, "outcome": "done", "results": results})
        done.status, done.finished_at = StepStatus.SUCCEEDED, time.time()
        if not ctx.store.save_step(ctx.run_id, ctx.token, done):
            raise LeaseLost()
        ctx.checkpoints[done.position] = done
        values = _state(ctx, done)["results"]
        return values[0] if single else values
    exc = _failure(ctx, record.key, runs)
    failed = StepRecord(record.position, record.key, record.name, StepStatus.FAILED,
                        record.attempts, value=record.value, started_at=record.started_at,
                        finished_at=time.time(),
                        error=ErrorInfo.from_exception(exc))
    return _on_error(ctx, exc, failed, {})


def _look(ctx: RunContext, ids: Sequence[str]) -> tuple[int, list[RunRecord | None]]:
    """The run's count of child notices, then its children's records.

    The count must be read before the children (see :func:`_park`), so it is
    its own round trip: one
    :meth:`~celery_durable.stores.base.CheckpointStore.get_runs` call for
    several keys promises no order (Redis Cluster reads the nodes of a
    pipeline in any order).
    """
    me = ctx.store.get_runs([ctx.run_id])[0]
    return (me.children_done if me is not None else 0), ctx.store.get_runs(ids)


def _park(ctx: RunContext, record: StepRecord, changed: StepRecord | None,
          counted: int, unfinished: int) -> str:
    """Park at the children wait until the ``unfinished`` children have all reported.

    ``counted`` is the run's count of child notices, read just before the
    children (:func:`_look`). A child that was unfinished then reports after
    it, so the run resumes once the count reaches ``counted + unfinished``: one
    wake for a whole ``map``, not one per child. A repeated notice, or a child
    that finished between the two reads, only makes the run look sooner (it
    looks, and parks again). ``changed``: the step's checkpoint, saved in the
    same round trip.
    """
    wait = WaitInfo("children", record.key, record.position, ctx.token)
    outcome = child_runs_of(ctx.store).suspend_children(
        ctx.run_id, ctx.token, wait=wait, recheck=float(ctx.settings.requeue_grace),
        need=counted + unfinished, step=changed)
    if outcome == "lost":
        raise LeaseLost()
    return outcome


def _children(ctx: RunContext, name: str, specs: Sequence[Signature], single: bool) -> Any:
    position, key = ctx.next_key(name)
    record = _replay(ctx, position, key)
    ids = [child_id(ctx.run_id, position, None if single else i) for i in range(len(specs))]
    if record is not None and record.status is StepStatus.FAILED:
        raise _failed(ctx, record)
    state: dict[str, Any] = {"kind": "children", "ids": ids}
    if record is not None and record.status is StepStatus.SUCCEEDED:
        state = _state(ctx, record)
        if "outcome" in state:
            return state["results"][0] if single else state["results"]
        if state["ids"] != ids:
            raise RuntimeError(f"run {ctx.run_id}: {key} started {len(state['ids'])} child "
                               f"run(s) but replay starts {len(ids)}; check that your task "
                               "is deterministic")
    retry = record is not None and record.status is StepStatus.RETRYING
    if record is None or retry:
        attempts = record.attempts + 1 if record is not None else 1
        record = _encode(ctx, StepRecord(position, key, name, StepStatus.SUCCEEDED, attempts,
                                         started_at=time.time()), state)
        # The child ids are checkpointed before any child exists, so cancelling the
        # parent always finds its children.
        if not ctx.store.save_step(ctx.run_id, ctx.token, record):
            raise LeaseLost()
        ctx.checkpoints[position] = record
        if _testhooks.active is not None:  # a planned crash here leaves no child created
            _testhooks.active.checkpointed(ctx.run_id, position)
        _start(ctx, specs, ids)
    counted, runs = _look(ctx, ids)
    marked = None  # the checkpoint, when it changed: saved by the next park
    if not state.get("started"):
        absent = [i for i, r in enumerate(runs) if r is None]
        if absent:  # the last delivery died before starting them
            _start(ctx, [specs[i] for i in absent], [ids[i] for i in absent])
            counted, runs = _look(ctx, ids)
        # Every child exists now. Once this mark is saved, a child deleted later
        # (retention, purge) is reported as vanished, never run again.
        state["started"] = True
        marked = ctx.checkpoints[position] = _encode(ctx, record, state)
    if retry:
        _retrigger(ctx, runs)
        counted, runs = _look(ctx, ids)
    announced = False
    while True:
        missing = [i for i, r in zip(ids, runs, strict=True) if r is None]
        if missing:  # deleted under us (retention, purge): nothing will notify
            raise RuntimeError(f"run {ctx.run_id}: child run(s) {', '.join(missing)} vanished")
        finished = [r for r in runs if r is not None and r.status.finished]
        if len(finished) == len(ids):
            return _resolve(ctx, record, state, finished, single)
        if ctx.eager:
            raise RuntimeError(f"run {ctx.run_id}: child runs did not finish in eager mode")
        if not announced:  # the Celery state first, as for waits (see waits._suspend)
            announced = True
            ctx.task.update_state(task_id=ctx.run_id, state=RunStatus.WAITING.value, meta={
                "run_id": ctx.run_id, "step": key, "children": ids})
        parked = _park(ctx, record, marked, counted, len(ids) - len(finished))
        marked = None  # saved, whatever the outcome
        if parked == "parked":
            logger.info("run %s: WAITING for %d child run(s) at %s", ctx.run_id,
                        len(ids) - len(finished), key)
            raise Suspend(RunStatus.WAITING.value)
        counted, runs = _look(ctx, ids)  # a child finished meanwhile: look again


def _eager_children(ctx: RunContext, specs: Sequence[Signature], single: bool,
                    name: str) -> Any:
    """Eager mode has no worker: run each child inline (unless an earlier delivery reached
    this call and ran them), then take the store's view."""
    position = ctx.peek()
    if recorded_at(ctx, position) is not None:  # a replay: the children ran then
        return _children(ctx, name, specs, single)
    for i, spec in enumerate(specs):
        run_id = child_id(ctx.run_id, position, None if single else i)
        task = _durable(ctx.task.app, spec.task)
        task.apply(args=spec.args, kwargs=spec.kwargs, task_id=run_id)
    return _children(ctx, name, specs, single)


def _run(specs: Sequence[Signature], single: bool, name: str) -> Any:
    ctx = body_context(name.rstrip(":") or "call")
    if ctx is None:  # outside a run: plain calls, so task bodies stay unit-testable
        results = [spec.type(*spec.args, **spec.kwargs) if spec.type is not None
                   else spec.apply().get() for spec in specs]
        return results[0] if single else results
    app = ctx.task.app
    for spec in specs:
        _durable(app, spec.task)
    if ctx.eager:
        return _eager_children(ctx, specs, single, name)
    return _children(ctx, name, specs, single)


def _signature(task: Any, args: Iterable[Any] = (),
               kwargs: dict[str, Any] | None = None) -> Signature:
    if isinstance(task, Signature):
        return task
    if hasattr(task, "s"):
        return task.s(*args, **(kwargs or {}))
    return Signature(task, args=tuple(args), kwargs=kwargs or {})


def call(task: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``task(*args, **kwargs)`` as a child durable run and return its result.

    Inside a durable run the parent is suspended (``WAITING``, no worker
    held) until the child finishes; the result is checkpointed like a step's.
    A failed child raises :class:`StepFailedError` (a :class:`ChildRunError`
    underneath) after the parent's retry policy is exhausted. Outside a run
    the task's body is called directly. ``task`` is a durable task or its name.
    """
    return as_awaited(_run([_signature(task, args, kwargs)], True, f"{CALL_STEP}{_name(task)}"))


def gather(*signatures: Signature) -> list[Any]:
    """Run each ``task.s(*args, **kwargs)`` as a child run in parallel; return results in order.

    One checkpointed step for all of them; the parent waits until every
    child has finished. If any failed, the step fails with
    :class:`ChildRunError` (see :func:`call`).
    """
    specs = [_signature(s) for s in signatures]
    return as_awaited(list(_run(specs, False, GATHER_STEP)) if specs else [])  # type: ignore[no-any-return]


def map(task: Any, items: Iterable[Any], /) -> list[Any]:
    """Run ``task(item)`` as a child run for every item, in parallel; return results in order.

    Like :func:`gather` with ``task.s(item)`` for each item (a tuple item is
    one argument, as in Celery's ``task.map``).
    """
    specs = [_signature(task, (item,)) for item in items]
    return as_awaited(  # type: ignore[no-any-return]
        list(_run(specs, False, f"{MAP_STEP}{_name(task)}")) if specs else [])


def _name(task: Any) -> str:
    if isinstance(task, Signature):
        return str(task.task)
    return task if isinstance(task, str) else str(getattr(task, "name", task))


__all__ = ["call", "child_id", "gather", "map"]
