"""The database's clock in SQL: every time a SQL store decides by is read in the statement.

Workers' clocks disagree; the database has one. ``<now>`` is epoch seconds as
a float: ``EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())`` on PostgreSQL,
``UNIX_TIMESTAMP(NOW(6))`` on MySQL/MariaDB, and ``julianday`` arithmetic on
SQLite (milliseconds; SQLite is a local file anyway). Shared by the
SQLAlchemy store and the Django store; imports neither.
"""

from __future__ import annotations

#: ``<now>`` in each database's SQL (epoch seconds, a float), by Django vendor or
#: SQLAlchemy dialect name.
NOW_SQL = {
    "postgresql": "EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())::double precision",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
    "mariadb": "UNIX_TIMESTAMP(NOW(6))",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


def now_sql(database: str, *, store: str = "SQL store") -> str:
    """``<now>`` for ``database`` (a database the stores were not built for is an error)."""
    try:
        return NOW_SQL[database]
    except KeyError:
        raise NotImplementedError(
            f"the {store} has no clock for {database!r} databases; it supports "
            "PostgreSQL, MySQL/MariaDB and SQLite") from None


__all__ = ["NOW_SQL", "now_sql"]
