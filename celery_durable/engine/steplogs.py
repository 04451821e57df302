"""Logs per step: tag log records with the run and step, keep a failed step's last lines.

* :class:`StepLogFilter` adds ``run_id`` and ``step`` attributes to every log
  record (empty strings outside a step), so a handler's format string can
  use ``%(run_id)s`` and ``%(step)s``::

      handler.addFilter(StepLogFilter())
      handler.setFormatter(logging.Formatter("%(levelname)s [%(run_id)s %(step)s] %(message)s"))

  :func:`step_logger` returns a :class:`logging.LoggerAdapter` doing the same
  for one logger, without touching handlers.
* While a step runs, the records reaching the root logger (or Celery's
  ``celery.task`` logger, which does not propagate) are also kept in
  memory, the last ``durable_step_log_lines`` (default 50; 0 turns this
  off) of them. If the step raises, they are stored with its error
  (``ErrorInfo.logs``) and shown in the admin and ``celery durable show``.
  Capture costs one context variable per step and nothing per record
  logged outside a step.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

from .context import current_step

#: Format of a captured line.
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Longest captured line, in characters.
MAX_LINE = 2000

_lines: ContextVar[deque[str] | None] = ContextVar("celery_durable_step_lines", default=None)


class StepLogFilter(logging.Filter):
    """Add ``run_id`` and ``step`` (the step key) to each record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag ``record`` with the running step (empty strings outside a step)."""
        ctx = current_step.get()
        if ctx is None:
            if not hasattr(record, "run_id"):
                record.run_id = ""
            if not hasattr(record, "step"):
                record.step = ""
        else:
            record.run_id = ctx.run_id
            record.step = ctx.key
        return True


class StepLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A LoggerAdapter whose records carry ``run_id`` and ``step`` of the running step."""

    def process(self, msg: Any,
                kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Add ``run_id`` and ``step`` to the record's ``extra``."""
        ctx = current_step.get()
        extra = dict(self.extra or {})
        extra["run_id"] = ctx.run_id if ctx is not None else ""
        extra["step"] = ctx.key if ctx is not None else ""
        kwargs["extra"] = {**extra, **(kwargs.get("extra") or {})}
        return msg, kwargs


def step_logger(name: str | logging.Logger) -> StepLoggerAdapter:
    """A logger adapter tagging records with ``run_id`` and ``step``: ``step_logger(__name__)``."""
    logger = name if isinstance(name, logging.Logger) else logging.getLogger(name)
    return StepLoggerAdapter(logger, {})


class _CaptureHandler(logging.Handler):
    """On the root logger: appends records logged while a step runs to that step's buffer."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter(LINE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        lines = _lines.get()
        if lines is None:
            return
        try:
            lines.append(self.format(record)[:MAX_LINE])
        except Exception:  # a broken record must not fail the step
            self.handleError(record)


_handler = _CaptureHandler()
_root = logging.getLogger()
_task_logger = logging.getLogger("celery.task")


def install() -> None:
    """Attach the capture handler to the root logger (idempotent; cheap to call often).

    Also to Celery's ``celery.task`` logger while it does not propagate (as
    the worker sets it up), so ``get_task_logger(__name__)`` lines are kept.
    """
    root, task_logger = _root, _task_logger
    if _handler not in root.handlers:
        root.addHandler(_handler)
    if not task_logger.propagate:
        if _handler not in task_logger.handlers:
            task_logger.addHandler(_handler)
    elif _handler in task_logger.handlers:
        task_logger.removeHandler(_handler)


def start(max_lines: int) -> deque[str] | None:
    """Start capturing the running step's log lines (None when capture is off)."""
    if max_lines <= 0:
        return None
    install()
    lines: deque[str] = deque(maxlen=int(max_lines))
    _lines.set(lines)
    return lines


def stop(lines: deque[str] | None) -> None:
    """Stop capturing (after the step returned or raised)."""
    if lines is not None:
        _lines.set(None)


__all__ = ["StepLogFilter", "StepLoggerAdapter", "step_logger"]
