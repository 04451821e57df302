"""Sending a run's message again: after recovery, a timer, or ``retry_run``."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.result import AsyncResult

from ..config import settings_for
from ..records import RunRecord
from ..serialization import decode, get_serializer

#: apply_async options that decide where a run's message goes; kept for republishing.
ROUTING = ("queue", "exchange", "routing_key", "priority")


def delivery_options(delivery_info: dict[str, Any] | None) -> dict[str, Any]:
    """The routing of a received message, kept so every re-publish goes the same way."""
    info = delivery_info or {}
    options = {"exchange": info.get("exchange"), "routing_key": info.get("routing_key"),
               "priority": info.get("priority")}
    return {k: v for k, v in options.items() if v not in (None, "")}


def publish_run(app: Celery, run: RunRecord, **extra: Any) -> AsyncResult:
    """Publish ``run``'s task message (same task id, same routing and priority)."""
    serializer = get_serializer(settings_for(app).serializer)
    args = decode(serializer, run.args, what="arguments", run_id=run.id)
    kwargs = decode(serializer, run.kwargs, what="keyword arguments", run_id=run.id)
    options = {**run.options, **extra}
    return app.send_task(run.task, args=args, kwargs=kwargs, task_id=run.id, **options)
