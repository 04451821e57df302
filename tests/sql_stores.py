"""SQL stores (``SqlStore``, SQLAlchemy Core) on real databases, for the contract tests.

``make_sql_store(kind)`` with kind ``sqlite`` (a file of its own), ``postgres``
(the session's PostgreSQL: ``DATABASE_URL`` or an embedded server) or ``mariadb``
(``MARIADB_URL`` or a private mariadbd). The tables are migrated once per
database and emptied before each store is handed out.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import services
from sqlalchemy import delete

from celery_durable.stores.sql import SqlStore
from celery_durable.stores.sql.schema import metadata, migrate, schema

KINDS = ("sqlite", "postgres", "mariadb")


def sqlalchemy_url(url: str) -> str:
    """A ``postgresql://`` or ``mysql://`` server URL with the driver the suite installs
    (psycopg 3, PyMySQL)."""
    scheme, _, rest = url.partition("://")
    driver = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
              "mysql": "mysql+pymysql"}.get(scheme, scheme)
    return f"{driver}://{rest}"


@cache
def server_url(kind: str) -> str:
    """The SQLAlchemy URL of the ``postgres`` or ``mariadb`` database, migrated once;
    skipped (failed under ``CI=true``) when the server is unavailable."""
    try:
        raw = services.postgres_server_url() if kind == "postgres" else services.mariadb_url()
    except Exception as exc:  # no server, nothing to start one with
        services.unavailable(f"{kind} unavailable: {exc}")
    url = sqlalchemy_url(raw)
    store = SqlStore.from_url(url)
    migrate(store.engine)
    store.close()
    return url


def empty(store: SqlStore) -> None:
    """Delete every row of the store's tables (the schema version stays)."""
    with store.engine.begin() as conn:
        for table in metadata.sorted_tables:
            if table is not schema:
                conn.execute(delete(table))


@contextlib.contextmanager
def make_sql_store(kind: str) -> Iterator[SqlStore]:
    """A fresh, empty, ready SqlStore on a real ``kind`` database."""
    if kind not in KINDS:
        raise ValueError(f"unknown SQL store kind {kind!r}; expected one of {KINDS}")
    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="durable-sqlstore-"))
        store = SqlStore.from_url(f"sqlite:///{folder / 'runs.sqlite3'}", create_tables=True)
        store.ping()
        try:
            yield store
        finally:
            store.close()
            shutil.rmtree(folder, ignore_errors=True)
        return
    store = SqlStore.from_url(server_url(kind))
    store.ping()
    empty(store)
    try:
        yield store
    finally:
        store.close()
