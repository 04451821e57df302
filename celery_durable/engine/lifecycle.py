"""A run's lifecycle transitions seen from outside its body, wherever they happen.

The runner (a delivery), the sweeper (a run that lost its worker too often)
and the run controls (``cancel_run``) all end runs; what follows an end is
written here once:

* a finished child tells its parent (:func:`notify_parent`), which resumes
  the parent once all the children it waits for have reported;
* a dead-lettered run is announced (:func:`announce_dead_letter`);
* a cancelled run is shown ``REVOKED`` in the result backend (:func:`mark_revoked`);
* the children a run started are found from its checkpoints (:func:`child_ids`)
  so a cancel can cascade.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.app.task import Context

from .. import signals
from ..config import settings_for
from ..records import ErrorInfo, RunRecord
from ..serialization import decode, get_serializer
from ..stores.base import CheckpointStore, child_runs_of
from .publish import publish_run

logger = logging.getLogger(__name__)

#: Step names of the child-run calls: ``call:<task>``, ``gather``, ``map:<task>``.
CALL_STEP = "call:"
GATHER_STEP = "gather"
MAP_STEP = "map:"


def is_children_step(name: str) -> bool:
    """True for the step names of ``call``, ``gather`` and ``map``."""
    return name.startswith((CALL_STEP, MAP_STEP)) or name == GATHER_STEP


def notify_parent(app: Celery, store: CheckpointStore, parent_id: str | None) -> None:
    """Tell ``parent_id`` (if any) that one of its children finished; publish it if resumed."""
    if not parent_id:
        return
    try:
        grace = float(settings_for(app).requeue_grace)
        run = child_runs_of(store).notify_parent(parent_id, grace=grace)
    except Exception:  # the parent's recheck timer is the safety net
        logger.exception("could not notify parent run %s", parent_id)
        return
    if run is not None:
        publish_run(app, run)


def announce_dead_letter(app: Celery, store: CheckpointStore, *, run_id: str, task: str,
                         parent: str | None, error: ErrorInfo | None,
                         failed_step: str | None) -> None:
    """Tell a waiting parent its child failed, then send ``run_dead_lettered``."""
    notify_parent(app, store, parent)
    if signals.run_dead_lettered.receivers:
        signals.run_dead_lettered.send(sender=app.tasks.get(task), run_id=run_id, task=task,
                                       error=error, failed_step=failed_step)


def mark_revoked(app: Celery, run_id: str, reason: str = "cancelled",
                 run: RunRecord | None = None, *, terminated: bool = False,
                 signum: str | None = None, parked: bool = False) -> None:
    """Record REVOKED in the result backend and tell event consumers (Flower) the task was
    revoked; a backend or broker hiccup must not undo a cancel.

    With ``run``, the backend row keeps the task's name and arguments (a
    django-celery-results row with ``result_extended`` lost them on REVOKED).
    The ``task-revoked`` event is sent by this process: a parked (sleeping,
    waiting, queued) run has no worker that could send it, and Flower would
    show it SLEEPING or WAITING for ever. Celery's event state (which Flower
    uses) never lets REVOKED replace a custom state such as SLEEPING (custom
    states rank after REVOKED in ``celery.states.PRECEDENCE``), so a run that
    was ``parked`` in a wait also gets a ``task-cancelled`` event: Flower shows
    it CANCELLED.
    """
    try:
        app.backend.mark_as_revoked(run_id, reason=reason, request=_request(app, run))
    except Exception:
        logger.warning("run %s: could not record REVOKED in the result backend", run_id,
                       exc_info=True)
    try:
        with app.events.default_dispatcher() as dispatcher:
            dispatcher.send("task-revoked", uuid=run_id, terminated=terminated,
                            signum=signum if terminated else None,
                            expired=reason == "expired")
            if parked:
                dispatcher.send("task-cancelled", uuid=run_id, reason=reason)
    except Exception:
        logger.warning("run %s: could not send the task-revoked event", run_id, exc_info=True)


def _request(app: Celery, run: RunRecord | None) -> Any:
    """The request a result backend reads a task's name and arguments from (no chord: a
    cancel is not a chord member's completion)."""
    if run is None or not run.task:
        return None
    serializer = get_serializer(settings_for(app).serializer)
    try:
        args = decode(serializer, run.args, what="arguments", run_id=run.id)
        kwargs = decode(serializer, run.kwargs, what="keyword arguments", run_id=run.id)
    except Exception:  # unreadable arguments: the name is still worth keeping
        args, kwargs = None, None
    return Context(id=run.id, task=run.task, args=args, kwargs=kwargs, chord=None,
                   argsrepr=None if args is None else repr(tuple(args)),
                   kwargsrepr=None if kwargs is None else repr(kwargs))


def child_ids(serializer: Any, run: RunRecord) -> list[str]:
    """The ids of the children the run's checkpoints name (for cascading a cancel)."""
    out: list[str] = []
    for record in run.steps:
        if not is_children_step(record.name) or not record.value:
            continue
        try:
            state = decode(serializer, record.value, what="child-run state", run_id=run.id)
        except Exception:
            continue
        if isinstance(state, dict) and state.get("kind") == "children":
            out.extend(str(i) for i in state.get("ids") or ())
    return out
