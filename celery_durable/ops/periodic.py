"""Periodic task for deployments that prefer Celery beat to the worker's sweeper thread.

Every worker of an app with durable tasks already runs the sweeper (lease
recovery and timers) in a thread. To drive it from beat instead, turn the
thread off and schedule ``celery_durable.sweep_due``::

    app.conf.durable_sweeper = False          # optional: beat only
    app.conf.include = [*app.conf.include, "celery_durable.ops.periodic"]
    app.conf.beat_schedule = {
        "celery-durable-sweep": {"task": "celery_durable.sweep_due", "schedule": 5.0},
    }

Claims are atomic in the store, so beat and any number of worker sweepers
can run at once without waking a run twice. A timer fires at most one
schedule interval late.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .retention import purge_expired
from .sweeper import sweep


@shared_task(name="celery_durable.sweep_due", bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
def sweep_due(self: Any, limit: int = 10_000) -> int:
    """Publish every due run (timers, expired leases, lost messages); return how many."""
    batch, acted = 100, 0
    while acted < limit:
        done = sweep(self.app, batch)
        acted += done
        if done < batch:
            break
    return acted


@shared_task(name="celery_durable.purge_finished", bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
def purge_finished(self: Any) -> int:
    """Purge SUCCEEDED/CANCELLED runs past ``durable_result_retention``; return how many."""
    return purge_expired(self.app)


__all__ = ["purge_finished", "sweep_due"]
