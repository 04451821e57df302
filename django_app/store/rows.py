"""Conversions between model rows and the engine's records, and the one-statement SQL.

Kept apart from :mod:`.django_store` so the store reads as the contract's
decisions, and this module as the plumbing.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import QuerySet

from celery_durable.records import HistoryEntry, RunRecord, StepRecord
from celery_durable.stores import rowcodec

# (also re-exported for the store and the admin: rows.STATUS_BY_VALUE, rows.error_fields, ...)
from celery_durable.stores.rowcodec import (  # noqa: F401
    STATUS_BY_VALUE,
    STEP_COLUMNS,
    RowCheckpoints,
    error_fields,
    step_logs,
    step_record,
    step_values,
)

from ..models import HistoryRow, Run, RunTag, Step

#: PostgreSQL types of :data:`STEP_COLUMNS` (client-side bound literals need casts).
_PG_TYPES = ("integer", "varchar", "varchar", "varchar", "integer", "text", "varchar", "text",
             "text", "double precision", "double precision", "text", "boolean")


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


def step_records(using: str, run_id: str) -> list[StepRecord]:
    """The checkpoints of ``run_id`` (database alias ``using``) in position order.

    Read as plain rows, not model instances: a run with 1,000 checkpoints
    loads in about a third of the time (measured in ``bench/NOTES.md``).
    """
    return [step_record(row) for row in _step_rows(using, run_id)]


def checkpoints(using: str, run_id: str) -> RowCheckpoints:
    """The checkpoints of ``run_id`` as ``begin`` hands them to a delivery (see below)."""
    return RowCheckpoints(run_id, _step_rows(using, run_id))


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
    """The control field of ``row`` that cannot be read (an unknown status), or None."""
    return rowcodec.unreadable_field(row.status)


def run_record(row: Run, steps: list[StepRecord] | None = None) -> RunRecord:
    """A Run row (and its checkpoints, from :func:`step_records`) as the engine's RunRecord."""
    return rowcodec.run_record(vars(row), steps or (), seconds=to_seconds)


def history_row(run_id: str, entry: HistoryEntry) -> HistoryRow:
    """An unsaved history row for ``entry``."""
    return HistoryRow(run_id=run_id, kind=entry.kind, at=entry.at, entry=entry.to_json())


def tag_rows(run_id: str, tags: Sequence[str], created: dt.datetime | None) -> list[RunTag]:
    """Unsaved RunTag rows: the tag index of a new run."""
    return [RunTag(run_id=run_id, tag=tag, created_at=created) for tag in tags]


def step_row(run_id: str, step: StepRecord) -> Step:
    """An unsaved Step row for ``step``."""
    return Step(run_id=run_id, **rowcodec.step_columns(step))


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


def save_step_sql(connection: BaseDatabaseWrapper, locking: bool = False) -> str:
    """The checkpoint statement of ``connection``'s vendor (built once per vendor);
    ``locking``: it also locks the run's row until the transaction ends."""
    return _save_step_sql(connection.vendor, connection.ops.quote_name, locking)


@functools.lru_cache(maxsize=8)
def _save_step_sql(vendor: str, q: Callable[[str], str], locking: bool) -> str:
    """One statement that writes a checkpoint only if ``token`` still holds the lease.

    ``INSERT … SELECT … WHERE EXISTS (the run with this token and an owner)``,
    upserting on (run, position) (MySQL/MariaDB: ``ON DUPLICATE KEY UPDATE``): no
    transaction block, no second round trip. With ``locking`` (a transactional step's
    checkpoint, inside its transaction) the ``EXISTS`` reads the run's row ``FOR UPDATE``
    (PostgreSQL, MySQL/MariaDB; SQLite's write transaction locks the whole database), so a
    takeover of the lease waits for the step's commit. Without it nothing is locked:
    neither PostgreSQL nor InnoDB under READ COMMITTED (Django's default) locks a row an
    ``INSERT … SELECT`` only reads.
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
    lock = " FOR UPDATE" if locking and vendor in ("postgresql", "mysql") else ""
    held = (f"WHERE EXISTS (SELECT 1 FROM {run_t} WHERE {q('id')} = %s AND {q('token')} = %s "
            f"AND {q('owner')} <> ''{lock}) ")
    if vendor == "mysql":
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
