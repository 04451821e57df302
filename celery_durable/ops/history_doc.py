"""A run's recorded history as a JSON document: exported from the store, replayed by
:func:`celery_durable.testing.replay` against new code (the deploy gate), loaded in a
debugger.

The document keeps every stored value as the store holds it (serialized text), so a
replay sees exactly what the run saw. A digest over its content tells an edited or
truncated file from an exported one; :func:`load_history` refuses anything that is not
a complete history of ours, naming the file and the first bad entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from ..config import app_or_current, settings_for
from ..engine.branches import BRANCH_MARK
from ..errors import RunNotFoundError
from ..records import STEP_STATUS_BY_VALUE, ErrorInfo, RunRecord, StepRecord
from ..stores import get_store

#: What ``format`` says in every history document.
FORMAT = "celery_durable.history"
#: The document version this code writes and reads.
FORMAT_VERSION = 1


class HistoryFileError(ValueError):
    """A history document that cannot be replayed: not ours, newer, truncated or edited."""


def _step(record: StepRecord) -> dict[str, Any]:
    error = record.error
    return {"position": record.position, "key": record.key, "name": record.name,
            "status": record.status.value, "attempts": record.attempts, "value": record.value,
            "error": None if error is None else {"type": error.type,
                                                 "message": error.message}}


def _digest(doc: Mapping[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def history_of(run: RunRecord, serializer: str) -> dict[str, Any]:
    """The history document of ``run`` (with its checkpoints)."""
    doc: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "run_id": run.id,
        "task": run.task, "version": run.version, "status": run.status.value,
        "serializer": serializer, "args": run.args, "kwargs": run.kwargs,
        "result": run.result, "steps": [_step(s) for s in run.steps]}
    doc["digest"] = _digest(doc)
    return doc


def export_run(run_id: str, *, app: Celery | None = None) -> dict[str, Any]:
    """The history document of run ``run_id`` (``celery -A proj durable export``)."""
    app = app_or_current(app)
    run = get_store(app).get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"no durable run {run_id}", run_id=run_id)
    return history_of(run, settings_for(app).serializer)


@dataclass(frozen=True)
class History:
    """A loaded, checked history document."""

    source: str
    run_id: str
    task: str
    version: str | None
    serializer: str
    args: str
    kwargs: str
    steps: dict[int, StepRecord]


def _bad(source: str, what: str) -> HistoryFileError:
    return HistoryFileError(f"{source}: {what}; it cannot be replayed (export it again "
                            "with `celery -A proj durable export RUN_ID`)")


def load_history(source: str | Path | Mapping[str, Any]) -> History:
    """Read and check a history document: a path, JSON text or the exported dict."""
    name = "the history"
    if isinstance(source, Path) or (isinstance(source, str)
                                    and not source.lstrip().startswith("{")):
        name = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise HistoryFileError(f"{name}: cannot be read: {exc}") from exc
    elif isinstance(source, str):
        text = source
    else:
        text = None
        doc: Any = dict(source)
    if text is not None:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise _bad(name, f"not JSON (truncated?): {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(name, "not a celery_durable history document")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _bad(name, f"format version {version!r} is newer than this celery_durable "
                         f"reads ({FORMAT_VERSION})")
    if doc.get("digest") != _digest(doc):
        raise _bad(name, "its content does not match its digest (edited or truncated "
                         "after export)")
    return History(name, str(doc["run_id"]), str(doc["task"]), doc.get("version"),
                   str(doc.get("serializer") or "json"), str(doc["args"]),
                   str(doc["kwargs"]), _steps(name, doc.get("steps")))


def _steps(name: str, entries: Any) -> dict[int, StepRecord]:
    if not isinstance(entries, list):
        raise _bad(name, "its steps are not a list")
    steps: dict[int, StepRecord] = {}
    seen: dict[tuple[str, str], int] = {}
    # An async body's branches may leave gaps (steps in flight when it stopped); a sync
    # body's positions are 0, 1, 2, …
    gaps = any(isinstance(e, dict) and BRANCH_MARK in str(e.get("key", "")) for e in entries)
    expected = 0
    for i, entry in enumerate(entries):
        where = f"step entry {i}"
        try:
            position, key, step_name = entry["position"], entry["key"], entry["name"]
            status = STEP_STATUS_BY_VALUE[entry["status"]]
            attempts, value, error = int(entry["attempts"]), entry["value"], entry["error"]
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(name, f"{where} is incomplete or malformed ({exc!r})") from exc
        if not isinstance(position, int) or position < expected or (
                position != expected and not gaps):
            raise _bad(name, f"{where} is at position {position!r}, expected {expected} "
                             f"{'or more ' if gaps else ''}(a step is missing or out of order)")
        expected = position + 1
        # The n-th call of a name has key name#n, or name#n@branch in an async body's
        # branch (patched() counts calls it records no marker for, so its numbers may
        # skip): increasing per name and branch.
        stem, _, tail = str(key).rpartition("#")
        number, _, branch = tail.partition(BRANCH_MARK)
        counted = (step_name, branch)
        if stem != step_name or not number.isdigit() or int(number) < seen.get(counted, 0):
            raise _bad(name, f"{where} has key {key!r}, which does not follow the earlier "
                             f"calls of {step_name!r}")
        seen[counted] = int(number) + 1
        if value is not None and not isinstance(value, str):
            raise _bad(name, f"{where} ({key}) has a value that is not stored text")
        info = None if not error else ErrorInfo(str(error.get("type", "")),
                                                str(error.get("message", "")))
        steps[position] = StepRecord(position, key, step_name, status, attempts, value, info)
    return steps


__all__ = ["FORMAT", "FORMAT_VERSION", "History", "HistoryFileError", "export_run",
           "history_of", "load_history"]
