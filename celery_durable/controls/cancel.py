"""``cancel_run``: stop a run (and its children) for good.

A queued (``PENDING``/``RETRYING``), sleeping, waiting or dead-lettered run
becomes ``CANCELLED`` at once. A ``RUNNING`` one is fenced: its fencing token
moves on, so the checkpoint of the step it is executing (or its next lease
heartbeat) is refused and the delivery stops at that step boundary without
running another step — no extra round trip per step. ``terminate=True``
also revokes the task with ``terminate=True`` as Celery's ``revoke`` does,
killing the step in flight. The result backend shows the run as
``REVOKED``, so ``AsyncResult(run_id).get()`` raises ``TaskRevokedError``.
"""

from __future__ import annotations

import logging

from celery import Celery

from .. import signals
from ..config import app_or_current, settings_for
from ..engine.lifecycle import child_ids, mark_revoked, notify_parent
from ..errors import InvalidRunStateError
from ..records import RunRecord, RunStatus
from ..serialization import get_serializer
from ..stores import get_store
from .concurrency import release_cancelled

logger = logging.getLogger(__name__)


def _cancel_one(app: Celery, run_id: str, *, terminate: bool, signal: str, reason: str,
                create_missing: bool) -> RunRecord | None:
    store = get_store(app)
    try:  # only to tell Flower how the run was parked: a read that fails cancels all the same
        [before] = store.get_runs([run_id])
    except Exception:
        logger.warning("run %s: could not read it before cancelling", run_id, exc_info=True)
        before = None
    try:
        run = store.cancel(run_id, create_missing=create_missing)
    except InvalidRunStateError:
        return None
    if run is None:
        return None
    parked = before is not None and before.status in (RunStatus.SLEEPING, RunStatus.WAITING)
    mark_revoked(app, run_id, reason, run, terminated=terminate, signum=signal, parked=parked)
    if terminate:
        app.control.revoke(run_id, terminate=True, signal=signal)
    release_cancelled(app, run)
    logger.info("run %s: cancelled (%s)", run_id, reason)
    if signals.run_cancelled.receivers:
        signals.run_cancelled.send(sender=app.tasks.get(run.task), run_id=run_id,
                                   task=run.task, reason=reason)
    return run


def cancel_run(run_id: str, *, terminate: bool = False, signal: str = "SIGTERM",
               app: Celery | None = None) -> bool:
    """Cancel the run ``run_id`` and every child run it started; True if it was cancelled.

    A queued, sleeping or waiting run is ``CANCELLED`` at once; a running one
    stops at its next step boundary (the step in flight finishes, its
    checkpoint is refused, no further step runs). With ``terminate=True`` the
    task is also revoked with ``terminate=True`` (Celery's ``revoke``), so the
    step in flight is killed with ``signal``. A run the store does not know
    yet (its message is still queued) is recorded as cancelled, so the
    message is ignored when it comes. Returns False if the run had already
    succeeded or been cancelled. A cancelled run can be re-triggered with
    :func:`~celery_durable.retry_run`.
    """
    return _cancel_tree(app_or_current(app), run_id, terminate=terminate, signal=signal,
                        reason="cancelled")


def cancel_revoked(app: Celery, run_id: str, reason: str) -> bool:
    """Celery revoked ``run_id`` (``revoke``, ``revoke(terminate=True)``, or it expired): the
    run is cancelled, so no re-send by celery_durable runs it again (a worker's list of
    revoked ids is in memory, and a restarted worker has none)."""
    return _cancel_tree(app, run_id, terminate=False, signal="SIGTERM", reason=reason)


def _cancel_tree(app: Celery, run_id: str, *, terminate: bool, signal: str,
                 reason: str) -> bool:
    store = get_store(app)
    serializer = get_serializer(settings_for(app).serializer)
    run = _cancel_one(app, run_id, terminate=terminate, signal=signal, reason=reason,
                      create_missing=True)
    if run is None:
        return False
    notify_parent(app, store, run.parent)  # a cancelled child fails its parent's step
    # Cascade, breadth first: children are named by their parents' checkpoints.
    pending = [run_id]
    while pending:
        parent = store.get_run(pending.pop())
        if parent is None:
            continue
        for child in child_ids(serializer, parent):
            if _cancel_one(app, child, terminate=terminate, signal=signal,
                           reason=f"parent {parent.id} cancelled", create_missing=True):
                pending.append(child)
    return True


__all__ = ["cancel_run"]
