"""A from/to date range filter with "past hour / day / week" shortcuts, for the run lists.

``?created_at__gte=…&created_at__lt=…`` (any ISO date or date and time; a
time without a zone is in the admin's current time zone) or
``?created_at__within=1h`` (``15m``, ``1h``, ``24h``, ``7d``: measured from the
database's ``now()``, not the web server's clock). With the status filter,
``?status=FAILED&finished_at__within=1h`` is "failed in the last hour". Each
bound is one range condition on an indexed column.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Field, Model, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

#: The shortcuts offered, as (``within`` value, label).
SHORTCUTS = (("1h", "Past hour"), ("24h", "Past 24 hours"), ("7d", "Past 7 days"))
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_within(text: str) -> dt.timedelta:
    """``15m`` / ``1h`` / ``7d`` as a timedelta; ValueError for anything else."""
    found = re.fullmatch(r"\s*(\d{1,5})\s*([mhd])\s*", text)
    if not found:
        raise ValueError(f"{text!r} is not a period such as 15m, 1h or 7d")
    return dt.timedelta(**{_UNITS[found[2]]: int(found[1])})


def parse_moment(text: str) -> dt.datetime:
    """An ISO date or date-time as an aware datetime (the current time zone if none given)."""
    text = text.strip()
    moment = parse_datetime(text.replace(" ", "T", 1)) if len(text) > 10 else None
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise ValueError(f"{text!r} is not a date or a date and time")
        moment = dt.datetime.combine(day, dt.time())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_current_timezone())
    return moment


class DateRangeFilter(admin.FieldListFilter):
    """From/to bounds on a date-time column, and "past hour / 24 hours / 7 days"."""

    template = "admin/celery_durable/date_range_filter.html"

    def __init__(self, field: Field[Any, Any], request: HttpRequest, params: dict[str, Any],
                 model: type[Model], model_admin: admin.ModelAdmin[Any],
                 field_path: str) -> None:
        self.since, self.until, self.within = (f"{field_path}__{suffix}"
                                               for suffix in ("gte", "lt", "within"))
        super().__init__(field, request, params, model, model_admin, field_path)
        #: The other parameters of the list (kept by the filter's form).
        self.kept: list[tuple[str, str]] = []

    def expected_parameters(self) -> list[str]:
        """``<field>__gte``, ``<field>__lt`` and ``<field>__within``."""
        return [self.since, self.until, self.within]

    def value_of(self, name: str) -> str:
        """The submitted value of one parameter ('' if absent)."""
        value = self.used_parameters.get(name)
        if isinstance(value, list):
            value = value[-1] if value else None
        return "" if value is None else str(value)

    def _input(self, name: str) -> str:
        """A bound as a ``datetime-local`` input's value, in the current time zone."""
        try:
            moment = parse_moment(self.value_of(name))
        except ValueError:
            return ""
        return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M:%S")

    @property
    def since_input(self) -> str:
        """The "from" bound for the form."""
        return self._input(self.since)

    @property
    def until_input(self) -> str:
        """The "to" bound for the form."""
        return self._input(self.until)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Rows inside the bounds; a bound that cannot be read is the admin's "?e=1"."""
        conditions: dict[str, Any] = {}
        try:
            if within := self.value_of(self.within):
                conditions[f"{self.field_path}__gte"] = Now() - parse_within(within)
            if since := self.value_of(self.since):
                conditions[f"{self.field_path}__gte"] = parse_moment(since)
            if until := self.value_of(self.until):
                conditions[f"{self.field_path}__lt"] = parse_moment(until)
        except ValueError as exc:
            raise IncorrectLookupParameters(exc) from exc
        return queryset.filter(**conditions) if conditions else queryset

    def choices(self, changelist: Any) -> list[dict[str, Any]]:
        """"Any time" and the shortcuts (the template adds the from/to form)."""
        mine = set(self.expected_parameters())
        self.kept = [(k, v) for k, values in changelist.params.items() if k not in mine
                     and k != "p" for v in (values if isinstance(values, list) else [values])]
        found = [{"selected": not any(self.value_of(p) for p in mine), "display": "Any time",
                  "query_string": changelist.get_query_string(remove=list(mine))}]
        for value, label in SHORTCUTS:
            found.append({"selected": self.value_of(self.within) == value, "display": label,
                          "query_string": changelist.get_query_string(
                              {self.within: value}, [self.since, self.until])})
        return found
