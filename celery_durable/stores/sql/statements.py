"""What differs between PostgreSQL, MySQL/MariaDB and SQLite, in one place.

* ``<now>``: the database's clock (:mod:`.clock`) as a column expression;
* the engine: SQLite writers take the database lock when their transaction
  begins (``BEGIN IMMEDIATE``), MySQL/MariaDB read committed rows;
* upserts (``ON CONFLICT`` / ``ON DUPLICATE KEY UPDATE``) and insert-if-missing;
* the checkpoint: one ``INSERT … SELECT … WHERE EXISTS (the lease is held)``
  statement that upserts on (run, position): no second round trip.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Double,
    Engine,
    Insert,
    Table,
    and_,
    bindparam,
    cast,
    create_engine,
    event,
    exists,
    literal_column,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from ..rowcodec import STEP_COLUMNS
from .clock import now_sql
from .schema import runs, steps

#: MySQL's and MariaDB's error number for a duplicate key.
DUPLICATE_KEY = 1062


def family(engine: Engine | Connection) -> str:
    """``postgresql``, ``mysql`` (MariaDB too) or ``sqlite``; NotImplementedError otherwise."""
    name = engine.dialect.name
    name = "mysql" if name == "mariadb" else name
    now_sql(name)  # raises for a database the store was not built for
    return name


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for the store: ``options`` as ``create_engine`` takes them, plus the
    store's own: SQLite ``BEGIN IMMEDIATE`` and a 30 s busy timeout; MySQL and MariaDB read
    committed; no reset of a connection returned to the pool (every use of it ends its own
    transaction, and the reset costs a round trip on MySQL). No ``pool_pre_ping``: a
    connection the server dropped fails once, SQLAlchemy then replaces the whole pool (the
    delivery that met it is retried like any store outage)."""
    options.setdefault("pool_reset_on_return", None)
    if url.startswith(("mysql", "mariadb")):
        options.setdefault("isolation_level", "READ COMMITTED")
    if url.startswith("sqlite"):
        options.setdefault("connect_args", {}).setdefault("timeout", 30.0)
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        _immediate_transactions(engine)
    return _fresh_after_fork(engine)


def _fresh_after_fork(engine: Engine) -> Engine:
    """``engine``, whose pooled connections a forked child (a prefork pool process) drops
    instead of sharing its parent's sockets (held weakly: a closed store goes away)."""
    ref = weakref.ref(engine)

    def drop() -> None:
        if (alive := ref()) is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=drop)
    return engine


def autocommit_twin(engine: Engine, url: str, options: Mapping[str, Any]) -> Engine | None:
    """A second engine on ``url`` whose connections are in autocommit mode, for the
    one-statement checkpoint (one round trip instead of the statement and a COMMIT, as
    Django runs it); None on SQLite, whose raw connections commit each statement already."""
    if engine.dialect.name == "sqlite":
        return None
    return _fresh_after_fork(create_engine(url, **{**options, "pool_reset_on_return": None,
                                                    "isolation_level": "AUTOCOMMIT"}))


def _immediate_transactions(engine: Engine) -> None:
    """SQLite: each transaction takes the write lock at ``BEGIN``, so two workers never
    both read a run before one of them writes it (SQLite's stand-in for ``FOR UPDATE``)."""
    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite: we send BEGIN ourselves

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class RawStatement:
    """A statement compiled once for one engine, run on a pooled DBAPI connection.

    The checkpoint is the hot path: run this way it skips SQLAlchemy's per-execution
    work (about 100 µs a checkpoint, measured in ``bench``). ``autocommit``: the
    engine's connections are in autocommit mode (one statement, one round trip, atomic
    by itself); otherwise the statement is followed by a COMMIT.
    """

    def __init__(self, engine: Engine, statement: Any, *, autocommit: bool = False) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.engine = engine
        self.autocommit = autocommit
        #: Called when the database dropped the connection (the other engine's pool is
        #: as stale as this one's).
        self.on_disconnect: Callable[[], None] | None = None
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)
        self.order = list(compiled.positiontup or ()) if compiled.positional else None

    def rowcount(self, values: Mapping[str, Any]) -> int:
        """Execute with ``values`` and commit; the number of rows written."""
        params = {**self.defaults, **values}
        bound: Any = [params[name] for name in self.order] if self.order is not None else params
        conn = self.engine.raw_connection()
        cursor = None
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self.sql, bound)
                count = int(cursor.rowcount)
            finally:
                cursor.close()
            if not self.autocommit:
                conn.commit()
        except BaseException as exc:
            dbapi_error = self.engine.dialect.loaded_dbapi.Error
            dropped = isinstance(exc, dbapi_error) and self.engine.dialect.is_disconnect(
                exc, conn.dbapi_connection, cursor)
            conn.invalidate()  # whatever state it is in, it is not used again
            if not isinstance(exc, dbapi_error):
                raise
            if dropped:
                self.engine.dispose(close=False)  # its other connections are gone too
                if self.on_disconnect is not None:
                    self.on_disconnect()
            raise DBAPIError.instance(self.sql, bound, exc, dbapi_error) from exc
        finally:
            conn.close()  # back to the pool (or discarded when invalidated)
        return count


class Statements:
    """The statements of one database family, built once per store."""

    def __init__(self, name: str) -> None:
        self.family = name
        #: ``<now>``: the database's clock, epoch seconds.
        self.now: ColumnElement[float] = literal_column(now_sql(name), Double)
        #: The checkpoint statement (run by :class:`RawStatement`).
        self.checkpoint = self._checkpoint()

    def later(self, seconds: float) -> ColumnElement[float]:
        """``<now> + seconds``."""
        return self.now + float(seconds)

    def _insert(self, table: Table) -> Any:
        if self.family == "postgresql":
            return postgresql.insert(table)
        if self.family == "mysql":
            return mysql.insert(table)
        return sqlite.insert(table)

    def upsert(self, table: Table, keys: Sequence[str], values: Sequence[Mapping[str, Any]],
               update: Sequence[str]) -> Insert:
        """Insert ``values``, or update the columns ``update`` of a row with the same ``keys``."""
        stmt = self._insert(table).values(list(values))
        if self.family == "mysql":
            # (ON DUPLICATE KEY UPDATE names no conflict target: any unique key)
            return stmt.on_duplicate_key_update(  # type: ignore[no-any-return]
                {c: stmt.inserted[c] for c in update})
        return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in update})

    def insert_missing(self, conn: Connection, table: Table,
                       values: Sequence[Mapping[str, Any]]) -> None:
        """Insert the rows of ``values`` whose key is not there yet (the others are left)."""
        if not values:
            return
        stmt = self._insert(table).values(list(values))
        if self.family == "mysql":
            conn.execute(stmt.prefix_with("IGNORE"))
        else:
            conn.execute(stmt.on_conflict_do_nothing())

    def insert_new(self, conn: Connection, table: Table, key: str,
                   values: Sequence[Mapping[str, Any]]) -> set[str]:
        """Insert each row of ``values`` whose ``key`` is new; the keys this call inserted.

        Exact under concurrency: of two transactions inserting one key the
        second waits for the first and is told it inserted nothing
        (PostgreSQL, SQLite: ``ON CONFLICT DO NOTHING RETURNING``;
        MySQL/MariaDB: each row in a savepoint, a duplicate key rolled back).
        """
        if not values:
            return set()
        if self.family != "mysql":
            stmt = (self._insert(table).values(list(values)).on_conflict_do_nothing()
                    .returning(table.c[key]))
            return {str(found) for found in conn.execute(stmt).scalars()}
        inserted: set[str] = set()
        for row in values:
            try:
                with conn.begin_nested():
                    conn.execute(table.insert().values(row))
            except IntegrityError as exc:
                if (getattr(exc.orig, "args", None) or (None,))[0] != DUPLICATE_KEY:
                    raise
                continue
            inserted.add(str(row[key]))
        return inserted

    def _checkpoint(self) -> Insert:
        """``INSERT … SELECT <the step's values> WHERE EXISTS (the run, this token, an
        owner)``, upserting on (run, position). Parameters: ``run_id``, ``token`` and the
        :data:`~celery_durable.stores.rowcodec.STEP_COLUMNS`. PostgreSQL gets casts
        (its bound parameters in a SELECT list have no type of their own)."""
        def param(name: str) -> Any:
            column = steps.c[name]
            bound = bindparam(name, type_=column.type)
            return cast(bound, column.type) if self.family == "postgresql" else bound

        held = exists().where(and_(runs.c.id == bindparam("run_id", type_=runs.c.id.type),
                                   runs.c.token == bindparam("token"), runs.c.owner != ""))
        values = select(*(param(c) for c in ("run_id", *STEP_COLUMNS))).where(held)
        stmt = self._insert(steps).from_select(["run_id", *STEP_COLUMNS], values)
        if self.family == "mysql":
            # (MySQL/MariaDB: InnoDB share-locks the run row it read until the commit)
            return stmt.on_duplicate_key_update(  # type: ignore[no-any-return]
                {c: literal_column(f"VALUES(`{c}`)") for c in STEP_COLUMNS[1:]})
        return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
            index_elements=["run_id", "position"],
            set_={c: stmt.excluded[c] for c in STEP_COLUMNS[1:]})

