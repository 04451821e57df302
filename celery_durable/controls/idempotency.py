"""Idempotent triggering: ``task.apply_async(args, idempotency_key="order-42")``.

The first trigger with a key binds ``(task name, key)`` to its run id in the
store, atomically across processes and hosts (a Redis ``SET NX`` on one
global key; a unique constraint in the Django database), creates the run
(``PENDING``, with the key) and sends its message. Every later trigger with
the same key and task name, until the key's TTL passes, returns the
existing run's ``AsyncResult`` and sends nothing.

Should the first trigger die between binding the key and creating the run,
the next trigger with the key creates that run (same id) and sends it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import Task, uuid
from celery.result import AsyncResult
from kombu import serialization
from kombu.exceptions import EncodeError

from ..config import settings_for
from ..engine.labels import code_version, run_tags
from ..engine.pinning import pinned
from ..engine.publish import message_options
from ..errors import SerializationError
from ..records import NewRun
from ..serialization import encode, get_serializer
from ..stores import get_store
from ..stores.base import idempotency_keys_of

logger = logging.getLogger(__name__)


def _seconds(ttl: Any, default: float) -> float:
    if ttl is None:
        return float(default)
    if isinstance(ttl, dt.timedelta):
        return ttl.total_seconds()
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0:
        return float(ttl)
    raise ValueError(f"idempotency_ttl must be a positive number of seconds or a timedelta, "
                     f"not {ttl!r}")


def trigger(task: Task, args: Any, kwargs: Any, task_id: str | None, key: Any, ttl: Any,
            options: dict[str, Any], tags: list[str] | None = None) -> AsyncResult:
    """Start a run of ``task`` unless a run with ``idempotency_key=key`` exists; its AsyncResult."""
    app = task.app
    settings = settings_for(app)
    seconds = _seconds(ttl, settings.idempotency_ttl)
    key_text = str(key)
    if not key_text:
        raise ValueError("idempotency_key must not be empty")
    store = get_store(app)
    bound = idempotency_keys_of(store).claim_idempotency_key(task.name, key_text,
                                                             task_id or uuid(), ttl=seconds)
    new = _new_run(task, bound, args, kwargs, options, idempotency_key=key_text, tags=tags)
    created = store.create_runs([new], grace=float(settings.requeue_grace))[0]
    if not created:  # another trigger made the run and publishes it (or the sweeper will)
        logger.info("%s: idempotency key %r already started run %s", task.name, key_text,
                    bound)
        return task.AsyncResult(bound)
    return Task.apply_async(task, args, kwargs, task_id=bound,
                            **pinned(app, task.name, new.version, options))


def register(task: Task, args: Any, kwargs: Any, task_id: str | None,
             options: dict[str, Any], tags: list[str] | None = None) -> str:
    """Create the run (``PENDING``, due after ``durable_requeue_grace``) before its message.

    A message can be lost between the broker and a worker (kombu's Redis
    transport drops one that a worker popped but had not yet recorded as
    unacked when it was killed, or when Redis restarted). A registered run
    whose message never starts is published again by the sweeper once
    ``durable_requeue_grace`` passes, so it is never lost. Returns the run id.
    A finished run under the same id (a task id used again, a frozen chain
    applied twice) is replaced: the new message starts a new run, as with Celery.
    """
    run_id = task_id or uuid()
    get_store(task.app).create_runs([_new_run(task, run_id, args, kwargs, options, tags=tags)],
                                    grace=float(settings_for(task.app).requeue_grace),
                                    replace_finished=True)
    return run_id


def check_call(task: Task, args: Any, kwargs: Any, options: dict[str, Any]) -> None:
    """Fail as the publish would, before the run is registered: arguments that do not fit
    the task's signature (``TypeError``, as Celery checks them) or that the message's
    serializer cannot encode (kombu's ``EncodeError``)."""
    if task.typing:
        header = getattr(task, "__header__", None)
        if header is not None:
            header(*(args or ()), **(kwargs or {}))
    serializer = options.get("serializer") or task.serializer
    encode_message: Any = serialization.dumps  # untyped in kombu
    try:
        encode_message((list(args or ()), dict(kwargs or {})), serializer=serializer)
    except (RecursionError, EncodeError) as exc:
        cause = exc.__cause__ or exc.__context__ if isinstance(exc, EncodeError) else exc
        if not isinstance(cause, RecursionError):
            raise
        raise SerializationError(f"{task.name}: the arguments are nested too deeply to be "
                                 f"sent with the {serializer} serializer") from None


def _new_run(task: Task, run_id: str, args: Any, kwargs: Any, options: dict[str, Any],
             idempotency_key: str | None = None, tags: list[str] | None = None) -> NewRun:
    """The run a trigger is about to publish: its arguments, routing, trace context and labels.

    The routing lets the sweeper re-send a lost first message where it was
    going; the trace header keeps every delivery in the trace that sent it.
    """
    settings = settings_for(task.app)
    serializer = get_serializer(settings.serializer)
    max_bytes = settings.max_checkpoint_bytes
    current = task.app.current_worker_task  # as send_task fills them in
    if current is not None and current.request.id:
        options = {"root_id": current.request.root_id or current.request.id,
                   "parent_id": current.request.id, **options}
    stored = message_options(options)
    return NewRun(id=run_id, task=task.name, options=stored, idempotency_key=idempotency_key,
                  tags=tags if tags is not None else run_tags(task),
                  version=code_version(task),
                  args=encode(serializer, list(args or ()), max_bytes=max_bytes,
                              what="task arguments", run_id=run_id),
                  kwargs=encode(serializer, dict(kwargs or {}), max_bytes=max_bytes,
                                what="task keyword arguments", run_id=run_id))


__all__ = ["register", "trigger"]
