"""The sweeper: recovers runs whose lease expired and publishes due runs.

It runs as a thread (:class:`Sweeper`) in the main process of every worker of
an app with durable tasks (started by the worker bootstep in
:mod:`celery_durable.task`; ``durable_sweeper = False`` turns it off),
and :func:`sweep` can also be called from a periodic task
(:mod:`celery_durable.ops.periodic`). Claims are atomic
in the store, so any number of sweepers can run at once.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery
from kombu.exceptions import EncodeError

from ..config import settings_for
from ..engine.leases import owner_id
from ..engine.lifecycle import announce_dead_letter
from ..engine.publish import publish_run
from ..errors import SerializationError, WorkerLostError
from ..records import ErrorInfo, RunRecord, RunStatus, describe_error
from ..stores import get_store
from ..stores.base import CheckpointStore
from .retention import purge_expired

logger = logging.getLogger(__name__)


#: Errors a publish raises every time for the same run: it is dead-lettered, not retried.
UNPUBLISHABLE = (SerializationError, EncodeError, TypeError, ValueError)


def sweep(app: Celery, limit: int = 100) -> int:
    """Handle every due run of ``app`` once; return how many were published or dead-lettered.

    Each run is handled on its own: one that cannot be claimed or published is
    logged (and dead-lettered when retrying cannot help) and the sweep goes on.
    """
    store = get_store(app)
    acted = 0
    for run_id in store.due_runs(limit):
        try:
            acted += _sweep_one(app, store, run_id)
        except Exception:
            logger.exception("celery_durable: run %s could not be swept; going on", run_id)
    return acted


def _sweep_one(app: Celery, store: CheckpointStore, run_id: str) -> int:
    settings = settings_for(app)
    claim = store.claim_due(run_id, grace=float(settings.requeue_grace),
                            max_recoveries=int(settings.max_recoveries))
    if claim.action == "publish" and claim.run is not None:
        logger.info("run %s: publishing again (%s)", run_id, claim.run.status)
        try:
            publish_run(app, claim.run)
        except UNPUBLISHABLE as exc:
            _unpublishable(app, store, claim.run, exc)
        return 1
    if claim.action == "dead" and claim.run is not None:
        message = claim.run.error.message if claim.run.error else "worker lost"
        logger.error("run %s dead-lettered: %s", run_id, message)
        app.backend.mark_as_failure(run_id, WorkerLostError(message, run_id=run_id))
        announce_dead_letter(app, store, run_id=run_id, task=claim.run.task,
                             parent=claim.run.parent, error=claim.run.error,
                             failed_step=claim.run.failed_step)
        return 1
    return 0


def _unpublishable(app: Celery, store: CheckpointStore, run: RunRecord,
                   exc: Exception) -> None:
    """The run's message cannot be built (its arguments or options do not encode): retrying
    cannot change that, so the run is dead-lettered with the reason."""
    settings = settings_for(app)
    taken = store.begin(run.id, task=run.task, args=run.args, kwargs=run.kwargs, options={},
                        owner=owner_id(), lease_ttl=float(settings.lease_ttl),
                        max_recoveries=int(settings.max_recoveries))
    if taken.outcome != "acquired":
        return
    error = ErrorInfo(f"{type(exc).__module__}.{type(exc).__qualname__}",
                      f"the run's message cannot be sent: {describe_error(exc)}")
    if store.finish(run.id, taken.token, status=RunStatus.FAILED, error=error):
        logger.error("run %s dead-lettered: %s", run.id, error.message)
        announce_dead_letter(app, store, run_id=run.id, task=run.task, parent=run.parent,
                             error=error, failed_step=None)


class Sweeper:
    """The sweep thread of one worker: :func:`sweep` every ``interval`` seconds.

    Every ``durable_purge_interval`` seconds it also purges the finished runs
    past their retention (dead letters are kept).
    """

    def __init__(self, app: Celery, interval: float) -> None:
        self.app = app
        self.interval = interval
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self.stopping.clear()
        self.thread = threading.Thread(target=self._loop, name="durable-sweeper", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop the thread (waits up to 5 seconds for the sweep in progress)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _loop(self) -> None:
        app = self.app
        purge_every = float(settings_for(app).purge_interval)
        next_purge = time.monotonic() + min(purge_every, 60.0)
        while not self.stopping.wait(self.interval):
            try:
                while sweep(app) >= 100:
                    pass
            except Exception:
                logger.exception("celery_durable: sweep failed")
            if purge_every > 0 and time.monotonic() >= next_purge:
                next_purge = time.monotonic() + purge_every
                self._purge()

    def _purge(self) -> None:
        try:
            purged = purge_expired(self.app)
        except NotImplementedError:
            return
        except Exception:
            logger.exception("celery_durable: purge of expired runs failed")
            return
        if purged:
            logger.info("celery_durable: purged %d finished run(s) past retention", purged)
