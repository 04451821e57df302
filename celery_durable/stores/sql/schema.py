"""The SQL store's tables (SQLAlchemy Core) and the versioned, idempotent migration.

Every table name starts with ``durable_``. Times the store decides by are
epoch seconds (``DOUBLE``), written from the database's clock. ``migrate``
records the schema version in ``durable_schema``; running it again, or from
several processes at once, changes nothing once the tables are there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError

from ...records import RunStatus

#: The schema version this code reads and writes.
SCHEMA_VERSION = 3

metadata = MetaData()

#: MySQL/MariaDB: full Unicode, and TEXT columns as large as a payload may be.
_MYSQL: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _id(name: str = "id", **kwargs: object) -> Column[str]:
    return Column(name, String(255), nullable=False, **kwargs)  # type: ignore[arg-type]


runs = Table(
    "durable_runs", metadata,
    _id(primary_key=True),
    Column("task", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("args", LongText, nullable=False),
    Column("kwargs", LongText, nullable=False),
    Column("options", JSON, nullable=False),
    Column("result", LongText),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Column("token", BigInteger, nullable=False, default=0),
    Column("owner", String(255), nullable=False, default=""),
    Column("lease_expires", Double),
    Column("not_before", Double),
    Column("due_at", Double),
    Column("expires_at", Double),
    Column("recoveries", Integer, nullable=False, default=0),
    Column("error_type", String(255), nullable=False, default=""),
    Column("error_message", LongText, nullable=False, default=""),
    Column("error_traceback", LongText, nullable=False, default=""),
    Column("failed_step", String(255)),
    Column("idempotency_key", String(255)),
    Column("current_step", String(255), nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("wait_kind", String(16), nullable=False, default=""),
    Column("wait_step", String(255), nullable=False, default=""),
    Column("wait_position", Integer, nullable=False, default=0),
    Column("wait_id", BigInteger, nullable=False, default=0),
    Column("wait_until", Double),
    Column("wait_event", String(255)),
    Column("wait_key", String(255)),
    Column("wait_after", BigInteger, nullable=False, default=0),
    Column("wait_resolution", LongText),
    Column("parent", String(255)),
    Column("children_done", Integer, nullable=False, default=0),
    Column("children_needed", Integer, nullable=False, default=0),
    Column("tags", JSON, nullable=False),
    Column("version", String(255)),
    Column("metadata", JSON, nullable=False),
    Column("retries", Integer, nullable=False, default=0),
    Column("retrying", LongText, nullable=False, default=""),
    Column("replay_of", String(255)),
    Column("replayed_as", JSON, nullable=False),
    Index("durable_runs_created", "created_at", "id"),
    Index("durable_runs_status", "status", "created_at"),
    Index("durable_runs_task", "task", "created_at"),
    Index("durable_runs_version", "version", "created_at"),
    Index("durable_runs_due", "due_at"),
    Index("durable_runs_expires", "expires_at"),
    Index("durable_runs_finished", "status", "finished_at"),
    Index("durable_runs_parent", "parent"),
    **_MYSQL,
)

steps = Table(
    "durable_steps", metadata,
    _id("run_id"),
    Column("position", Integer, nullable=False),
    Column("key", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("value", LongText),
    Column("error_type", String(255), nullable=False),
    Column("error_message", LongText, nullable=False),
    Column("error_traceback", LongText, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Column("error_logs", LongText, nullable=False),
    Column("atomic", Boolean, nullable=False, server_default=false()),  # schema version 3
    PrimaryKeyConstraint("run_id", "position", name="durable_steps_pk"),
    **_MYSQL,
)

history = Table(
    "durable_history", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    _id("run_id"),
    Column("kind", String(16), nullable=False),
    Column("at", Double, nullable=False),
    Column("entry", LongText, nullable=False),
    Index("durable_history_run", "run_id", "id"),
    **_MYSQL,
)

tags = Table(
    "durable_tags", metadata,
    _id("run_id"),
    Column("tag", String(255), nullable=False),
    Column("created_at", Double, nullable=False),
    PrimaryKeyConstraint("run_id", "tag", name="durable_tags_pk"),
    Index("durable_tags_tag", "tag", "created_at"),
    **_MYSQL,
)

mailboxes = Table(
    "durable_mailboxes", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("last_seq", BigInteger, nullable=False, default=0),
    UniqueConstraint("name", "key", name="durable_mailboxes_name_key"),
    **_MYSQL,
)

events = Table(
    "durable_events", metadata,
    Column("mailbox_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("payload", LongText, nullable=False),
    Column("sent_at", Double, nullable=False),
    PrimaryKeyConstraint("mailbox_id", "seq", name="durable_events_pk"),
    **_MYSQL,
)

waiters = Table(
    "durable_waiters", metadata,
    Column("mailbox_id", BigInteger, nullable=False),
    _id("run_id"),
    PrimaryKeyConstraint("mailbox_id", "run_id", name="durable_waiters_pk"),
    **_MYSQL,
)

idempotency_keys = Table(
    "durable_idempotency_keys", metadata,
    Column("task", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    _id("run_id"),
    Column("expires_at", Double, nullable=False),
    PrimaryKeyConstraint("task", "key", name="durable_idempotency_keys_pk"),
    Index("durable_idempotency_keys_expires", "expires_at"),
    **_MYSQL,
)

concurrency_groups = Table(
    "durable_concurrency_groups", metadata,
    Column("name", String(255), primary_key=True),
    **_MYSQL,
)

concurrency_slots = Table(
    "durable_concurrency_slots", metadata,
    Column("group_name", String(255), nullable=False),
    _id("run_id"),
    Column("queued", Boolean, nullable=False),
    Column("seq", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    PrimaryKeyConstraint("group_name", "run_id", name="durable_concurrency_slots_pk"),
    **_MYSQL,
)

wait_tokens = Table(  # schema version 2
    "durable_wait_tokens", metadata,
    _id(primary_key=True),
    _id("run_id"),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double),
    Column("completed_at", Double),
    Column("payload", LongText),
    Column("tags", JSON, nullable=False),
    Index("durable_wait_tokens_created", "created_at"),
    Index("durable_wait_tokens_run", "run_id", "created_at"),
    **_MYSQL,
)

schema = Table(
    "durable_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    **_MYSQL,
)

def new_run_row(now: float, **fields: Any) -> dict[str, Any]:
    """The columns of a new PENDING run created at ``now`` (``fields`` override)."""
    row: dict[str, Any] = {"task": "", "args": "[]", "kwargs": "{}", "options": {},
                "status": RunStatus.PENDING.value, "created_at": now, "updated_at": now,
                "tags": [], "metadata": {}, "replayed_as": [], "token": 0, "owner": "",
                "recoveries": 0, "error_type": "", "error_message": "", "error_traceback": "",
                "current_step": "", "attempts": 0, "wait_kind": "", "wait_step": "",
                "wait_position": 0, "wait_id": 0, "wait_after": 0, "children_done": 0,
                "children_needed": 0, "retries": 0, "retrying": ""}
    row.update(fields)
    return row


def _add_step_atomic(conn: Connection) -> None:
    """Version 3: ``durable_steps.atomic`` (transactional steps), unless version 1 made it."""
    if "atomic" not in {c["name"] for c in inspect(conn).get_columns(steps.name)}:
        conn.execute(text(f"ALTER TABLE {steps.name} ADD COLUMN atomic BOOLEAN NOT NULL "
                          "DEFAULT false"))


#: The tables every version has; the migration of version N creates or changes what N needs.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: lambda conn: metadata.create_all(conn, checkfirst=True),
    2: lambda conn: wait_tokens.create(conn, checkfirst=True),  # wait tokens
    3: _add_step_atomic,  # the transactional-step mark on a checkpoint
}


def current_version(conn: Connection) -> int:
    """The schema version recorded in the database (0: no tables yet)."""
    if not inspect(conn).has_table(schema.name):
        return 0
    return int(conn.execute(select(schema.c.version).order_by(
        schema.c.version.desc()).limit(1)).scalar() or 0)


def migrate(engine: Engine) -> list[int]:
    """Bring the database's tables to :data:`SCHEMA_VERSION`; the versions applied.

    Idempotent: an up-to-date database is left as it is. Two processes
    migrating at once both succeed (the loser's ``CREATE`` finds the table).
    """
    applied: list[int] = []
    for version in range(1, SCHEMA_VERSION + 1):
        with engine.begin() as conn:
            if current_version(conn) >= version:
                continue
        try:
            with engine.begin() as conn:
                MIGRATIONS[version](conn)
                conn.execute(schema.insert().values(version=version))
        except DBAPIError:
            with engine.begin() as conn:  # a concurrent migrate got there first
                if current_version(conn) < version:
                    raise
            continue
        applied.append(version)
    return applied


__all__ = ["SCHEMA_VERSION", "concurrency_groups", "concurrency_slots", "current_version",
           "events", "history", "idempotency_keys", "mailboxes", "metadata", "migrate",
           "new_run_row", "runs", "schema", "steps", "tags", "wait_tokens", "waiters"]
