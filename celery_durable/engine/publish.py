"""A run's message: what is kept of it, and sending it again.

Whatever re-sends a run (a retry whose delay waits in the store, the sweeper
recovering a run whose worker died, a timer, ``retry_run``) must send the
message Celery would have sent: the same routing, and everything Celery acts
on when the task ends (the rest of a chain, ``link``/``link_error``
callbacks, the chord it belongs to, its group, root and parent ids, its
expiry, headers and stamps). Those are the run's *message options*, stored
with the run when it is registered (``apply_async``) or first delivered.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from kombu.utils import json as kombu_json

from ..config import settings_for
from ..records import RunRecord
from ..serialization import decode, get_serializer
from .pinning import SEPARATOR, base_queue, pinned

logger = logging.getLogger(__name__)

# kombu's JSON (signatures, datetimes, UUIDs and Decimals as Celery's own messages carry them)
_kombu_dumps: Callable[[Any], str] = kombu_json.dumps
_kombu_loads: Callable[[str], Any] = kombu_json.loads

#: apply_async options that decide where a run's message goes.
ROUTING = ("queue", "exchange", "routing_key", "priority")
#: apply_async options Celery acts on beyond the routing: kept for every re-send.
CONTINUATION = ("link", "link_error", "chain", "chord", "group_id", "group_index", "root_id",
                "parent_id", "expires", "headers", "shadow", "time_limit", "soft_time_limit",
                "ignore_result", "replaced_task_nesting", "stamped_headers")


def _json_safe(name: str, value: Any) -> tuple[bool, Any]:
    """``value`` as the store keeps it: plain JSON, as kombu's encoder writes it (signatures
    are dicts; bytes, UUIDs and Decimals carry kombu's type markers, which
    :func:`publish_run` turns back into values); ``(False, None)`` when it cannot be kept."""
    if isinstance(value, dt.datetime):
        return True, value.isoformat()
    try:
        return True, json.loads(_kombu_dumps(value))
    except Exception as exc:  # kept out of the store; the first message still carries it
        logger.warning("celery_durable: the message option %r (%s) cannot be stored as "
                       "JSON; a re-sent message will not carry it", name, type(exc).__name__)
        return False, None


def message_options(options: Mapping[str, Any], *, now: dt.datetime | None = None
                    ) -> dict[str, Any]:
    """The message options of ``apply_async(**options)`` to keep with the run.

    A relative ``expires`` (seconds) becomes the absolute time it means, so a
    re-sent message expires when the first one would have.
    """
    names = [*ROUTING, *CONTINUATION, *(options.get("stamped_headers") or ())]
    kept: dict[str, Any] = {}
    for name in names:
        value = options.get(name)
        if value is None or value in ("", [], {}):
            continue
        if name == "expires" and isinstance(value, (int, float)):
            value = (now or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(seconds=value)
        ok, stored = _json_safe(name, value)
        if ok:
            kept[name] = stored
    return kept


def delivery_options(request: Any) -> dict[str, Any]:
    """The message options of a received message (for a run its first delivery creates)."""
    info = getattr(request, "delivery_info", None) or {}
    execution = request.as_execution_options() if hasattr(request, "as_execution_options") else {}
    routing: dict[str, Any] = {"priority": info.get("priority")}
    key = info.get("routing_key")
    if key and SEPARATOR in str(key):  # a version queue (durable_pin_version): its base queue
        routing["queue"] = base_queue(str(key))
    elif info.get("exchange") == "" and key:
        routing["queue"] = key  # sent to the default exchange (as Celery maps it)
    else:
        routing.update(exchange=info.get("exchange"), routing_key=info.get("routing_key"))
    return message_options({**execution, **routing})


def publish_run(app: Celery, run: RunRecord, **extra: Any) -> AsyncResult:
    """Publish ``run``'s message again: same task id, same message options, plus ``extra``
    (to its version's queue under ``durable_pin_version``)."""
    serializer = get_serializer(settings_for(app).serializer)
    args = decode(serializer, run.args, what="arguments", run_id=run.id)
    kwargs = decode(serializer, run.kwargs, what="keyword arguments", run_id=run.id)
    options = pinned(app, run.task, run.version, {**_revived(run.options), **extra})
    return app.send_task(run.task, args=args, kwargs=kwargs, task_id=run.id, **options)


def _revived(options: Mapping[str, Any]) -> dict[str, Any]:
    """Stored message options with kombu's type markers turned back into values (bytes...)."""
    try:
        revived: dict[str, Any] = _kombu_loads(json.dumps(dict(options)))
    except Exception:  # not from message_options (a hand-written store): as they are
        return dict(options)
    return revived
