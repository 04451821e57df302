"""Version pinning: a run's messages go to a queue of its code version (``durable_pin_version``).

With ``durable_pin_version = True`` every message of a versioned run (its
first delivery, Celery retries, step retries, wakes, the sweeper's
recoveries, ``retry_run``) is sent to ``<queue>@<version>``, where
``<queue>`` is the queue Celery routes the task to and ``<version>`` the
version the run started under; a worker whose tasks have version ``X``
consumes ``<queue>@X`` for each queue it consumes. So only workers of a
run's version resume it, while new runs start on the new version's
workers (Trigger.dev's model, on Celery's own routing). A message of a
pinned run that reaches a worker of another version anyway (sent by a
process with pinning off) is handed back to its version's queue.

Runs with no version (``durable_version`` unset) are not pinned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery

from ..config import settings_for

#: Separates a queue's name from the code version in a version queue's name.
SEPARATOR = "@"
#: Routing options a version queue replaces (Celery maps the queue to its exchange and key).
_ROUTED = ("queue", "exchange", "routing_key", "exchange_type")


def version_queue(queue: str, version: str) -> str:
    """The name of the queue of ``version``'s runs routed to ``queue``."""
    return f"{base_queue(queue)}{SEPARATOR}{version}"


def base_queue(name: str) -> str:
    """``name`` without a version suffix (``orders@v2`` -> ``orders``)."""
    return name.split(SEPARATOR, 1)[0]


def pinning(app: Celery) -> bool:
    """True when ``app`` pins runs to their version's queue."""
    return bool(settings_for(app).pin_version)


def _routed_queue(app: Celery, task_name: str, options: Mapping[str, Any]) -> str:
    """The queue Celery sends ``task_name`` to with ``options`` (``task_routes`` included)."""
    queue = options.get("queue")
    if queue is not None:
        return base_queue(getattr(queue, "name", None) or str(queue))
    route = app.amqp.router.route({k: v for k, v in options.items() if k not in _ROUTED},
                                  task_name)
    routed = route.get("queue")
    name = getattr(routed, "name", None) or app.conf.task_default_queue
    return base_queue(str(name))


def pinned(app: Celery, task_name: str, version: str | None,
           options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` sending a message of a ``version`` run to its version's queue (as they
    are when pinning is off or the run has no version)."""
    if version is None or not pinning(app):
        return dict(options)
    queue = version_queue(_routed_queue(app, task_name, options), version)
    return {**{k: v for k, v in options.items() if k not in _ROUTED}, "queue": queue}


def misrouted(app: Celery, run_version: str | None, code_version: str | None) -> bool:
    """True when a delivery of a ``run_version`` run reached a worker of ``code_version``
    while pinning is on: the worker hands it back instead of running it."""
    return run_version is not None and run_version != code_version and pinning(app)


def worker_versions(app: Celery, tasks: Iterable[Any]) -> set[str]:
    """The code versions of ``tasks`` (durable tasks of a worker): ``durable_version`` and
    each ``@durable_task(version=...)``."""
    default = settings_for(app).version
    versions = {getattr(task, "version", None) or default for task in tasks}
    return {v for v in versions if v}


def consume_version_queues(app: Celery, versions: Iterable[str]) -> list[str]:
    """Make the worker of ``app`` consume ``<queue>@<version>`` for each queue it consumes
    and each of ``versions``; the names added."""
    queues = app.amqp.queues
    selected = queues.consume_from if queues.consume_from is not None else queues
    bases = sorted({name for name in selected if SEPARATOR not in name})
    added = []
    for base in bases:
        for version in sorted(versions):
            name = version_queue(base, version)
            queues.select_add(name)
            added.append(name)
    return added


__all__ = ["base_queue", "consume_version_queues", "misrouted", "pinned", "pinning",
           "version_queue", "worker_versions"]
