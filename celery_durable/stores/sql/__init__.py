"""The SQL store: durable runs in a PostgreSQL, MySQL/MariaDB or SQLite database, on
SQLAlchemy Core.

It goes with Celery's SQLAlchemy result backend (``result_backend = "db+…"``),
or is chosen by ``durable_store = "db+postgresql://…"``. Its tables are
created by ``celery -A proj durable migrate`` (or on first start with
``durable_sql_create_tables = True``). SQLAlchemy is imported only when the
store is used (``pip install 'celery-durable[sql]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import SqlStore

__all__ = ["SqlStore"]


def __getattr__(name: str) -> Any:
    if name == "SqlStore":
        from .store import SqlStore

        return SqlStore
    raise AttributeError(name)
