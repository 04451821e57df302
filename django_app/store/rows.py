"""Conversions between model rows and the engine's records, and the one-statement SQL.

Kept apart from :mod:`.django_store` so the store reads as the contract's
decisions, and this module as the plumbing.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import QuerySet

from celery_durable.records import (
    STEP_STATUS_BY_VALUE,
    ErrorInfo,
    HistoryEntry,
    OnDemandCheckpoints,
    RetryInfo,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    WaitInfo,
)

from ..models import HistoryRow, Run, RunTag, Step

#: Step columns written by a checkpoint, in the order of :func:`step_values`.
STEP_COLUMNS = ("position", "key", "name", "status", "attempts", "value", "error_type",
                "error_message", "error_traceback", "started_at", "finished_at", "error_logs")
#: PostgreSQL types of :data:`STEP_COLUMNS` (client-side bound literals need casts).
_PG_TYPES = ("integer", "varchar", "varchar", "varchar", "integer", "text", "varchar", "text",
             "text", "double precision", "double precision", "text")


#: The run's times kept as DateTimeFields (the others are epoch seconds).
DATETIME_FIELDS = frozenset({"created_at", "updated_at", "started_at", "finished_at"})


def to_datetime(seconds: float | None) -> dt.datetime | None:
    """Epoch seconds as the datetime a DateTimeField stores (aware UTC, or naive local)."""
    if seconds is None:
        return None
    if settings.USE_TZ:
        return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return dt.datetime.fromtimestamp(seconds)


def to_seconds(value: dt.datetime | None) -> float | None:
    """A DateTimeField value as epoch seconds."""
    return None if value is None else value.timestamp()


def error_of(type_: str, message: str, traceback: str) -> ErrorInfo | None:
    """The stored error columns as an ErrorInfo, or None when there is no error."""
    return ErrorInfo(type_, message, traceback) if type_ else None


def step_logs(text: str) -> list[str]:
    """The ``error_logs`` column as a list of lines (empty if unset or unreadable)."""
    if not text:
        return []
    try:
        lines = json.loads(text)
    except ValueError:
        return [text]
    return [str(line) for line in lines] if isinstance(lines, list) else [str(lines)]


def step_records(using: str, run_id: str) -> list[StepRecord]:
    """The checkpoints of ``run_id`` (database alias ``using``) in position order.

    Read as plain rows, not model instances: a run with 1,000 checkpoints
    loads in about a third of the time (measured in ``bench/NOTES.md``).
    """
    return [_step_record(row) for row in _step_rows(using, run_id)]


def _step_record(row: Sequence[Any]) -> StepRecord:
    """One :data:`STEP_COLUMNS` row as a record."""
    (position, key, name, status, attempts, value, error_type, error_message,
     error_traceback, started_at, finished_at, logs) = row
    error = None
    if error_type:
        error = ErrorInfo(error_type, error_message, error_traceback, step_logs(logs))
    return StepRecord(position, key, name, STEP_STATUS_BY_VALUE[status], attempts, value,
                      error, started_at, finished_at)


def checkpoints(using: str, run_id: str) -> RowCheckpoints:
    """The checkpoints of ``run_id`` as ``begin`` hands them to a delivery (see below)."""
    return RowCheckpoints(run_id, _step_rows(using, run_id))


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
            record = self._built[position] = _step_record(row)
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


def _step_rows(using: str, run_id: str) -> Sequence[tuple[Any, ...]] | QuerySet[Any]:
    """The :data:`STEP_COLUMNS` rows of ``run_id``'s checkpoints by position.

    On PostgreSQL and SQLite the query's SQL (compiled once per database:
    :func:`_step_query`) runs on a plain cursor, past ``values_list``'s per-row
    machinery (those two need no conversions for these columns); PostgreSQL
    with psycopg 3 returns the rows in binary, so no number is parsed from
    text. The cursor is wrapped as Django wraps its own, so
    ``execute_wrapper()`` sees the query. Other databases, and any connection
    whose queries Django logs, use ``values_list``.
    """
    connection = connections[using]
    if connection.vendor not in ("postgresql", "sqlite") or connection.queries_logged:
        return _steps_by_position(using, run_id)
    with _reading_cursor(connection) as cursor:
        cursor.execute(_step_query(using, connection.vendor), [run_id])
        return cursor.fetchall()


def _steps_by_position(using: str, run_id: str) -> QuerySet[Any]:
    return (Step.objects.using(using).filter(run_id=run_id).order_by("position")
            .values_list(*STEP_COLUMNS))


@functools.cache
def _step_query(using: str, vendor: str) -> str:
    """The SQL of :func:`_steps_by_position` on ``using``, with the run id as its one parameter.

    (``vendor`` is part of the key: a test may point an alias at another database.)
    """
    # (get_compiler(using=...): Query.sql_with_params() compiles for the default database)
    sql, params = _steps_by_position(using, "").query.get_compiler(using=using).as_sql()
    if list(params) != [""]:
        raise RuntimeError(f"unexpected parameters in the checkpoint query: {params!r}")
    return str(sql)


def _reading_cursor(connection: BaseDatabaseWrapper) -> CursorWrapper:
    """A cursor returning binary results on PostgreSQL with psycopg 3; else Django's own."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if connection.vendor != "postgresql" or not is_psycopg3:
        return connection.cursor()
    import psycopg

    connection.close_if_health_check_failed()  # as connection.cursor() does
    connection.ensure_connection()
    connection.validate_thread_sharing()
    cursor = _unprepared_cursor_class()(connection.connection)  # binary needs server-side
    cursor.format = psycopg.pq.Format.BINARY                     # binding; never prepared
    return connection.make_cursor(cursor)


def unreadable_field(row: Run) -> str | None:
    """The control field of ``row`` that cannot be read (an unknown status), or None.

    The database's column types keep the numbers sound; the status is a string.
    """
    return None if row.status in STATUS_BY_VALUE else "status"


STATUS_BY_VALUE = {status.value: status for status in RunStatus}


def run_record(row: Run, steps: list[StepRecord] | None = None) -> RunRecord:
    """A Run row (and its checkpoints, from :func:`step_records`) as the engine's RunRecord.

    An unknown status reads as FAILED, named in ``damage`` (the run is listed, not run).
    """
    status = STATUS_BY_VALUE.get(row.status)
    record = RunRecord(
        id=row.id, task=row.task, status=status or RunStatus.FAILED, args=row.args,
        kwargs=row.kwargs, options=dict(row.options or {}),
        created_at=to_seconds(row.created_at), updated_at=to_seconds(row.updated_at),
        started_at=to_seconds(row.started_at), finished_at=to_seconds(row.finished_at),
        token=row.token, owner=row.owner, lease_expires=row.lease_expires,
        not_before=row.not_before, due_at=row.due_at, recoveries=row.recoveries,
        result=row.result,
        error=error_of(row.error_type, row.error_message, row.error_traceback),
        failed_step=row.failed_step, idempotency_key=row.idempotency_key,
        steps=list(steps or ()), wait=wait_record(row), parent=row.parent,
        children_done=row.children_done, tags=_strings(row.tags), version=row.version,
        metadata=dict(row.metadata) if isinstance(row.metadata, dict) else {},
        retries=row.retries, replay_of=row.replay_of, replayed_as=_strings(row.replayed_as))
    damage = [] if status is not None else [f"status (unknown: {row.status[:60]!r})"]
    if row.retrying:
        try:
            record.retrying = RetryInfo.from_json(row.retrying)
        except (ValueError, TypeError) as exc:
            damage.append(f"retrying ({exc})")
    if not isinstance(row.metadata, dict):
        damage.append("metadata (not a JSON object)")
    record.damage = damage
    return record


def _strings(value: Any) -> list[str]:
    """A JSON list column as a list of strings (anything else reads as empty)."""
    return [str(v) for v in value] if isinstance(value, list) else []


def history_row(run_id: str, entry: HistoryEntry) -> HistoryRow:
    """An unsaved history row for ``entry``."""
    return HistoryRow(run_id=run_id, kind=entry.kind, at=entry.at, entry=entry.to_json())


def tag_rows(run_id: str, tags: Sequence[str], created: dt.datetime | None) -> list[RunTag]:
    """Unsaved RunTag rows: the tag index of a new run."""
    return [RunTag(run_id=run_id, tag=tag, created_at=created) for tag in tags]


def wait_record(row: Run) -> WaitInfo | None:
    """The run's current or last durable wait, or None if it never waited."""
    if not row.wait_kind:
        return None
    return WaitInfo(kind=row.wait_kind, step=row.wait_step, position=row.wait_position,
                    wait_id=row.wait_id, until=row.wait_until, event=row.wait_event,
                    key=row.wait_key, after=row.wait_after, resolution=row.wait_resolution)


def error_fields(error: ErrorInfo | None) -> dict[str, str]:
    """The error columns for ``error`` (empty strings for none)."""
    if error is None:
        return {"error_type": "", "error_message": "", "error_traceback": ""}
    return {"error_type": error.type[:255], "error_message": error.message,
            "error_traceback": error.traceback}


def step_values(step: StepRecord) -> list[Any]:
    """The values of :data:`STEP_COLUMNS` for ``step``."""
    err = error_fields(step.error)
    logs = json.dumps(step.error.logs) if step.error is not None and step.error.logs else ""
    return [step.position, step.key, step.name, step.status.value, step.attempts, step.value,
            err["error_type"], err["error_message"], err["error_traceback"], step.started_at,
            step.finished_at, logs]


def step_row(run_id: str, step: StepRecord) -> Step:
    """An unsaved Step row for ``step``."""
    return Step(run_id=run_id, **dict(zip(STEP_COLUMNS, step_values(step), strict=True)))


def checkpoint_cursor(connection: BaseDatabaseWrapper) -> CursorWrapper:
    """The cursor that runs :func:`save_step_sql` on ``connection`` (use it as a context manager).

    On PostgreSQL with psycopg 3 it binds parameters server-side and prepares
    the statement on its first execution (see :func:`prepares_checkpoint`), so
    later checkpoints skip PostgreSQL's parse and plan. It is a psycopg cursor
    on Django's connection, wrapped as Django wraps its own: the statement
    runs in the current transaction (``atomic()``) or in autocommit, errors
    are Django's, and ``execute_wrapper()`` sees it. Elsewhere, and while
    Django logs queries (``DEBUG``, ``CaptureQueriesContext``: its log cannot
    show a server-side bound statement's SQL), it is ``connection.cursor()``.
    """
    if connection.queries_logged or not prepares_checkpoint(connection):
        return connection.cursor()
    connection.close_if_health_check_failed()  # as connection.cursor() does
    connection.ensure_connection()
    connection.validate_thread_sharing()
    return connection.make_cursor(_preparing_cursor_class()(connection.connection))


def prepares_checkpoint(connection: BaseDatabaseWrapper) -> bool:
    """Whether :func:`checkpoint_cursor` prepares the checkpoint statement on ``connection``.

    Yes on PostgreSQL with psycopg 3, unless the settings say prepared
    statements cannot be used: ``OPTIONS["prepare_threshold"]`` set to None,
    or ``DISABLE_SERVER_SIDE_CURSORS`` (both mark a pooler in transaction
    mode, such as PgBouncer before 1.21). Django's own default (no
    ``prepare_threshold``) prepares nothing; this one statement is prepared
    anyway, on the connection it runs on.
    """
    if connection.vendor != "postgresql":
        return False
    db = connection.settings_dict
    options = db.get("OPTIONS") or {}
    if db.get("DISABLE_SERVER_SIDE_CURSORS") or (
            "prepare_threshold" in options and options["prepare_threshold"] is None):
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3
    return bool(is_psycopg3)


@functools.cache
def _preparing_cursor_class() -> type[Any]:
    """A psycopg 3 cursor (server-side binding) that prepares what it executes."""
    import psycopg

    class PreparingCursor(psycopg.Cursor):  # type: ignore[type-arg]
        """Executes with ``prepare=True``, even where the connection prepares nothing.

        Django opens psycopg connections with ``prepare_threshold=None``, which
        makes psycopg ignore ``prepare=True``; the threshold is lifted for the
        duration of this cursor's own statement only.
        """

        def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                    binary: bool | None = None) -> Any:
            conn = self.connection
            threshold = conn.prepare_threshold
            if threshold is None:
                conn.prepare_threshold = 5  # any number: prepare=True decides
            try:
                return super().execute(query, params, prepare=True, binary=binary)
            finally:
                if threshold is None:
                    conn.prepare_threshold = None

    return PreparingCursor


@functools.cache
def _unprepared_cursor_class() -> type[Any]:
    """A psycopg 3 cursor (server-side binding) that never prepares what it executes."""
    import psycopg

    class UnpreparedCursor(psycopg.Cursor):  # type: ignore[type-arg]
        """Executes with ``prepare=False``, whatever the connection's ``prepare_threshold``.

        (A pooler in transaction mode may be behind the connection; see
        :func:`prepares_checkpoint`.)
        """

        def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                    binary: bool | None = None) -> Any:
            return super().execute(query, params, prepare=False, binary=binary)

    return UnpreparedCursor


def save_step_sql(connection: BaseDatabaseWrapper) -> str:
    """The checkpoint statement of ``connection``'s vendor (built once per vendor)."""
    return _save_step_sql(connection.vendor, connection.ops.quote_name)


@functools.lru_cache(maxsize=8)
def _save_step_sql(vendor: str, q: Callable[[str], str]) -> str:
    """One statement that writes a checkpoint only if ``token`` still holds the lease.

    ``INSERT … SELECT … WHERE EXISTS (the run with this token and an owner)``,
    upserting on (run, position) (MySQL/MariaDB: ``ON DUPLICATE KEY UPDATE``): no
    transaction block, no second round trip.
    Parameters: run id, the :func:`step_values`, run id, token. PostgreSQL
    gets explicit casts (client-side bound literals are untyped, and
    server-side bound strings and NULLs are sent as ``unknown``).
    """
    run_t, step_t = q(Run._meta.db_table), q(Step._meta.db_table)
    cols = ", ".join(q(c) for c in STEP_COLUMNS)
    if vendor == "postgresql":
        values = ", ".join(f"%s::{t}" for t in _PG_TYPES)
    else:
        values = ", ".join("%s" for _ in STEP_COLUMNS)
    held = (f"WHERE EXISTS (SELECT 1 FROM {run_t} WHERE {q('id')} = %s AND {q('token')} = %s "
            f"AND {q('owner')} <> '') ")
    if vendor == "mysql":  # InnoDB share-locks the run row it read until the commit
        updates = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in STEP_COLUMNS[1:])
        return (f"INSERT INTO {step_t} ({q('run_id')}, {cols}) SELECT %s, {values} FROM DUAL "
                f"{held}ON DUPLICATE KEY UPDATE {updates}")
    updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in STEP_COLUMNS[1:])
    return (
        f"INSERT INTO {step_t} ({q('run_id')}, {cols}) SELECT %s, {values} {held}"
        f"ON CONFLICT ({q('run_id')}, {q('position')}) DO UPDATE SET {updates}")


def insert_new_runs(connection: BaseDatabaseWrapper, runs: Sequence[Run]) -> set[str] | None:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id``: the ids this call inserted.

    Exact under concurrency: of two transactions inserting one id, the second
    waits for the first and gets no row back. None where the database cannot
    return rows from such an insert (the caller falls back).
    """
    if not runs:
        return set()
    if connection.vendor == "mysql":
        return _insert_new_runs_one_by_one(connection, runs)
    if not connection.features.can_return_rows_from_bulk_insert:
        return None
    fields = list(Run._meta.concrete_fields)
    q = connection.ops.quote_name
    head = (f"INSERT INTO {q(Run._meta.db_table)} ({', '.join(q(f.column) for f in fields)}) "
            "VALUES ")
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    tail = f" ON CONFLICT DO NOTHING RETURNING {q(Run._meta.pk.column)}"
    batch = max(1, connection.ops.bulk_batch_size(fields, runs))
    inserted: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(runs), batch):
            chunk = runs[start:start + batch]
            params = [f.get_db_prep_save(f.pre_save(run, True), connection)
                      for run in chunk for f in fields]
            cursor.execute(head + ", ".join([row] * len(chunk)) + tail, params)
            inserted.update(str(found) for (found,) in cursor.fetchall())
    return inserted


#: MySQL's and MariaDB's error number for a duplicate key.
DUPLICATE_KEY = 1062


def _insert_new_runs_one_by_one(connection: BaseDatabaseWrapper,
                                runs: Sequence[Run]) -> set[str]:
    """MySQL/MariaDB (no ``ON CONFLICT … RETURNING``): each row its own INSERT in a
    savepoint; a duplicate key (the primary key decides, as the unique constraint does
    elsewhere) means another call created that run. Exact under concurrency: the second
    inserter of an id waits on the key until the first commits, then gets the duplicate."""
    inserted: set[str] = set()
    for run in runs:
        try:
            with transaction.atomic(using=connection.alias):
                Run.objects.using(connection.alias).bulk_create([run])
        except IntegrityError as exc:
            code = (getattr(exc.__cause__, "args", None) or (None,))[0]
            if code != DUPLICATE_KEY:
                raise
            continue
        inserted.add(str(run.pk))
    return inserted
