"""Whether arguments fit a task, checked before anything is sent (a replay, a webhook)."""

from __future__ import annotations

import inspect
from typing import Any


def misfit(task: Any, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """Why ``args``/``kwargs`` cannot be passed to ``task``'s body (its ``run``), naming the
    task and its signature; None when they fit."""
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return "arguments must be a JSON list and keyword arguments a JSON object"
    signature = inspect.signature(task.run)
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return f"arguments do not fit {task.name}{signature}: {exc}"
    return None


__all__ = ["misfit"]
