"""``SqlStore``: the checkpoint store contract on PostgreSQL, MySQL/MariaDB or SQLite.

Runs are rows of ``durable_runs``, checkpoints rows of ``durable_steps``
(:mod:`.schema`). Every decision a method makes (take the lease, count a
recovery, dead-letter, claim a due run) happens in one transaction holding
the run's row lock (``SELECT … FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``),
decided by :mod:`celery_durable.stores.transitions` as in the other stores.
A checkpoint is one statement (:class:`.statements.Statements`), so it costs
about one plain INSERT and COMMIT. Every time that decides is the database's
clock, read in the statement that uses it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, event, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from ...errors import InvalidRunStateError, StoreUnavailableError
from ...records import (
    Begin,
    Claim,
    ErrorInfo,
    HistoryEntry,
    RetryInfo,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    failed_attempt,
)
from .. import rowcodec, transitions
from ..base import (
    CheckpointStore,
    ChildRuns,
    ConcurrencySlots,
    IdempotencyKeys,
    Retention,
    RunHistory,
    Waits,
    WaitTokens,
)
from .controls import ControlsMixin
from .history import HistoryMixin
from .schema import (
    SCHEMA_VERSION,
    concurrency_slots,
    current_version,
    history,
    migrate,
    new_run_row,
    runs,
    steps,
    tags,
    wait_tokens,
    waiters,
)
from .statements import RawStatement, Statements, autocommit_twin, family, make_engine
from .tokens import TokensMixin
from .waits import WaitsMixin

#: Seconds between two purges of expired finished runs (done by ``due_runs``).
PURGE_EVERY = 60.0
PURGE_BATCH = 500

Row = dict[str, Any]


class SqlStore(HistoryMixin, ControlsMixin, WaitsMixin, TokensMixin, CheckpointStore, Waits,
               ChildRuns, IdempotencyKeys, ConcurrencySlots, Retention, RunHistory, WaitTokens):
    """Durable runs in a SQL database through a SQLAlchemy engine.

    ``create_tables``: create the tables on first use if they are missing
    (otherwise :meth:`ping` says to run ``celery -A proj durable migrate``).
    """

    def __init__(self, engine: Engine, *, create_tables: bool = False,
                 checkpoint_engine: Engine | None = None) -> None:
        self.engine = engine
        self.sql = Statements(family(engine))
        #: Where checkpoints are written: ``checkpoint_engine`` (its connections in
        #: autocommit mode: one round trip each), else ``engine`` (statement and COMMIT).
        self.checkpoint_engine = checkpoint_engine
        self._checkpoint = RawStatement(checkpoint_engine or engine, self.sql.checkpoint,
                                        autocommit=checkpoint_engine is not None)
        if checkpoint_engine is not None:  # a dropped connection: both pools are stale
            self._checkpoint.on_disconnect = lambda: engine.dispose(close=False)
            event.listen(engine, "handle_error", lambda ctx: (
                checkpoint_engine.dispose(close=False) if ctx.is_disconnect else None))
        self._create_tables = create_tables
        self._last_purge = -PURGE_EVERY  # (monotonic) purge at the first sweep

    @classmethod
    def from_url(cls, url: str, *, create_tables: bool = False,
                 engine_options: Mapping[str, Any] | None = None) -> SqlStore:
        """A store on the database at ``url`` (SQLAlchemy's form; a ``db+`` prefix is
        dropped, as Celery's result backend drops it)."""
        url = url.removeprefix("db+")
        options = dict(engine_options or {})
        engine = make_engine(url, **options)
        return cls(engine, create_tables=create_tables,
                   checkpoint_engine=autocommit_twin(engine, url, options))

    def __repr__(self) -> str:
        return f"SqlStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- plumbing shared by the mixins -----------------------------------------------

    def _locked(self, conn: Connection, run_id: str) -> Row | None:
        """The run's row, locked, with ``store_now``: the database's clock, read in the
        same statement (every decision is taken at that time). None if missing."""
        found = conn.execute(select(runs, self.sql.now.label("store_now"))
                             .where(runs.c.id == run_id).with_for_update()).mappings().first()
        return dict(found) if found is not None else None

    @staticmethod
    def _holding(run_id: str, token: int) -> ColumnElement[bool]:
        """The run ``run_id`` while ``token`` holds its lease."""
        return and_(runs.c.id == run_id, runs.c.token == token, runs.c.owner != "")

    def _update(self, conn: Connection, row: Row, values: Mapping[str, Any]) -> None:
        """Write ``values`` to the run of ``row`` (locked by the caller) and into ``row``."""
        row.update(values)
        conn.execute(update(runs).where(runs.c.id == row["id"]).values(dict(values)))

    def _apply(self, conn: Connection, row: Row, changes: transitions.Changes,
               **also: Any) -> None:
        """Apply a decision of :mod:`celery_durable.stores.transitions` (and ``also``)."""
        values: Row = dict(also)
        for name, value in changes.items():
            if name == "error":
                values.update(rowcodec.error_fields(value))
            else:
                values[name] = value.value if name == "status" else value
        self._update(conn, row, values)

    def _step_rows(self, conn: Connection, run_id: str) -> list[Any]:
        return list(conn.execute(
            select(*(steps.c[c] for c in rowcodec.STEP_COLUMNS))
            .where(steps.c.run_id == run_id).order_by(steps.c.position)))

    def _snapshot(self, conn: Connection, row: Row) -> RunRecord:
        """The run with its checkpoints: one query for all of them."""
        return rowcodec.run_record(
            row, [rowcodec.step_record(r) for r in self._step_rows(conn, row["id"])])

    def _note(self, conn: Connection, run_id: str, entry: HistoryEntry | None) -> None:
        """Append ``entry`` to the run's history (in the caller's transaction)."""
        if entry is not None:
            conn.execute(history.insert().values(run_id=run_id, kind=entry.kind, at=entry.at,
                                                 entry=entry.to_json()))

    def _read_clock(self, conn: Connection) -> float:
        return float(conn.execute(select(self.sql.now)).scalar_one())

    def _upsert_step(self, conn: Connection, run_id: str, step: StepRecord) -> None:
        conn.execute(self.sql.upsert(steps, ["run_id", "position"],
                                     [{"run_id": run_id, **rowcodec.step_columns(step)}],
                                     rowcodec.STEP_COLUMNS[1:]))

    def _write_step(self, conn: Connection, run_id: str, step: StepRecord,
                    now: float | None = None) -> None:
        """Upsert checkpoint ``step`` (under a lease the caller holds, in its transaction);
        a failed attempt also goes to the history, at ``now`` (default: the database's clock).
        """
        self._upsert_step(conn, run_id, step)
        if failed_attempt(step):
            kept = dataclasses.replace(step, value=None)
            self._note(conn, run_id, HistoryEntry.attempt(
                self._read_clock(conn) if now is None else now, kept))

    @staticmethod
    def _last(run_id: str, column: Any) -> Any:
        """``column`` of the run's checkpoint at the highest position, as a subquery."""
        return (select(column).where(steps.c.run_id == run_id)
                .order_by(steps.c.position.desc()).limit(1).scalar_subquery())

    def _delete(self, conn: Connection, ids: Sequence[str]) -> None:
        for table in (steps, history, tags, waiters, concurrency_slots, wait_tokens):
            conn.execute(delete(table).where(table.c.run_id.in_(list(ids))))
        conn.execute(delete(runs).where(runs.c.id.in_(list(ids))))

    # -- the contract ----------------------------------------------------------------

    def ping(self) -> None:
        """Raise StoreUnavailableError if the database or the store's tables are missing."""
        try:
            with self.engine.connect() as conn:
                version = current_version(conn)
            if version < SCHEMA_VERSION and self._create_tables:
                migrate(self.engine)
                return
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(
                f"SQL store unusable ({self!r}): {exc}; is the database reachable?") from exc
        if version < SCHEMA_VERSION:
            have = "has no tables" if version == 0 else f"has schema version {version}"
            raise StoreUnavailableError(
                f"the SQL store's database ({self!r}) {have}; this celery_durable needs "
                f"version {SCHEMA_VERSION}: run `celery -A proj durable migrate` (or set "
                "durable_sql_create_tables = True to create them on first start)")

    def begin(self, run_id: str, *, task: str, args: str, kwargs: str,
              options: Mapping[str, object], owner: str, lease_ttl: float,
              max_recoveries: int = 5, steal_from: str | None = None,
              tags: Sequence[str] = (), version: str | None = None) -> Begin:
        """See :meth:`CheckpointStore.begin`."""
        with self.engine.begin() as conn:
            row = self._locked(conn, run_id)
            if row is not None and row["expires_at"] is not None \
                    and row["expires_at"] <= row["store_now"]:
                self._delete(conn, [run_id])  # past its retention: as good as gone
                row = None
            extra: Row = {}
            if row is None:
                now = self._read_clock(conn)
                ikey = options.get("idempotency_key")
                self._create(conn, [new_run_row(
                    now, id=run_id, task=task, args=args, kwargs=kwargs, options=dict(options),
                    idempotency_key=str(ikey) if ikey else None, tags=list(tags),
                    version=version)])
                row = self._locked(conn, run_id)
                assert row is not None
            elif (filled := transitions.merged_options(row["options"] or {}, options)) \
                    is not None:
                extra["options"] = filled  # created before its first delivery
            now = row["store_now"]
            if (bad := rowcodec.unreadable_field(row["status"])) is not None:
                self._dead_letter_corrupt(conn, row, bad, now)
                return Begin("dead", self._snapshot(conn, row))
            ctl = rowcodec.control(row)
            outcome, changes = transitions.begin(
                ctl, now=now, owner=owner, lease_ttl=lease_ttl, max_recoveries=max_recoveries,
                steal_from=steal_from)
            self._note(conn, run_id, transitions.recovery(ctl, changes, now=now, by="delivery"))
            if outcome in ("finished", "early", "busy"):
                if extra:
                    self._update(conn, row, extra)
                return Begin(outcome, self._snapshot(conn, row))
            if outcome == "dead":
                self._apply(conn, row, changes, **extra)
                return Begin("dead", self._snapshot(conn, row))
            checkpoints = rowcodec.RowCheckpoints(run_id, self._step_rows(conn, run_id))
            current, attempts = checkpoints.last_step()
            self._apply(conn, row, changes, current_step=current, attempts=attempts, **extra)
            return Begin("acquired", rowcodec.run_record(row), row["token"], checkpoints)

    def _create(self, conn: Connection, rows: Sequence[Row]) -> set[str]:
        """Insert the new runs ``rows`` (and their tag index); the ids this call created."""
        made = self.sql.insert_new(conn, runs, "id", rows)
        self.sql.insert_missing(conn, tags, [
            {"run_id": row["id"], "tag": tag, "created_at": row["created_at"]}
            for row in rows if row["id"] in made for tag in row["tags"]])
        return made

    def _dead_letter_corrupt(self, conn: Connection, row: Row, field: str, now: float) -> None:
        """FAILED, naming the unreadable ``field`` (:func:`.transitions.unreadable`)."""
        self._apply(conn, row, transitions.unreadable(row["token"], field, row[field],
                                                      now=now))

    def save_step(self, run_id: str, token: int, step: StepRecord) -> bool:
        """See :meth:`CheckpointStore.save_step`: one statement, unless a failed attempt
        (then the checkpoint and its history entry, in one transaction)."""
        if not failed_attempt(step):
            return bool(self._checkpoint.rowcount(
                {**rowcodec.step_columns(step), "run_id": run_id, "token": token}))
        with self.engine.begin() as conn:
            now = conn.execute(select(self.sql.now).select_from(runs)
                               .where(self._holding(run_id, token))
                               .with_for_update()).scalar()
            if now is None:
                return False
            self._write_step(conn, run_id, step, float(now))
            return True

    def park(self, run_id: str, token: int, *, status: RunStatus, delay: float,
             due_in: float, step: StepRecord | None = None, args: str | None = None,
             kwargs: str | None = None,
             options: Mapping[str, object] | None = None) -> bool:
        """See :meth:`CheckpointStore.park`."""
        values: Row = {"status": status.value, "owner": "", "lease_expires": None,
                       "not_before": self.sql.later(delay), "due_at": self.sql.later(due_in),
                       "updated_at": self.sql.now}
        replaced = {"args": args, "kwargs": kwargs,
                    "options": dict(options) if options is not None else None}
        values.update({name: value for name, value in replaced.items() if value is not None})
        return self._park_row(run_id, token, values, step)

    def _park_row(self, run_id: str, token: int, values: Row, step: StepRecord | None) -> bool:
        """Under ``token``: update the run row with ``values`` and write ``step``, atomically."""
        if step is not None:
            values.update(current_step=step.key, attempts=step.attempts)
            if step.status is StepStatus.RETRYING:
                values.update(retries=runs.c.retries + 1,
                              retrying=RetryInfo.of(step).to_json())
        with self.engine.begin() as conn:
            if not conn.execute(update(runs).where(self._holding(run_id, token))
                                .values(values)).rowcount:
                return False
            if step is not None:
                self._write_step(conn, run_id, step)
            return True

    def finish(self, run_id: str, token: int, *, status: RunStatus,
               result: str | None = None, error: ErrorInfo | None = None,
               failed_step: str | None = None, retention: float = 0) -> bool:
        """See :meth:`CheckpointStore.finish`; expired runs are purged by ``due_runs``."""
        keep = retention > 0 and status is not RunStatus.FAILED
        with self.engine.begin() as conn:  # one UPDATE: the last checkpoint by subqueries
            return bool(conn.execute(update(runs).where(self._holding(run_id, token)).values(
                current_step=func.coalesce(self._last(run_id, steps.c.key), ""),
                attempts=func.coalesce(self._last(run_id, steps.c.attempts), 0),
                status=status.value, result=result, failed_step=failed_step, owner="",
                lease_expires=None, due_at=None, not_before=None, finished_at=self.sql.now,
                updated_at=self.sql.now, expires_at=self.sql.later(retention) if keep else None,
                **rowcodec.error_fields(error))).rowcount)

    def renew(self, leases: Mapping[str, int], lease_ttl: float) -> set[str]:
        """See :meth:`CheckpointStore.renew`: one transaction for all leases."""
        if not leases:
            return set()
        lost: set[str] = set()
        expires = self.sql.later(lease_ttl)
        with self.engine.begin() as conn:
            for run_id, token in leases.items():
                if not conn.execute(update(runs).where(self._holding(run_id, token))
                                    .values(lease_expires=expires, due_at=expires)).rowcount:
                    lost.add(run_id)
        return lost

    def due_runs(self, limit: int = 100) -> list[str]:
        """See :meth:`CheckpointStore.due_runs` (uses the index on ``due_at``)."""
        if time.monotonic() - self._last_purge > PURGE_EVERY:
            self._last_purge = time.monotonic()
            self.purge_expired()
        with self.engine.connect() as conn:
            return [str(i) for i in conn.execute(
                select(runs.c.id).where(runs.c.due_at <= self.sql.now)
                .order_by(runs.c.due_at).limit(limit)).scalars()]

    def claim_due(self, run_id: str, *, grace: float, max_recoveries: int) -> Claim:
        """See :meth:`CheckpointStore.claim_due`."""
        with self.engine.begin() as conn:
            row = self._locked(conn, run_id)
            if row is None:
                return Claim("gone")
            now = row["store_now"]
            if (bad := rowcodec.unreadable_field(row["status"])) is not None:
                self._dead_letter_corrupt(conn, row, bad, now)
                return Claim("dead", self._snapshot(conn, row))
            ctl = rowcodec.control(row)
            action, changes = transitions.claim_due(ctl, now=now, grace=grace,
                                                    max_recoveries=max_recoveries)
            if action == "gone":
                return Claim("gone")
            self._note(conn, run_id, transitions.recovery(ctl, changes, now=now, by="sweeper"))
            if action == "later":
                if changes["due_at"] != row["due_at"]:
                    self._apply(conn, row, changes)
                return Claim("later", due_at=row["due_at"])
            self._apply(conn, row, changes)
            return Claim(action, self._snapshot(conn, row))

    def _live(self) -> ColumnElement[bool]:
        """Runs not past their retention."""
        return or_(runs.c.expires_at.is_(None), runs.c.expires_at > self.sql.now)

    def get_run(self, run_id: str) -> RunRecord | None:
        """See :meth:`CheckpointStore.get_run`."""
        with self.engine.connect() as conn:
            found = conn.execute(select(runs).where(runs.c.id == run_id, self._live())
                                 ).mappings().first()
            return self._snapshot(conn, dict(found)) if found is not None else None

    def list_runs(self, *, status: RunStatus | None = None, task: str | None = None,
                  tag: str | None = None, version: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        """See :meth:`CheckpointStore.list_runs` (a tag through the tag index)."""
        query = select(runs).where(self._live())
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if task is not None:
            query = query.where(runs.c.task == task)
        if version is not None:
            query = query.where(runs.c.version == version)
        if tag is not None:
            query = query.where(runs.c.id.in_(select(tags.c.run_id).where(tags.c.tag == tag)))
        query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [rowcodec.run_record(dict(row)) for row in conn.execute(query).mappings()]

    def reset_run(self, run_id: str, *, from_start: bool, args: str | None = None,
                  kwargs: str | None = None, grace: float = 300.0,
                  version: str | None = None) -> RunRecord | None:
        """See :meth:`CheckpointStore.reset_run`."""
        with self.engine.begin() as conn:
            row = self._locked(conn, run_id)
            if row is None:
                return None
            changes = transitions.reset(run_id, rowcodec.control(row), now=row["store_now"],
                                        grace=grace, args=args, kwargs=kwargs,
                                        version=version)
            gone = delete(steps).where(steps.c.run_id == run_id)
            if not from_start:  # transitions.keeps_step: successes survive
                gone = gone.where(steps.c.status != StepStatus.SUCCEEDED.value)
            conn.execute(gone)
            last = conn.execute(select(func.coalesce(self._last(run_id, steps.c.key), ""),
                                       func.coalesce(self._last(run_id, steps.c.attempts), 0))
                                ).one()
            self._apply(conn, row, changes, expires_at=None, current_step=last[0],
                        attempts=last[1])
            self._note(conn, run_id, HistoryEntry(
                "retry", row["store_now"], detail=transitions.reset_note(
                    from_start=from_start, new_args=args is not None or kwargs is not None,
                    version=version)))
            return self._snapshot(conn, row)

    def cancel(self, run_id: str, *, create_missing: bool = False) -> RunRecord | None:
        """See :meth:`CheckpointStore.cancel`: the token moves on, the lease is released."""
        with self.engine.begin() as conn:
            row = self._locked(conn, run_id)
            if row is None and create_missing:
                self._create(conn, [new_run_row(self._read_clock(conn), id=run_id)])
                row = self._locked(conn, run_id)
            if row is None:
                return None
            if row["status"] in (RunStatus.SUCCEEDED.value, RunStatus.CANCELLED.value,
                                 RunStatus.REPLACED.value):
                raise InvalidRunStateError(f"run {run_id} is {row['status']}; it cannot be "
                                           "cancelled", run_id=run_id)
            now = row["store_now"]
            self._update(conn, row, {
                "token": row["token"] + 1, "status": RunStatus.CANCELLED.value, "owner": "",
                "lease_expires": None, "due_at": None, "not_before": None, "expires_at": None,
                "finished_at": now, "updated_at": now})
            self._note(conn, run_id, HistoryEntry("cancel", now,
                                                  detail=transitions.CANCEL_NOTE))
            return rowcodec.run_record(row)

    # -- purging ----------------------------------------------------------------------

    def purge_expired(self, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` finished runs past their retention; return how many."""
        with self.engine.begin() as conn:
            ids = list(conn.execute(select(runs.c.id).where(runs.c.expires_at <= self.sql.now)
                                    .limit(limit).with_for_update()).scalars())
            if ids:
                self._delete(conn, ids)
        return len(ids)

    def purge_runs(self, *, finished_before: float, statuses: Collection[RunStatus],
                   limit: int = 1000) -> list[str]:
        """See :meth:`Retention.purge_runs` (rows locked, re-checked, deleted)."""
        wanted = [RunStatus(s).value for s in statuses]
        with self.engine.begin() as conn:
            ids = [str(i) for i in conn.execute(
                select(runs.c.id).where(runs.c.status.in_(wanted),
                                        runs.c.finished_at < finished_before)
                .limit(limit).with_for_update()).scalars()]
            if ids:
                self._delete(conn, ids)
        return ids

    def migrate(self) -> list[int]:
        """Create or update the store's tables (``celery -A proj durable migrate``);
        the schema versions applied (none when the database was up to date)."""
        return migrate(self.engine)

    def schema_version(self) -> int:
        """The schema version the database holds (0: no tables yet)."""
        with self.engine.connect() as conn:
            return current_version(conn)

    def close(self) -> None:
        """Close the engines' pooled connections."""
        self.engine.dispose()
        if self.checkpoint_engine is not None:
            self.checkpoint_engine.dispose()
