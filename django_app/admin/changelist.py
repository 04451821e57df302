"""What keeps the runs changelist fast with millions of rows, and how values are shown.

* :class:`CappedPaginator` never counts a whole table to draw a page: it
  counts at most ``cap + 1`` rows and, past that, shows PostgreSQL's row
  estimate ("about 180,000") while every page stays reachable.
* :class:`ProbingQuerySet` builds the date hierarchy from one index probe
  per year, month or day instead of ``SELECT DISTINCT date_trunc(…)`` over
  every row.
* :class:`StatusFilter` lists the engine's statuses without a query;
  :class:`TaskFilter` finds the task names with a loose index scan over
  ``cd_run_task_idx`` (one index probe per distinct task, not a scan).
* The ``format_*`` helpers turn stored text into escaped HTML fragments:
  they use ``format_html`` / autoescaping only, never ``mark_safe`` on data.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from celery_durable.records import RunStatus

from ..models import Run

#: Most characters of one stored value shown on a page.
MAX_SHOWN = 20_000


class CappedPaginator(Paginator):
    """A paginator whose ``count`` costs at most ``cap + 1`` index entries for the front
    pages, and whose every page stays reachable past the cap.

    Up to ``cap`` rows the count is exact. Past it, a page in the front half
    of PostgreSQL's planner estimate shows the estimate ("about 180,000",
    ``estimated`` is True) and is one ``OFFSET`` read, bounded by the rows
    found, not by the estimate. A page in the back half counts the rows once
    (``wanted_page`` says which page the request asks for) and is read from
    the other end of the ordering, so the last page costs what the first does.
    """

    cap = 10_000
    #: Whether ``count`` is an estimate (more than ``cap`` rows, a front page).
    estimated = False
    #: Whether the database gave no estimate (``count`` is then ``cap + 1``).
    unknown = False

    def __init__(self, object_list: Any, per_page: int | str, orphans: int = 0,
                 allow_empty_first_page: bool = True, *, wanted_page: int = 1) -> None:
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.wanted_page = wanted_page

    @cached_property
    def count(self) -> int:
        """Exact up to ``cap`` and for a back page; else the planner's estimate (or cap + 1)."""
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return len(qs)
        n = qs.order_by().values("pk")[: self.cap + 1].count()
        if n <= self.cap:
            return n
        estimate = estimated_rows(qs)
        guess = max(n, estimate or 0)
        if (self.wanted_page - 1) * self.per_page < guess // 2:
            self.estimated, self.unknown = True, estimate is None
            return guess
        return int(qs.order_by().count())  # a back page: count once, exactly

    @property
    def count_text(self) -> str:
        """``1,234``; for an estimate ``about 180,000`` (two significant digits), or ``more
        than 10,000`` where the database gives none."""
        count = self.count  # (decides ``estimated``)
        if not self.estimated:
            return f"{count:,}"
        if self.unknown:  # no planner estimate (not PostgreSQL)
            return f"more than {self.cap:,}"
        return f"about {round(count, 2 - len(str(count))):,}"

    def validate_number(self, number: Any) -> int:
        """Django's check; past an estimated count only ``>= 1`` (the rows decide)."""
        if not self.estimated:
            return int(super().validate_number(number))
        try:
            value = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        if value < 1:
            raise EmptyPage("That page number is less than 1")
        return value

    def page(self, number: Any) -> Page:
        """The page: read from the nearer end of the ordering."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if self.estimated:
            rows = list(self.object_list[bottom:bottom + self.per_page])
            if not rows:
                raise EmptyPage("That page contains no results")
            return self._get_page(rows, number, self)
        if self.count <= self.cap or bottom < self.count // 2:
            return super().page(number)
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        # Counted from the end: the reversed ordering's first rows, put back in order.
        rows = list(self.object_list.reverse()[self.count - top:self.count - bottom])[::-1]
        return self._get_page(rows, number, self)


#: What a run id prefix looks like (at least 4 characters of an id): searched by the index.
ID_PREFIX = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.:-]{3,}")


def indexed_search(queryset: QuerySet[Any], term: str) -> QuerySet[Any] | None:
    """The runs ``term`` names by an index: an exact run id or idempotency key, else runs
    whose id starts with it (the primary key's index and, on PostgreSQL, its ``LIKE``
    index); None when it names none (then it is text to find in the arguments)."""
    exact = queryset.filter(pk=term) | queryset.filter(idempotency_key=term)
    if exact.exists():
        return exact
    if ID_PREFIX.fullmatch(term):
        # MySQL/MariaDB: a binary LIKE (startswith) cannot use the primary key
        # under its case-insensitive collation; a plain LIKE (istartswith) can.
        mysql = connections[queryset.db].vendor == "mysql"
        prefix = queryset.filter(**{"pk__istartswith" if mysql else "pk__startswith": term})
        if prefix.exists():
            return prefix
    return None


#: How many of the newest runs a search in the arguments reads when no date range is set.
SEARCH_WINDOW = 100_000
#: List parameters that bound the rows by date (a date range or the date hierarchy).
_DATED = ("created_at__", "finished_at__")


def searched_window(queryset: QuerySet[Any], params: Mapping[str, Any],
                    size: int = SEARCH_WINDOW) -> QuerySet[Any] | None:
    """``queryset`` cut to its newest ``size`` runs, for a text search that reads rows; None
    when it has no more than that, the list is bounded by a date already, or the database
    is MySQL/MariaDB.

    One index read (``OFFSET size - 1`` on ``created_at``) finds the cut-off, so a
    search in the arguments costs the same at a million runs as at a hundred thousand
    (PostgreSQL at 1,000,000 runs: 86 ms, from 0.4 s). Not on MySQL/MariaDB: there the
    range reads each row by its primary key, which cost more than the table scan it
    replaces (5.9 s against 1.7 s for the count at 1,000,000 runs, bench/NOTES.md).
    """
    if any(name.startswith(_DATED) for name in params) or \
            connections[queryset.db].vendor == "mysql":
        return None
    cutoff = list(queryset.order_by("-created_at").values_list("created_at", flat=True)
                  [size - 1:size])
    return queryset.filter(created_at__gte=cutoff[0]) if cutoff else None


def estimated_rows(qs: QuerySet[Any]) -> int | None:
    """PostgreSQL's estimate of the rows of ``qs``, else None.

    Unfiltered: the table's ``reltuples``. Filtered: the planner's row
    estimate for the query (``EXPLAIN``), which reads statistics, not rows.
    """
    conn = connections[qs.db]
    if conn.vendor != "postgresql":
        return None
    with conn.cursor() as cursor:
        if not qs.query.where:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                           [qs.model._meta.db_table])
            row = cursor.fetchone()
            return int(row[0]) if row and row[0] > 0 else None
        sql, params = qs.order_by().values("pk").query.sql_with_params()
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    rows = plan[0]["Plan"].get("Plan Rows")
    return int(rows) if rows else None


def _next(start: dt.datetime, kind: str) -> dt.datetime:
    """The start of the year, month or day after the one starting at ``start``."""
    if kind == "year":
        return start.replace(year=start.year + 1)
    if kind == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + dt.timedelta(days=1)


def _truncate(moment: dt.datetime, kind: str) -> dt.datetime:
    moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind in ("year", "month"):
        moment = moment.replace(day=1)
    return moment.replace(month=1) if kind == "year" else moment


class ProbingQuerySet(QuerySet[Any]):
    """A queryset whose ``datetimes()`` probes an index once per period.

    Django's date hierarchy asks for the distinct years, months or days of
    the whole filtered changelist, which is a full scan. Here the first and
    last value come from the index (MIN/MAX), and each year, month or day in
    between is one ``EXISTS`` range probe (at most 31). Only the admin uses
    it; the model's manager is Django's own.
    """

    @classmethod
    def of(cls, qs: QuerySet[Any]) -> ProbingQuerySet:
        """The same query as ``qs``, with probing ``datetimes()``."""
        return cls(model=qs.model, query=qs.query.chain(), using=qs._db, hints=qs._hints)

    def datetimes(self, field_name: str, kind: str, order: str = "ASC",  # type: ignore[override]
                  tzinfo: dt.tzinfo | None = None) -> list[dt.datetime]:
        """The periods (``year``/``month``/``day``) that hold rows, as aware datetimes."""
        if kind not in ("year", "month", "day"):
            return list(super().datetimes(field_name, kind, order, tzinfo))
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        zone = tzinfo or timezone.get_current_timezone()
        first, last = (timezone.localtime(bounds[k], zone) if timezone.is_aware(bounds[k])
                       else bounds[k] for k in ("first", "last"))
        found, start = [], _truncate(first, kind)
        while start <= last and len(found) < 400:
            end = _next(start, kind)
            # ORDER BY the field makes the planner walk the index; a bare EXISTS may
            # choose a sequential scan that reads half the table before a match.
            probe = self.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end})
            if probe.order_by(field_name).values_list("pk", flat=True)[:1]:
                found.append(start)
            start = end
        return found if order == "ASC" else found[::-1]


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


def distinct_values(using: str, table: str, column: str, limit: int) -> list[str]:
    """Distinct non-null values of ``table.column``, smallest first, read from its index.

    PostgreSQL and SQLite: a loose index scan written as a recursive CTE (one index
    probe per distinct value; "IS NOT NULL" lets a partial index serve each probe).
    MySQL/MariaDB run that CTE without index probes (850 ms for 1,000 tags at 100,000
    runs, ``bench/admin_changelist.py --database mariadb``) but do a loose index scan of
    their own for ``SELECT DISTINCT`` on an index's first column.
    """
    connection = connections[using]
    t, c = connection.ops.quote_name(table), connection.ops.quote_name(column)
    if connection.vendor == "mysql":
        sql = f"SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY {c} LIMIT %s"
    else:
        sql = (f"WITH RECURSIVE v(x) AS (SELECT MIN({c}) FROM {t} WHERE {c} IS NOT NULL "
               f"UNION ALL SELECT (SELECT MIN({c}) FROM {t} WHERE {c} > v.x) FROM v "
               f"WHERE v.x IS NOT NULL) "
               f"SELECT x FROM v WHERE x IS NOT NULL LIMIT %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [str(value) for (value,) in cursor.fetchall()]


class TaskFilter(admin.SimpleListFilter):
    """Filter by task name; the names come from a loose index scan."""

    title = "task"
    parameter_name = "task"
    limit = 200

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """Distinct task names, read from ``cd_run_task_idx`` (:func:`distinct_values`)."""
        names = distinct_values(model_admin.model.objects.db, Run._meta.db_table, "task",
                                self.limit)
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Runs of the chosen task (served by ``cd_run_task_idx``)."""
        value = self.value()
        return queryset.filter(task=value) if value else queryset


#: Longest task name shown whole in a list (longer ones keep their last two parts).
SHORT_NAME = 32


def short_name(name: str) -> str:
    """``…tasks.process_order`` for a long dotted name, the full name as its hover title."""
    shown = name
    if len(name) > SHORT_NAME and name.count(".") >= 2:
        shown = "…" + ".".join(name.rsplit(".", 2)[-2:])
    return format_html('<span class="cd-task" title="{}">{}</span>', name, shown)


def status_badge(status: str) -> str:
    """The status as a coloured badge (CSS class per status)."""
    return format_html('<span class="cd-status cd-status-{}">{}</span>', status.lower(),
                       status.title())


def pretty_json(text: str | None, *, cut: bool = True) -> str:
    """Stored JSON text indented for reading; other text unchanged; long text cut (``cut``)."""
    if text is None:
        return ""
    try:
        shown = json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=False)
    except (ValueError, TypeError):
        shown = text
    if cut and len(shown) > MAX_SHOWN:
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


def format_moment(moment: dt.datetime | None) -> str:
    """``2026-12-04 03:21:25 UTC``: to the second, in the admin's time zone, named; or ``—``."""
    if moment is None:
        return "—"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


def from_epoch(seconds: float | None) -> dt.datetime | None:
    """Epoch seconds as an aware UTC datetime (for the template's date filter)."""
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
