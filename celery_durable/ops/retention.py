"""Retention: how long finished runs are kept, and purging them.

* A run that ``SUCCEEDED`` or was ``CANCELLED`` is kept
  ``durable_result_retention`` seconds (default 7 days; 0 keeps it forever).
  RedisStore sets an expiry on the run when it finishes; DjangoStore stamps
  ``expires_at`` and deletes expired rows while sweeping. On top of that the
  worker's sweeper calls :func:`purge_expired` every
  ``durable_purge_interval`` seconds (default an hour; 0: never), which also
  catches runs cancelled with ``cancel_run`` and runs of stores without an
  expiry (MemoryStore); the ``celery_durable.purge_finished`` periodic task
  does the same from beat.
* A dead-lettered (``FAILED``) run is kept until it is retried or purged
  explicitly: ``purge_runs(finished_before=..., status="FAILED")`` or
  ``celery -A proj durable purge --finished-before 30d --status FAILED``.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable

from celery import Celery

from ..config import app_or_current, settings_for
from ..records import FINISHED, RunStatus
from ..stores import get_store
from ..stores.base import IdempotencyKeys, idempotency_keys_of, retention_of

#: What ``purge_runs`` deletes when no status is given: never dead letters.
DEFAULT_PURGE_STATUSES = (RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.REPLACED)

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNIT = {"w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_age(text: str) -> float:
    """``"30s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"1w"``, ``"1h30m"`` or plain seconds → seconds.

    Raises ValueError for anything else.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0 and not value.startswith("-"):
        parts = _AGE.findall(value)
        if not parts or "".join(f"{n}{u}" for n, u in parts).lower() != re.sub(
                r"\s+", "", value).lower():
            raise ValueError(f"not an age: {text!r} (use e.g. 90s, 15m, 2h, 7d, 1w, 1h30m)")
        seconds = sum(float(n) * _UNIT[u.lower()] for n, u in parts)
    if seconds < 0 or value.startswith("-"):
        raise ValueError(f"an age cannot be negative: {text!r}")
    return seconds


def _cutoff(finished_before: dt.datetime | dt.timedelta | float) -> float:
    if isinstance(finished_before, dt.timedelta):
        return time.time() - finished_before.total_seconds()
    if isinstance(finished_before, dt.datetime):
        if finished_before.tzinfo is None:
            raise ValueError("finished_before needs a timezone-aware datetime")
        return finished_before.timestamp()
    return float(finished_before)


def _statuses(status: RunStatus | str | Iterable[RunStatus | str] | None) -> list[RunStatus]:
    if status is None:
        return list(DEFAULT_PURGE_STATUSES)
    items = [status] if isinstance(status, (str, RunStatus)) else list(status)
    out = [RunStatus(str(s).upper()) for s in items]
    unfinished = [s.value for s in out if s not in FINISHED]
    if unfinished:
        raise ValueError(f"only finished runs can be purged, not {', '.join(unfinished)}")
    return out


def purge_runs(*, finished_before: dt.datetime | dt.timedelta | float,
               status: RunStatus | str | Iterable[RunStatus | str] | None = None,
               limit: int | None = None, app: Celery | None = None) -> int:
    """Delete finished runs (and their checkpoints); return how many were deleted.

    ``finished_before`` is a timezone-aware datetime, a timedelta (an age:
    runs that finished longer ago than that) or epoch seconds. ``status`` is
    one final state or several; by default ``SUCCEEDED`` and ``CANCELLED``
    only, so dead letters (``FAILED``) go only when asked for by name.
    ``limit`` caps how many runs go in this call (None: all).
    """
    app = app_or_current(app)
    cutoff, statuses = _cutoff(finished_before), _statuses(status)
    store = retention_of(get_store(app))
    total, batch = 0, 500
    while limit is None or total < limit:
        want = batch if limit is None else min(batch, limit - total)
        done = len(store.purge_runs(finished_before=cutoff, statuses=statuses, limit=want))
        total += done
        if done < want:
            break
    return total


def purge_expired(app: Celery) -> int:
    """Purge SUCCEEDED and CANCELLED runs older than ``durable_result_retention``.

    Expired idempotency keys go too (whatever the retention). Returns how
    many runs were purged.
    """
    store, now = get_store(app), time.time()
    if store.supports(IdempotencyKeys):
        keys = idempotency_keys_of(store)
        while keys.purge_idempotency_keys(expired_before=now, limit=1000) == 1000:
            pass
    retention = float(settings_for(app).result_retention)
    if retention <= 0:
        return 0
    return purge_runs(finished_before=now - retention, app=app)


__all__ = ["DEFAULT_PURGE_STATUSES", "parse_age", "purge_expired", "purge_runs"]
