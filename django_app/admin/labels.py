"""The runs list's labels: tags and code version (filters and columns), and attempts.

Both filters list their choices from an index (:func:`.changelist.distinct_values`,
as :class:`.changelist.TaskFilter` does), and filter through an index: a tag
through ``RunTag``'s ``(tag, created_at)`` index, a version through
``cd_run_version_idx``.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from ..models import Run, RunTag
from .changelist import distinct_values


class TagFilter(admin.SimpleListFilter):
    """Runs carrying a tag (``apply_async(tags=[...])``, ``@durable_task(tags=...)``)."""

    title = "tag"
    parameter_name = "tag"
    limit = 100

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """The distinct tags (at most ``limit``; any other works as ``?tag=...`` too)."""
        tags = distinct_values(model_admin.model.objects.db, RunTag._meta.db_table, "tag",
                               self.limit)
        return [(tag, tag) for tag in tags]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Runs whose ``RunTag`` rows include the chosen tag."""
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(pk__in=RunTag.objects.using(queryset.db).filter(tag=value)
                               .values("run_id"))


class VersionFilter(admin.SimpleListFilter):
    """Runs started under one code version (``durable_version``)."""

    title = "code version"
    parameter_name = "version"
    limit = 100

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """The distinct versions (at most ``limit``)."""
        versions = distinct_values(model_admin.model.objects.db, Run._meta.db_table, "version",
                             self.limit)
        return [(v, v) for v in versions]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Runs of the chosen version (served by ``cd_run_version_idx``)."""
        value = self.value()
        return queryset.filter(version=value) if value else queryset


def tags_html(run: Run) -> str:
    """The run's tags as small badges (escaped), or an empty string."""
    tags = run.tags if isinstance(run.tags, list) else []
    return format_html_join(" ", '<span class="cd-tag">{}</span>',
                            ((str(tag),) for tag in tags))


def attempts_text(run: Run) -> str:
    """The current step's attempt (``n of max`` when the limit is known) and the run's retries.

    A RETRYING run shows the attempt it waits to make; ``retries`` counts every
    step retry over the run's life, so a run that retried two steps shows both.
    """
    attempt, most = run.attempts, None
    try:
        step, failed, most = json.loads(run.retrying) if run.retrying else (None, 0, None)
    except (ValueError, TypeError):
        step, failed = None, 0
    if step is not None and step != run.current_step:
        most = None
    elif step is not None and run.status == "RETRYING":
        attempt = int(failed) + 1
    text = f"{attempt} of {most}" if most else str(attempt)
    if run.retries:
        text += f" · {run.retries} retr{'y' if run.retries == 1 else 'ies'}"
    return format_html("{}", text) if attempt else "—"
