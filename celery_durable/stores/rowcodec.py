"""Rows of a SQL database as the engine's records, and back: shared by the SQL stores.

The Django store (``celery_durable_django.store``) and the SQLAlchemy store
(:mod:`celery_durable.stores.sql`) keep a run in one row and each checkpoint
in a row of its own, with the same columns. This module converts between
those rows and :class:`~celery_durable.records.RunRecord` /
:class:`~celery_durable.records.StepRecord`; it imports neither Django nor
SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..records import (
    STEP_STATUS_BY_VALUE,
    ErrorInfo,
    OnDemandCheckpoints,
    RetryInfo,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    WaitInfo,
)
from .transitions import Control

#: Step columns written by a checkpoint, in the order of :func:`step_values`.
STEP_COLUMNS = ("position", "key", "name", "status", "attempts", "value", "error_type",
                "error_message", "error_traceback", "started_at", "finished_at", "error_logs",
                "atomic")

#: A run's status by its stored value.
STATUS_BY_VALUE = {status.value: status for status in RunStatus}

#: The run's wait columns, by the :class:`~celery_durable.records.WaitInfo` field they hold.
WAIT_COLUMNS = {"kind": "wait_kind", "step": "wait_step", "position": "wait_position",
                "wait_id": "wait_id", "until": "wait_until", "event": "wait_event",
                "key": "wait_key", "after": "wait_after"}


def error_of(type_: str, message: str, traceback: str) -> ErrorInfo | None:
    """The stored error columns as an ErrorInfo, or None when there is no error."""
    return ErrorInfo(type_, message, traceback) if type_ else None


def error_fields(error: ErrorInfo | None) -> dict[str, str]:
    """The error columns for ``error`` (empty strings for none)."""
    if error is None:
        return {"error_type": "", "error_message": "", "error_traceback": ""}
    return {"error_type": error.type[:255], "error_message": error.message,
            "error_traceback": error.traceback}


def wait_fields(wait: WaitInfo) -> dict[str, Any]:
    """The ``wait_*`` columns for ``wait`` (its resolution cleared)."""
    fields = {column: getattr(wait, name) for name, column in WAIT_COLUMNS.items()}
    fields["wait_resolution"] = None
    return fields


def step_logs(text: str) -> list[str]:
    """The ``error_logs`` column as a list of lines (empty if unset or unreadable)."""
    if not text:
        return []
    try:
        lines = json.loads(text)
    except ValueError:
        return [text]
    return [str(line) for line in lines] if isinstance(lines, list) else [str(lines)]


def step_values(step: StepRecord) -> list[Any]:
    """The values of :data:`STEP_COLUMNS` for ``step``."""
    err = error_fields(step.error)
    logs = json.dumps(step.error.logs) if step.error is not None and step.error.logs else ""
    return [step.position, step.key, step.name, step.status.value, step.attempts, step.value,
            err["error_type"], err["error_message"], err["error_traceback"], step.started_at,
            step.finished_at, logs, step.atomic]


def step_columns(step: StepRecord) -> dict[str, Any]:
    """``step`` as its :data:`STEP_COLUMNS` by name."""
    return dict(zip(STEP_COLUMNS, step_values(step), strict=True))


def control(row: Mapping[str, Any]) -> Control:
    """The fields of a run row that :mod:`~celery_durable.stores.transitions` decides on
    (its status must be readable: see :func:`unreadable_field`)."""
    return Control(RunStatus(row["status"]), row["owner"], row["lease_expires"],
                   row["not_before"], row["due_at"], row["recoveries"], row["token"],
                   row["started_at"] is not None)


def step_record(row: Sequence[Any]) -> StepRecord:
    """One :data:`STEP_COLUMNS` row as a record."""
    (position, key, name, status, attempts, value, error_type, error_message,
     error_traceback, started_at, finished_at, logs, atomic) = row
    error = None
    if error_type:
        error = ErrorInfo(error_type, error_message, error_traceback, step_logs(logs))
    return StepRecord(position, key, name, STEP_STATUS_BY_VALUE[status], attempts, value,
                      error, started_at, finished_at, atomic=bool(atomic))


_SUCCEEDED = StepStatus.SUCCEEDED.value
_KEY, _STATUS, _ATTEMPTS, _VALUE = (STEP_COLUMNS.index(c)
                                    for c in ("key", "status", "attempts", "value"))


class RowCheckpoints(OnDemandCheckpoints):
    """Checkpoints by position over their rows: a record is built when it is asked for.

    Replaying a success needs only its key, status and value
    (:meth:`succeeded_value`), read from the row; building a record for every
    checkpoint of a long run cost about a third of loading it. A row that
    cannot be a record raises :class:`CorruptCheckpointError` naming the run and
    the position when it is first asked for, and replay stops there.
    """

    def __init__(self, run_id: str, rows: Iterable[Sequence[Any]]) -> None:
        super().__init__(run_id)
        # (rows come in position order, so the last key is the last position)
        self._rows: dict[int, Sequence[Any] | None] = {row[0]: row for row in rows}

    def _build(self, position: int) -> StepRecord | None:
        row = self._rows.get(position)
        if row is None:
            return None
        try:
            record = self._built[position] = step_record(row)
        except (KeyError, ValueError, TypeError) as exc:
            raise self._corrupt(position, exc) from exc
        return record

    def _stored_success(self, position: int, key: str) -> str | None:
        row = self._rows.get(position)
        if row is not None and row[_KEY] == key and row[_STATUS] == _SUCCEEDED:
            return row[_VALUE] or "null"
        return None

    def last_step(self) -> tuple[str, int]:
        """The key and attempts of the checkpoint at the highest position, ``("", 0)`` if none.

        Read from the row as loaded (no record is built, so a corrupt row is
        reported by replay, naming its position, not by ``begin``).
        """
        row = self._rows[next(reversed(self._rows))] if self._rows else None
        return (str(row[_KEY]), int(row[_ATTEMPTS])) if row is not None else ("", 0)

    def __setitem__(self, position: int, record: StepRecord) -> None:
        self._built[position] = record
        self._rows.setdefault(position, None)

    def __delitem__(self, position: int) -> None:
        del self._rows[position]
        self._built.pop(position, None)

    def __contains__(self, position: object) -> bool:
        return position in self._rows

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._rows))

    def __len__(self) -> int:
        return len(self._rows)


def strings(value: Any) -> list[str]:
    """A JSON list column as a list of strings (anything else reads as empty)."""
    return [str(v) for v in value] if isinstance(value, list) else []


def wait_record(row: Mapping[str, Any]) -> WaitInfo | None:
    """The run's current or last durable wait, or None if it never waited."""
    if not row["wait_kind"]:
        return None
    return WaitInfo(**{name: row[column] for name, column in WAIT_COLUMNS.items()},
                    resolution=row["wait_resolution"])


def _as_is(value: Any) -> float | None:
    return None if value is None else float(value)


def run_record(row: Mapping[str, Any], steps: Iterable[StepRecord] = (), *,
               seconds: Callable[[Any], float | None] = _as_is) -> RunRecord:
    """A run row (its columns by name) and its checkpoints as the engine's RunRecord.

    ``seconds`` turns the stored ``created_at``, ``updated_at``, ``started_at``
    and ``finished_at`` into epoch seconds. An unknown status reads as FAILED,
    named in ``damage`` (the run is listed, not run).
    """
    status = STATUS_BY_VALUE.get(row["status"])
    metadata = row["metadata"]
    record = RunRecord(
        id=row["id"], task=row["task"], status=status or RunStatus.FAILED, args=row["args"],
        kwargs=row["kwargs"], options=dict(row["options"] or {}),
        created_at=seconds(row["created_at"]), updated_at=seconds(row["updated_at"]),
        started_at=seconds(row["started_at"]), finished_at=seconds(row["finished_at"]),
        token=row["token"], owner=row["owner"], lease_expires=row["lease_expires"],
        not_before=row["not_before"], due_at=row["due_at"], recoveries=row["recoveries"],
        result=row["result"],
        error=error_of(row["error_type"], row["error_message"], row["error_traceback"]),
        failed_step=row["failed_step"], idempotency_key=row["idempotency_key"],
        steps=list(steps), wait=wait_record(row), parent=row["parent"],
        children_done=row["children_done"], tags=strings(row["tags"]), version=row["version"],
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
        retries=row["retries"], replay_of=row["replay_of"],
        replayed_as=strings(row["replayed_as"]))
    damage = [] if status is not None else [f"status (unknown: {str(row['status'])[:60]!r})"]
    if row["retrying"]:
        try:
            record.retrying = RetryInfo.from_json(row["retrying"])
        except (ValueError, TypeError) as exc:
            damage.append(f"retrying ({exc})")
    if not isinstance(metadata, dict):
        damage.append("metadata (not a JSON object)")
    record.damage = damage
    return record


def unreadable_field(status: Any) -> str | None:
    """The control field that cannot be read (an unknown ``status``), or None.

    The database's column types keep the numbers sound; the status is a string.
    """
    return None if status in STATUS_BY_VALUE else "status"


__all__ = ["STATUS_BY_VALUE", "STEP_COLUMNS", "WAIT_COLUMNS", "RowCheckpoints", "control",
           "error_fields", "error_of", "run_record", "step_columns", "step_logs", "step_record",
           "step_values", "strings", "unreadable_field", "wait_fields", "wait_record"]
