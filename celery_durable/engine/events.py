"""Step events for Flower and other Celery event consumers.

When a worker sends task events (``celery worker -E`` or
``worker_send_task_events = True``), every executed step of a durable run
also sends a task event through the task's event dispatcher, next to
Celery's own ``task-received`` / ``task-started`` / ``task-succeeded``:

=======================  =========================================================
``task-step-started``    ``uuid`` (the run id), ``step`` (key, e.g. ``charge#0``),
                         ``step_name``, ``attempt``, ``position``
``task-step-succeeded``  the same, plus ``duration`` (seconds)
``task-step-failed``     the same, plus ``error`` (``Type: message``),
                         ``will_retry`` (bool) and ``delay`` (seconds until the
                         retry, or None when the run is dead-lettered)
=======================  =========================================================

Replayed steps send nothing: the events describe work actually done. The
events hang off :mod:`celery_durable.signals` (``step_started``,
``step_succeeded``, ``step_failed``, ``step_retrying``); their receivers are
connected only in workers that send task events, so a worker without ``-E``
pays nothing. (The fields avoid the names of Flower's task attributes such
as ``name`` and ``exception``, which an event's fields would overwrite.)
"""

from __future__ import annotations

import logging
from typing import Any

from .. import signals

logger = logging.getLogger(__name__)

STEP_STARTED = "task-step-started"
STEP_SUCCEEDED = "task-step-succeeded"
STEP_FAILED = "task-step-failed"

_enabled = False


def _send(sender: Any, type_: str, **fields: Any) -> None:
    if sender is None or not hasattr(sender, "send_event"):
        return
    try:
        sender.send_event(type_, **fields)
    except Exception:  # monitoring must never fail a step
        logger.warning("could not send the %s event", type_, exc_info=True)


def _started(sender: Any = None, step: str = "", name: str = "", attempt: int = 0,
             position: int = 0, **kwargs: Any) -> None:
    _send(sender, STEP_STARTED, step=step, step_name=name, attempt=attempt, position=position)


def _succeeded(sender: Any = None, step: str = "", name: str = "", attempt: int = 0,
               position: int = 0, duration: float = 0.0, **kwargs: Any) -> None:
    _send(sender, STEP_SUCCEEDED, step=step, step_name=name, attempt=attempt,
          position=position, duration=duration)


def _error(error: BaseException | None) -> str:
    return "" if error is None else f"{type(error).__name__}: {error}"[:1000]


def _failed(sender: Any = None, step: str = "", name: str = "", attempt: int = 0,
            position: int = 0, duration: float = 0.0, error: BaseException | None = None,
            **kwargs: Any) -> None:
    _send(sender, STEP_FAILED, step=step, step_name=name, attempt=attempt, position=position,
          duration=duration, error=_error(error), will_retry=False, delay=None)


def _retrying(sender: Any = None, step: str = "", name: str = "", attempt: int = 0,
              position: int = 0, duration: float = 0.0, error: BaseException | None = None,
              delay: float | None = None, **kwargs: Any) -> None:
    _send(sender, STEP_FAILED, step=step, step_name=name, attempt=attempt, position=position,
          duration=duration, error=_error(error), will_retry=True, delay=delay)


def enable() -> None:
    """Send step events from this process (and the pool processes it forks); idempotent."""
    global _enabled
    if _enabled:
        return
    signals.step_started.connect(_started, weak=False)
    signals.step_succeeded.connect(_succeeded, weak=False)
    signals.step_failed.connect(_failed, weak=False)
    signals.step_retrying.connect(_retrying, weak=False)
    _enabled = True


def disable() -> None:
    """Stop sending step events from this process."""
    global _enabled
    for signal, receiver in ((signals.step_started, _started),
                             (signals.step_succeeded, _succeeded),
                             (signals.step_failed, _failed),
                             (signals.step_retrying, _retrying)):
        signal.disconnect(receiver)
    _enabled = False


__all__ = ["STEP_FAILED", "STEP_STARTED", "STEP_SUCCEEDED", "disable", "enable"]
