"""The database's clock: every time the Django store decides by is read in SQL.

Workers' clocks disagree; the database has one. A lease expiry, a due or
wake time, an event's sequence number or a key's expiry is computed from the
database's clock in the statement that writes or compares it: an ``UPDATE``
sets ``lease_expires = <now> + ttl``, a query filters ``due_at <= <now>``, and
the locking ``SELECT`` of a decision (``begin``, ``claim_due``, ...) reads
``<now>`` along with the row (:func:`locked`).

``<now>`` is epoch seconds as a float: ``EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())``
on PostgreSQL, ``UNIX_TIMESTAMP(NOW(6))`` on MySQL/MariaDB, and ``julianday``
arithmetic on SQLite (milliseconds; SQLite is a local file anyway).
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import FloatField, Func, QuerySet, Value

from celery_durable.stores.sql import clock as sql_clock
from celery_durable.stores.sql.clock import NOW_SQL


def now_sql(vendor: str) -> str:
    """``<now>`` for ``vendor`` (a database this store was not built for is an error)."""
    return sql_clock.now_sql(vendor, store="Django store")


class StoreNow(Func):  # type: ignore[misc]
    """The database's clock as epoch seconds, in an ORM expression."""

    output_field = FloatField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        return now_sql(connection.vendor), []


def later(seconds: float) -> Any:
    """``<now> + seconds``, for an UPDATE or a filter."""
    return StoreNow() + Value(float(seconds), output_field=FloatField())


def earlier(seconds: float) -> Any:
    """``<now> - seconds``."""
    return StoreNow() - Value(float(seconds), output_field=FloatField())


def locked(queryset: QuerySet[Any], pk: Any) -> Any:
    """The row ``pk`` of ``queryset``, locked (``SELECT … FOR UPDATE``), with ``store_now``:
    the database's clock read in the same statement. None if there is no such row."""
    return (queryset.select_for_update().filter(pk=pk).annotate(store_now=StoreNow())
            .first())


def read(using: str) -> float:
    """The database's clock now (one query; for a decision that has no row to lock)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {now_sql(connection.vendor)}")
        (value,) = cursor.fetchone()
    return float(value)


__all__ = ["NOW_SQL", "StoreNow", "earlier", "later", "locked", "now_sql", "read"]
