"""The sweeper: recovers runs whose lease expired and publishes due runs.

It runs as a thread in the main process of every worker of an app with
durable tasks (a worker bootstep; ``durable_sweeper = False`` turns it off),
and :func:`sweep` can also be called from a periodic task. Claims are atomic
in the store, so any number of sweepers can run at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery, bootsteps, signals

from .config import settings_for
from .deadletter import announce_dead_letter
from .errors import WorkerLostError
from .publish import publish_run
from .stores import get_store

logger = logging.getLogger(__name__)


def sweep(app: Celery, limit: int = 100) -> int:
    """Handle every due run of ``app`` once; return how many were published or dead-lettered."""
    settings = settings_for(app)
    store = get_store(app)
    acted = 0
    for run_id in store.due_runs(limit):
        claim = store.claim_due(run_id, grace=float(settings.requeue_grace),
                                max_recoveries=int(settings.max_recoveries))
        if claim.action == "publish" and claim.run is not None:
            logger.info("run %s: publishing again (%s)", run_id, claim.run.status)
            publish_run(app, claim.run)
            acted += 1
        elif claim.action == "dead" and claim.run is not None:
            message = claim.run.error.message if claim.run.error else "worker lost"
            logger.error("run %s dead-lettered: %s", run_id, message)
            app.backend.mark_as_failure(run_id, WorkerLostError(message, run_id=run_id))
            announce_dead_letter(app, store, run_id=run_id, task=claim.run.task,
                                 parent=claim.run.parent, error=claim.run.error,
                                 failed_step=claim.run.failed_step)
            acted += 1
    return acted


def has_durable_tasks(app: Celery) -> bool:
    """True if any task registered on ``app`` is durable."""
    from .task import DurableTask
    return any(isinstance(t, DurableTask) for t in app.tasks.values())


class DurableWorkerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: checks the store at start, then sweeps in a thread."""

    label = "celery_durable sweeper"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        if getattr(worker, "task_events", False):
            # Before the pool forks, so its processes send step events too.
            from .events import enable
            enable()
        from .tracing import for_app
        for_app(worker.app)  # durable_tracing: on when opentelemetry is installed
        super().__init__(worker, **kwargs)

    def start(self, worker: Any) -> None:
        """Fail the worker start if the store is unreachable; start the sweep thread."""
        app = worker.app
        if not has_durable_tasks(app):
            return
        get_store(app).ping()
        settings = settings_for(app)
        if not settings.sweeper:
            return
        self.stopping.clear()
        self.thread = threading.Thread(target=self._loop, name="durable-sweeper", daemon=True,
                                       args=(app, float(settings.sweep_interval)))
        self.thread.start()

    def _loop(self, app: Celery, interval: float) -> None:
        purge_every = float(settings_for(app).purge_interval)
        next_purge = time.monotonic() + min(purge_every, 60.0)
        while not self.stopping.wait(interval):
            try:
                while sweep(app) >= 100:
                    pass
            except Exception:
                logger.exception("celery_durable: sweep failed")
            if purge_every > 0 and time.monotonic() >= next_purge:
                next_purge = time.monotonic() + purge_every
                self._purge(app)

    @staticmethod
    def _purge(app: Celery) -> None:
        """Purge finished runs past their retention (dead letters are kept)."""
        from .retention import purge_expired
        try:
            purged = purge_expired(app)
        except NotImplementedError:
            return
        except Exception:
            logger.exception("celery_durable: purge of expired runs failed")
            return
        if purged:
            logger.info("celery_durable: purged %d finished run(s) past retention", purged)

    def stop(self, worker: Any) -> None:
        """Stop the sweep thread."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    shutdown = stop


def install_worker_step(app: Celery) -> None:
    """Add the sweeper bootstep to ``app``'s workers (idempotent)."""
    app.steps["worker"].add(DurableWorkerStep)


@signals.worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    # Shared tasks bind to the app only when it is finalized, after the worker
    # blueprint is built; adding the step here covers them too.
    app = getattr(sender, "app", None)
    if app is not None:
        install_worker_step(app)
