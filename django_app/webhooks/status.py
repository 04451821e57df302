"""A run as the status endpoint answers it (JSON), and the store's clock for signatures."""

from __future__ import annotations

import weakref
from typing import Any

from celery import Celery
from django.db import DEFAULT_DB_ALIAS, connections

from celery_durable import RunInfo
from celery_durable.config import settings_for
from celery_durable.redact import redact_text, redact_value
from celery_durable.stores import get_store

from ..store.clock import now_sql

#: Stores whose clock this process has measured (once is enough: clocks drift slowly).
_measured: weakref.WeakSet[Any] = weakref.WeakSet()


def store_now(app: Celery) -> float:
    """The store's clock (Redis ``TIME``), else the Django database's (epoch seconds)."""
    store = get_store(app)
    clock = getattr(store, "clock", None)
    if callable(clock):
        if store not in _measured:  # the Redis store measures the server's clock at ping
            store.ping()
            _measured.add(store)
        return float(clock())
    connection = connections[getattr(store, "using", None) or DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {now_sql(connection.vendor)}")
        row = cursor.fetchone()
    return float(row[0])


def run_json(app: Celery, info: RunInfo) -> dict[str, Any]:
    """``info`` as JSON: status, current step, steps with status and timing, the result once
    succeeded, the error once failed, tags and version (``durable_redact`` applied)."""
    names = settings_for(app).redact_names
    unfinished = not info.status.finished
    return {
        "id": info.id, "task": info.task, "status": info.status.value,
        "current_step": info.steps[-1].key if info.steps and unfinished else None,
        "steps": [{"position": s.position, "key": s.key, "status": s.status.value,
                   "attempts": s.attempts, "started_at": s.started_at,
                   "finished_at": s.finished_at} for s in info.steps],
        "result": (redact_value(info.result, names) if info.status.value == "SUCCEEDED"
                   else None),
        "error": ({"type": info.error.type,
                   "message": redact_text(info.error.message, names)} if info.error else None),
        "failed_step": info.failed_step, "tags": list(info.tags), "version": info.version,
        "created_at": info.created_at, "started_at": info.started_at,
        "finished_at": info.finished_at, "updated_at": info.updated_at,
        "wait": ({"kind": info.wait.kind, "event": info.wait.event, "key": info.wait.key,
                  "until": info.wait.until} if info.wait is not None and unfinished else None),
    }
