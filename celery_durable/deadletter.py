"""What follows a run's dead-lettering, wherever it happened (worker or sweeper)."""

from __future__ import annotations

from celery import Celery

from . import signals
from .children import notify_parent
from .records import ErrorInfo
from .stores.base import CheckpointStore


def announce_dead_letter(app: Celery, store: CheckpointStore, *, run_id: str, task: str,
                         parent: str | None, error: ErrorInfo | None,
                         failed_step: str | None) -> None:
    """Tell a waiting parent its child failed, then send ``run_dead_lettered``."""
    notify_parent(app, store, parent)
    if signals.run_dead_lettered.receivers:
        signals.run_dead_lettered.send(sender=app.tasks.get(task), run_id=run_id, task=task,
                                       error=error, failed_step=failed_step)
