"""Concurrency limits: ``@durable_task(concurrency=N, concurrency_key=fn)``.

At most ``N`` runs of the task (per ``concurrency_key(*args, **kwargs)`` if
given) execute at once across all workers. A delivery takes a slot in the
store right after it takes the run's lease (one round trip per delivery, none
per step). A run over the limit joins the group's FIFO queue and is parked
``PENDING`` without holding a worker; it is published again when a running
run of the group gives its slot back (at the end of every delivery: finish,
retry, sleep or wait), and the sweeper re-publishes it every lease TTL in any
case, which keeps its queue entry alive. Slots are renewed by the lease
heartbeat and expire with the lease, so a crashed run's slot frees itself.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from celery import Celery, Task

from ..config import settings_for
from ..engine import leases
from ..engine._flow import LeaseLost, Suspend
from ..engine.context import RunContext
from ..engine.publish import publish_run
from ..records import RunRecord, RunStatus
from ..serialization import decode, get_serializer
from ..stores import get_store
from ..stores.base import CheckpointStore, concurrency_slots_of

logger = logging.getLogger(__name__)

#: The ``@durable_task`` options this module reads.
OPTIONS = frozenset({"concurrency", "concurrency_key"})


def check_options(options: dict[str, Any]) -> None:
    """Validate ``concurrency`` / ``concurrency_key`` and store the key function unbound."""
    limit = options.get("concurrency")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"durable_task(concurrency=...) must be a positive int, not {limit!r}")
    keyfn = options.get("concurrency_key")
    if keyfn is not None:
        if limit is None:
            raise ValueError("durable_task(concurrency_key=...) needs concurrency=N too")
        if not callable(keyfn):
            raise ValueError("durable_task(concurrency_key=...) must be a callable over the "
                             "task's arguments")
        options["concurrency_key"] = staticmethod(keyfn)


def limit_of(task: Task) -> int:
    """The task's concurrency limit (0: none)."""
    return int(getattr(task, "concurrency", None) or 0)


def group_of(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The concurrency group of a run of ``task`` with these arguments, or None."""
    if not limit_of(task):
        return None
    keyfn: Any = inspect.getattr_static(task, "concurrency_key", None)
    if isinstance(keyfn, staticmethod):
        keyfn = keyfn.__func__
    if keyfn is None:
        return str(task.name)
    return f"{task.name}:{keyfn(*args, **kwargs)}"


def enter(ctx: RunContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Take a slot for this delivery; park the run (raise Suspend) if none is free.

    Returns the group whose slot is held (None for a task without a limit).
    """
    group = group_of(ctx.task, args, kwargs) if not ctx.eager else None
    if group is None:
        return None
    ttl = float(ctx.settings.lease_ttl)
    slots = concurrency_slots_of(ctx.store)
    if slots.acquire_slot(group, ctx.run_id, limit=limit_of(ctx.task), ttl=ttl):
        leases.track_slot(ctx.run_id, group)
        return group
    if not ctx.store.park(ctx.run_id, ctx.token, status=RunStatus.PENDING, delay=0.0,
                          due_in=ttl):
        raise LeaseLost()
    logger.info("run %s: queued for a slot of %s (concurrency=%d)", ctx.run_id, group,
                limit_of(ctx.task))
    raise Suspend(RunStatus.PENDING.value)


def _publish_next(app: Celery, store: CheckpointStore, run_ids: list[str]) -> None:
    if not run_ids:
        return
    for run in store.get_runs(run_ids):
        if run is not None and run.status is RunStatus.PENDING and not run.owner:
            publish_run(app, run)


def leave(ctx: RunContext, group: str | None) -> None:
    """Give the slot back and publish the queued runs that may take it."""
    if group is None:
        return
    try:
        heads = concurrency_slots_of(ctx.store).release_slot(group, ctx.run_id,
                                                             limit=limit_of(ctx.task))
        _publish_next(ctx.task.app, ctx.store, heads)
    except Exception:  # the slot expires with the lease; the queue is re-polled
        logger.exception("run %s: could not release its slot of %s", ctx.run_id, group)


def release_cancelled(app: Celery, run: RunRecord) -> None:
    """A cancelled run leaves its group's slot or queue at once (if its task has a limit)."""
    task = app.tasks.get(run.task)
    if task is None or not limit_of(task):
        return
    store = get_store(app)
    try:
        serializer = get_serializer(settings_for(app).serializer)
        args = decode(serializer, run.args, what="arguments", run_id=run.id)
        kwargs = decode(serializer, run.kwargs, what="keyword arguments", run_id=run.id)
        group = group_of(task, tuple(args), kwargs)
        if group is not None:
            heads = concurrency_slots_of(store).release_slot(group, run.id, limit=limit_of(task))
            _publish_next(app, store, heads)
    except Exception:
        logger.exception("run %s: could not release its slot", run.id)
