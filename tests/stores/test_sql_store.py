"""The SQL store's tables: a clear error when they are missing, an idempotent and versioned
``migrate`` (also from several processes at once, and as ``celery -A proj durable
migrate``), and the store chosen for Celery's ``db+`` result backends. On real SQLite
files and the session's PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sql_stores import server_url
from sqlalchemy import inspect

from celery_durable import StoreUnavailableError
from celery_durable.stores.sql import SqlStore
from celery_durable.stores.sql.schema import SCHEMA_VERSION, metadata

ROOT = Path(__file__).resolve().parents[2]


def test_a_database_without_tables_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    with pytest.raises(StoreUnavailableError) as caught:
        store.ping()
    assert "has no tables" in str(caught.value)
    assert "celery -A proj durable migrate" in str(caught.value)
    assert "durable_sql_create_tables" in str(caught.value)
    assert not inspect(store.engine).has_table("durable_runs")  # nothing was created


def test_migrate_creates_every_table_once_and_records_the_version(tmp_path: Path) -> None:
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert store.schema_version() == 0
    assert store.migrate() == list(range(1, SCHEMA_VERSION + 1))
    assert store.migrate() == []  # idempotent
    assert store.schema_version() == SCHEMA_VERSION
    assert set(inspect(store.engine).get_table_names()) == set(metadata.tables)
    store.ping()


def test_a_version_1_database_migrates_to_the_current_version(tmp_path: Path) -> None:
    """A database of the first release (no wait tokens table, no ``atomic`` step column)
    gets both, and keeps its checkpoints (a plain step's reads back as not atomic)."""
    from sqlalchemy import delete, text

    from celery_durable.stores.sql.schema import schema, wait_tokens

    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'v1.sqlite3'}")
    store.migrate()
    with store.engine.begin() as conn:  # back to what version 1 created
        wait_tokens.drop(conn)
        conn.execute(text("ALTER TABLE durable_steps DROP COLUMN atomic"))
        conn.execute(text("INSERT INTO durable_steps (run_id, position, key, name, status, "
                          "attempts, value, error_type, error_message, error_traceback, "
                          "error_logs) VALUES ('r1', 0, 'a', 'a', 'SUCCEEDED', 1, '1', '', "
                          "'', '', '')"))
        conn.execute(delete(schema).where(schema.c.version >= 2))
    assert store.schema_version() == 1
    assert store.migrate() == [2, 3]
    assert inspect(store.engine).has_table("durable_wait_tokens")
    assert "atomic" in {c["name"] for c in inspect(store.engine).get_columns("durable_steps")}
    assert store.schema_version() == SCHEMA_VERSION == 3
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT atomic FROM durable_steps")).scalar() in (0, False)


def _migrate(url: str) -> list[int]:
    return SqlStore.from_url(url).migrate()


def test_concurrent_migrations_apply_each_version_once(tmp_path: Path) -> None:
    """Four processes migrating one fresh database at once: all succeed, one applies."""
    url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        applied = pool.map(_migrate, [url] * 4)
    assert sorted(v for versions in applied for v in versions) == list(
        range(1, SCHEMA_VERSION + 1))  # each version applied by exactly one of them
    assert SqlStore.from_url(url).schema_version() == SCHEMA_VERSION


def test_migrate_on_postgresql_is_idempotent() -> None:
    store = SqlStore.from_url(server_url("postgres"))  # migrated once by the session
    assert store.migrate() == []
    assert store.schema_version() == SCHEMA_VERSION
    assert set(metadata.tables) <= set(inspect(store.engine).get_table_names())
    store.close()


def _cli(backend: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_SQL_BACKEND": backend,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "celery", "-A", "apps.sql_app", "durable",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_migrate_command_creates_the_tables_of_the_result_backend_s_database(
        tmp_path: Path) -> None:
    """``celery -A proj durable migrate`` on an app whose results are in ``db+sqlite``."""
    path = tmp_path / "results.sqlite"
    first = _cli(f"db+sqlite:///{path}", "migrate")
    assert first.returncode == 0, first.stderr
    every = ", ".join(str(v) for v in range(1, SCHEMA_VERSION + 1))
    assert f"Applied schema version(s) {every}" in first.stdout
    again = _cli(f"db+sqlite:///{path}", "migrate")
    assert again.returncode == 0, again.stderr
    assert f"up to date (schema version {SCHEMA_VERSION})" in again.stdout
    assert SqlStore.from_url(f"sqlite:///{path}").schema_version() == SCHEMA_VERSION


def test_the_migrate_command_says_when_the_store_has_no_tables(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "apps.ops_app", "durable", "migrate"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])})
    assert proc.returncode == 1
    assert "RedisStore, which has no tables to migrate" in proc.stderr


def test_a_connection_the_server_dropped_fails_one_call_and_the_next_reconnects() -> None:
    """PostgreSQL ends the store's pooled connections (a restart, a failover, an idle
    timeout): the next call fails (the engine reports it as a store outage), SQLAlchemy
    replaces the pool, and the call after that works; nothing is half-written."""
    import uuid

    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from celery_durable.records import StepRecord, StepStatus

    run_id = f"dropped-{uuid.uuid4().hex}"
    url = server_url("postgres")
    store = SqlStore.from_url(url, engine_options={
        "connect_args": {"application_name": "durable-dropped"}, "pool_size": 2})
    begun = store.begin(run_id, task="t", args="[]", kwargs="{}", options={},
                        owner="w", lease_ttl=60)

    def step(i: int) -> StepRecord:
        return StepRecord(i, f"s#{i}", "s", StepStatus.SUCCEEDED, 1, "1")

    assert store.save_step(run_id, begun.token, step(0))
    admin = SqlStore.from_url(url)

    def drop_the_store_s_connections() -> None:
        with admin.engine.begin() as conn:
            ended = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'durable-dropped'")).scalar_one()
        assert ended >= 2  # the decisions' pool and the checkpoints' pool

    drop_the_store_s_connections()  # met first by a checkpoint
    with pytest.raises(DBAPIError):
        store.save_step(run_id, begun.token, step(1))
    assert store.save_step(run_id, begun.token, step(1))
    run = store.get_run(run_id)
    assert run is not None and [s.position for s in run.steps] == [0, 1]
    drop_the_store_s_connections()  # met first by a read
    with pytest.raises(DBAPIError):
        store.get_run(run_id)
    assert store.save_step(run_id, begun.token, step(2))
    assert store.renew({run_id: begun.token}, 60) == set()
    with admin.engine.begin() as conn:
        conn.execute(text("DELETE FROM durable_steps WHERE run_id = :run"), {"run": run_id})
        conn.execute(text("DELETE FROM durable_runs WHERE id = :run"), {"run": run_id})
    store.close()
    admin.close()
