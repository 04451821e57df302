"""What a run is labelled with when it starts: its tags and the code version.

Tags come from ``@durable_task(tags=[...])`` plus ``apply_async(..., tags=[...])``;
the version from ``@durable_task(version=...)``, else the ``durable_version``
setting. Both are recorded once, when the run is created, and filter
``list_runs``, ``celery durable runs`` and the admin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import Task

from ..config import settings_for
from ..tags import check_tags


def run_tags(task: Task, given: Iterable[str] | None = None) -> list[str]:
    """The task's own tags followed by ``given`` (checked; ValueError/TypeError names a bad one)."""
    own: Any = getattr(task, "tags", None) or ()
    if given is None:
        return check_tags(own)
    if isinstance(given, str):
        raise TypeError(f"{task.name}: tags must be a list of strings, not a string")
    return check_tags([*own, *given])


def code_version(task: Task) -> str | None:
    """The version a run of ``task`` starts under (None: not versioned)."""
    version = getattr(task, "version", None) or settings_for(task.app).version
    if version is None:
        return None
    if not isinstance(version, str) or not version or len(version) > 128:
        raise ValueError(f"{task.name}: a version is text of 1 to 128 characters, "
                         f"not {version!r}")
    return version
