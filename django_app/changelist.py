"""What keeps the runs changelist fast with millions of rows, and how values are shown.

* :class:`CappedPaginator` never counts a whole table: it counts at most
  ``cap + 1`` rows and, past that, uses PostgreSQL's row estimate.
* :class:`StatusFilter` lists the engine's statuses without a query;
  :class:`TaskFilter` finds the task names with a loose index scan over
  ``cd_run_task_idx`` (one index probe per distinct task, not a scan).
* The ``format_*`` helpers turn stored text into escaped HTML fragments:
  they use ``format_html`` / autoescaping only, never ``mark_safe`` on data.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html

from celery_durable.records import RunStatus

from .models import Run

#: Most characters of one stored value shown on a page.
MAX_SHOWN = 20_000


class CappedPaginator(Paginator):
    """A paginator whose ``count`` costs at most ``cap + 1`` index entries."""

    cap = 10_000

    @cached_property
    def count(self) -> int:
        """Exact up to ``cap``; beyond it the planner's estimate (PostgreSQL) or ``cap + 1``."""
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return len(qs)
        n = qs.order_by().values("pk")[: self.cap + 1].count()
        if n <= self.cap:
            return n
        return max(n, estimated_rows(qs) or 0)


def estimated_rows(qs: QuerySet[Any]) -> int | None:
    """PostgreSQL's estimate of the rows of an unfiltered queryset's table, else None."""
    conn = connections[qs.db]
    if qs.query.where or conn.vendor != "postgresql":
        return None
    with conn.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                       [qs.model._meta.db_table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] > 0 else None


class StatusFilter(admin.SimpleListFilter):
    """Filter by run status (the engine's statuses; no query)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """Every RunStatus."""
        return [(s.value, s.value.title()) for s in RunStatus]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Runs in the chosen status (served by ``cd_run_status_idx``)."""
        value = self.value()
        return queryset.filter(status=value) if value else queryset


class TaskFilter(admin.SimpleListFilter):
    """Filter by task name; the names come from a loose index scan."""

    title = "task"
    parameter_name = "task"
    limit = 200

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """Distinct task names: one index probe each (recursive CTE)."""
        table = connections[model_admin.model.objects.db].ops.quote_name(Run._meta.db_table)
        sql = (f"WITH RECURSIVE t(task) AS (SELECT MIN(task) FROM {table} UNION ALL "
               f"SELECT (SELECT MIN(task) FROM {table} WHERE task > t.task) FROM t "
               f"WHERE t.task IS NOT NULL) SELECT task FROM t WHERE task IS NOT NULL LIMIT %s")
        with connections[model_admin.model.objects.db].cursor() as cursor:
            cursor.execute(sql, [self.limit])
            return [(name, name) for (name,) in cursor.fetchall()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Runs of the chosen task (served by ``cd_run_task_idx``)."""
        value = self.value()
        return queryset.filter(task=value) if value else queryset


def status_badge(status: str) -> str:
    """The status as a coloured badge (CSS class per status)."""
    return format_html('<span class="cd-status cd-status-{}">{}</span>', status.lower(),
                       status.title())


def pretty_json(text: str | None) -> str:
    """Stored JSON text indented for reading; other text unchanged; long text cut."""
    if text is None:
        return ""
    try:
        shown = json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=False)
    except (ValueError, TypeError):
        shown = text
    if len(shown) > MAX_SHOWN:
        shown = f"{shown[:MAX_SHOWN]}\n… ({len(shown) - MAX_SHOWN} more characters)"
    return shown


def pre(text: str) -> str:
    """``text`` in an escaped ``<pre>`` block."""
    return format_html('<pre class="cd-pre">{}</pre>', text) if text else "—"


def format_duration(seconds: float | None) -> str:
    """``850 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 5 min`` or ``—``."""
    if seconds is None or seconds < 0:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def from_epoch(seconds: float | None) -> dt.datetime | None:
    """Epoch seconds as an aware UTC datetime (for the template's date filter)."""
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
