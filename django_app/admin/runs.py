"""The admin: run history, a run page with its step timeline, retry controls, dead letters.

Everything is read-only: runs change only through the actions (each behind
its own permission, see :mod:`.actions`). Stored values are shown
through ``format_html`` and template autoescaping only.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.views.main import PAGE_VAR
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from celery_durable import RunStatus
from celery_durable.redact import redact_json_text, redact_text

from ..models import DeadLetter, Run
from . import (
    actions,
    code_check,
    live,
    mysql_search,
    replay_view,
    run_steps,
    wait_actions,
    waterfall,
)
from .actions import redact_names
from .changelist import (
    SEARCH_WINDOW,
    CappedPaginator,
    ProbingQuerySet,
    StatusFilter,
    TaskFilter,
    format_duration,
    format_moment,
    from_epoch,
    indexed_search,
    pre,
    pretty_json,
    searched_window,
    short_name,
    status_badge,
)
from .labels import TagFilter, VersionFilter, attempts_text, tags_html
from .ranges import DateRangeFilter

_STATUSES = {status.value: status for status in RunStatus}
_FINISHED = {value for value, status in _STATUSES.items() if status.finished}


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Every durable run: newest first, filterable, searchable, read-only."""

    list_display = ("id", "task_display", "status_display", "step_display", "attempts_display",
                    "tags_display", "created_at", "duration_display", "idempotency_key")
    list_display_links = ("id",)
    list_filter = (StatusFilter, TaskFilter, TagFilter, VersionFilter,
                   ("created_at", DateRangeFilter), ("finished_at", DateRangeFilter))
    search_fields = ("args", "kwargs")
    search_help_text = ("A run id or its first characters, or an idempotency key (index "
                        "lookups, instant); else text in the arguments of the newest "
                        f"{SEARCH_WINDOW:,} runs (or of the creation date range chosen; "
                        "on MySQL/MariaDB all runs, narrowed by a full-text index of their "
                        "words where that is quicker).")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    #: How many of the newest runs a text search reads without a date range (bounded cost).
    search_window = SEARCH_WINDOW
    #: MySQL/MariaDB: how long reading rows may take to find a page of a search before the
    #: full-text index is tried (0: try it at once), how many runs the index may give for
    #: a search, and how long it may take to say.
    scan_probe_seconds = 0.05
    fulltext_rows = 5_000
    fulltext_probe_seconds = 1.5
    list_per_page = 50
    list_max_show_all = 500
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedPaginator
    actions = actions.ACTIONS + code_check.ACTIONS + wait_actions.ACTIONS
    change_form_template = "admin/celery_durable/run/change_form.html"
    fieldsets = (
        (None, {"fields": ("id", "task", "status_display", "idempotency_key", "tags_display",
                           "version", "created_display", "started_display",
                           "finished_display",
                           "duration_display", "recoveries", "attempts_display", "options")}),
        ("Arguments", {"fields": ("args_display", "kwargs_display", "metadata_display")}),
        ("Outcome", {"fields": ("result_display", "failed_step", "error_display",
                                "traceback_display", "task_result_link", "wait_display",
                                "replay_links")}),
    )
    readonly_fields = ("status_display", "duration_display", "args_display", "kwargs_display",
                       "result_display", "error_display", "traceback_display",
                       "task_result_link", "wait_display", "replay_links", "tags_display",
                       "attempts_display", "metadata_display", "created_display",
                       "started_display", "finished_display")

    class Media:
        css = {"all": ("celery_durable/admin.css",)}
        js = ("celery_durable/live.js",)

    # -- permissions: read-only, plus one permission per action --------------------------

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Runs are created by workers, never in the admin."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Runs are read-only; they change only through the actions."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """History is kept; finished runs are purged by their retention."""
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """``celery_durable.view_run`` (also for the dead-letter view)."""
        return request.user.has_perm("celery_durable.view_run")

    def _may(self, request: HttpRequest, perm: str) -> bool:
        return request.user.has_perm(actions.PERMISSIONS[perm])

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """``celery_durable.retry_run``: retry from the failed step."""
        return self._may(request, "retry")

    def has_restart_permission(self, request: HttpRequest) -> bool:
        """``celery_durable.restart_run``: restart from scratch."""
        return self._may(request, "restart")

    def has_retry_with_arguments_permission(self, request: HttpRequest) -> bool:
        """``celery_durable.retry_run_with_arguments``: retry with edited arguments."""
        return self._may(request, "retry_with_arguments")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """``celery_durable.cancel_run``: cancel."""
        return self._may(request, "cancel")

    def has_wake_permission(self, request: HttpRequest) -> bool:
        """``celery_durable.wake_run``: wake a sleeping or waiting run now."""
        return request.user.has_perm(wait_actions.PERMISSIONS["wake"])

    def has_send_event_permission(self, request: HttpRequest) -> bool:
        """``celery_durable.send_event``: send the event a waiting run awaits."""
        return request.user.has_perm(wait_actions.PERMISSIONS["send_event"])

    # -- the list --------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        """Runs, with a date hierarchy built from index probes (see ProbingQuerySet)."""
        return ProbingQuerySet.of(super().get_queryset(request))

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """No date hierarchy while searching the arguments: it would scan the table again."""
        cl = super().get_changelist_instance(request)
        if cl.query:
            cl.date_hierarchy = None
        return cl

    def get_paginator(self, request: HttpRequest, queryset: QuerySet[Run], per_page: int,
                      orphans: int = 0, allow_empty_first_page: bool = True) -> CappedPaginator:
        """The capped paginator, told which page is asked for (a back page counts exactly)."""
        try:
            wanted = int(request.GET.get(PAGE_VAR, 1))
        except ValueError:
            wanted = 1
        return CappedPaginator(queryset, per_page, orphans, allow_empty_first_page,
                               wanted_page=wanted)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Run],
                           search_term: str) -> tuple[QuerySet[Run], bool]:
        """An exact run id or idempotency key first, then a run id prefix (index lookups:
        the primary key's index and, on PostgreSQL, its ``LIKE`` index); else the arguments."""
        term = search_term.strip()
        if term:
            found = indexed_search(queryset, term)
            if found is not None:
                return found, False
            window = searched_window(queryset, request.GET, self.search_window)
            if window is not None:
                messages.info(request, f"Searched the arguments of the newest "
                              f"{self.search_window:,} runs. Choose a creation date range "
                              "to search older ones.")
                queryset = window
            if connections[queryset.db].vendor == "mysql":
                queryset, index = mysql_search.plan(
                    self, request, queryset, search_term,
                    lambda qs: super(RunAdmin, self).get_search_results(
                        request, qs, search_term)[0])
                if index is not None:
                    messages.info(request, mysql_search.used_message(index))
        return super().get_search_results(request, queryset, search_term)

    def get_list_filter(self, request: HttpRequest) -> Any:
        """The list's filters; on MySQL/MariaDB with the arguments' FULLTEXT index also how
        the arguments are searched."""
        if mysql_search.fulltext_index(self.model.objects.db) is not None:
            return (*self.list_filter, mysql_search.ArgumentScanFilter)
        return self.list_filter

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The list; a POSTed action the user may not run is a 403."""
        actions.check_posted_action(self, request)
        return super().changelist_view(request, extra_context)

    @admin.display(description="task", ordering="task")
    def task_display(self, obj: Run) -> str:
        """The task's name, its module path shortened (the full name on hover)."""
        return short_name(obj.task)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Run) -> str:
        """The status, coloured."""
        return status_badge(obj.status)

    @admin.display(description="step")
    def step_display(self, obj: Run) -> str:
        """The failed step of a failed run, else the step last checkpointed."""
        if obj.status == RunStatus.FAILED.value and obj.failed_step:
            return format_html('<span class="cd-failed-step">{}</span>', obj.failed_step)
        until = from_epoch(obj.wait_until)
        when = until.isoformat(sep=" ", timespec="seconds") if until else "no timeout"
        if obj.status == RunStatus.SLEEPING.value:
            return format_html("sleeping until {}", when)
        if obj.status == RunStatus.WAITING.value and obj.wait_event is not None:
            return format_html("waiting for {} key {} (until {})", obj.wait_event,
                               obj.wait_key, when)
        return obj.current_step or "—"

    @admin.display(description="attempt")
    def attempts_display(self, obj: Run) -> str:
        """The current step's attempt n of max, and the run's step retries."""
        return attempts_text(obj)

    @admin.display(description="tags")
    def tags_display(self, obj: Run) -> str:
        """The run's tags as badges."""
        return tags_html(obj)

    @admin.display(description="duration")
    def duration_display(self, obj: Run) -> str:
        """Started → finished (or → now while unfinished)."""
        if obj.started_at is None:
            return "—"
        end = obj.finished_at.timestamp() if obj.finished_at else time.time()
        return format_duration(end - obj.started_at.timestamp())

    # -- the run page ------------------------------------------------------------------------

    @admin.display(description="arguments")
    def args_display(self, obj: Run) -> str:
        """Positional arguments, pretty JSON."""
        return pre(pretty_json(redact_json_text(obj.args, redact_names())))

    @admin.display(description="metadata")
    def metadata_display(self, obj: Run) -> str:
        """What the run reported with ``set_metadata``, pretty JSON (redacted)."""
        if not obj.metadata:
            return "—"
        return pre(pretty_json(redact_json_text(json.dumps(obj.metadata), redact_names())))

    @admin.display(description="keyword arguments")
    def kwargs_display(self, obj: Run) -> str:
        """Keyword arguments, pretty JSON."""
        return pre(pretty_json(redact_json_text(obj.kwargs, redact_names())))

    @admin.display(description="result")
    def result_display(self, obj: Run) -> str:
        """The result, pretty JSON."""
        return pre(pretty_json(redact_json_text(obj.result, redact_names())))

    @admin.display(description="error")
    def error_display(self, obj: Run) -> str:
        """``type: message``."""
        if not obj.error_type:
            return "—"
        return format_html('<span class="cd-error">{}: {}</span>', obj.error_type,
                           redact_text(obj.error_message, redact_names()))

    @admin.display(description="traceback")
    def traceback_display(self, obj: Run) -> str:
        """The error's traceback."""
        return pre(redact_text(obj.error_traceback, redact_names()))

    @admin.display(description="durable wait")
    def wait_display(self, obj: Run) -> str:
        """The run's current or last sleep / event wait and how it ended."""
        return run_steps.run_wait_text(obj)

    @admin.display(description="created")
    def created_display(self, obj: Run) -> str:
        """When the run was created, to the second, with the time zone."""
        return format_moment(obj.created_at)

    @admin.display(description="started")
    def started_display(self, obj: Run) -> str:
        """When its first delivery began, to the second, with the time zone."""
        return format_moment(obj.started_at)

    @admin.display(description="finished")
    def finished_display(self, obj: Run) -> str:
        """When it finished, to the second, with the time zone."""
        return format_moment(obj.finished_at)

    @admin.display(description="Celery result")
    def task_result_link(self, obj: Run) -> str:
        """A link to django-celery-results' TaskResult of the same task id, if there is one."""
        if not apps.is_installed("django_celery_results"):
            return "—"
        from django_celery_results.models import TaskResult

        found = TaskResult.objects.filter(task_id=obj.pk).values_list("pk", "status").first()
        if found is None:
            return "—"
        try:
            url = reverse(f"{self.admin_site.name}:django_celery_results_taskresult_change",
                          args=[found[0]])
        except NoReverseMatch:
            return found[1]
        return format_html('<a href="{}">{} ({})</a>', url, obj.pk, found[1])

    def steps_context(self, obj: Run) -> dict[str, Any]:
        """What the step section draws (the page and its live refresh): the run, its step
        table and its waterfall."""
        names, record = redact_names(), run_steps.recorded(obj)
        return {"run": obj, "steps": run_steps.timeline(record, names),
                "waterfall": waterfall.build(obj, record, names, self.admin_site.name)}

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The run page: fields, step timeline and the buttons the user may use."""
        obj = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if obj is not None:
            allowed = self.get_actions(request)
            retriable = obj.status in actions.RETRIABLE
            checked = code_check.check(obj) if code_check.diverged(obj) else None
            context.update(
                code_check=checked,
                **self.steps_context(obj), next_url=self.run_page_url(obj),
                live_url=(None if live.finished(obj) else reverse(
                    f"{self.admin_site.name}:{self._url_name('live')}", args=[obj.pk])),
                changelist_url=reverse(f"{self.admin_site.name}:{self._url_name('changelist')}"),
                buttons=[(name, label) for name, label, ok in (
                    ("retry_from_failed_step", "Retry from failed step", retriable),
                    ("retry_with_the_current_code", "Retry with the current code",
                     checked is not None and checked.compatible),
                    ("restart_from_scratch", "Restart from scratch", retriable),
                    ("cancel_runs", "Cancel",
                     obj.status not in (RunStatus.SUCCEEDED.value, RunStatus.CANCELLED.value,
                                        RunStatus.REPLACED.value)),
                    ("wake_now", "Time out the wait now" if obj.status
                     == RunStatus.WAITING.value else "End the sleep now",
                     obj.status in wait_actions.PAUSED),
                ) if ok and name in allowed],
                event_url=(reverse(f"{self.admin_site.name}:{self._url_name('send_event')}",
                                   args=[obj.pk])
                           if obj.status == RunStatus.WAITING.value
                           and "send_awaited_event" in allowed else None),
                edit_url=(reverse(f"{self.admin_site.name}:{self._url_name('retry_arguments')}",
                                  args=[obj.pk])
                          if obj.status in _FINISHED and "retry_with_edited_arguments" in allowed
                          else None))
        return super().change_view(request, object_id, form_url, context)

    # -- retry with edited arguments ------------------------------------------------------

    def _url_name(self, suffix: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{suffix}"

    def run_page_url(self, obj: Run) -> str:
        """The run's page in the runs admin (a retried run leaves the dead-letter view)."""
        return reverse(f"{self.admin_site.name}:celery_durable_run_change", args=[obj.pk])

    def get_urls(self) -> list[URLPattern]:
        """The admin's URLs plus the live refresh, replay and send-event pages."""
        extra = [path("live/", self.admin_site.admin_view(self.list_live_view),
                      name=self._url_name("list_live")),
                 path("<path:object_id>/live/", self.admin_site.admin_view(self.run_live_view),
                      name=self._url_name("live")),
                 path("<path:object_id>/retry-with-arguments/",
                      self.admin_site.admin_view(self.retry_arguments_view),
                      name=self._url_name("retry_arguments")),
                 path("<path:object_id>/send-event/",
                      self.admin_site.admin_view(self.send_event_view),
                      name=self._url_name("send_event"))]
        return extra + super().get_urls()

    def run_live_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The run page's live refresh (see :mod:`.live`)."""
        return live.run_live_view(self, request, object_id)

    def list_live_view(self, request: HttpRequest) -> HttpResponse:
        """The list's live refresh of unfinished runs (see :mod:`.live`)."""
        return live.list_live_view(self, request)

    def send_event_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Send the event a waiting run awaits (see :mod:`.wait_actions`)."""
        return wait_actions.send_event_view(self, request, object_id)

    def retry_arguments_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Replay a finished run with edited arguments (see :mod:`.replay_view`)."""
        return replay_view.retry_arguments_view(self, request, object_id)

    @admin.display(description="Replays")
    def replay_links(self, obj: Run) -> str:
        """Links to the run this one replays and to the runs that replay it."""
        def link(run_id: Any) -> str:
            return format_html('<a href="{}">{}</a>', reverse(
                f"{self.admin_site.name}:celery_durable_run_change", args=[str(run_id)]),
                str(run_id))
        parts = []
        if obj.replay_of:
            parts.append(format_html("Replay of {}", link(obj.replay_of)))
        if isinstance(obj.replayed_as, list) and obj.replayed_as:
            parts.append(format_html("Replayed as {}", format_html_join(
                ", ", "{}", ((link(r),) for r in obj.replayed_as))))
        return format_html_join(mark_safe("<br>"), "{}", ((p,) for p in parts)) or "—"


@admin.register(DeadLetter)
class DeadLetterAdmin(RunAdmin):
    """Runs that failed for good (retries exhausted or a permanent error), with bulk re-trigger."""

    list_display = ("id", "error_glance", "task_display", "step_display", "attempts_display",
                    "finished_at")
    list_filter = (TaskFilter, TagFilter, VersionFilter, ("finished_at", DateRangeFilter))
    date_hierarchy = "finished_at"
    ordering = ("-finished_at", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        """FAILED runs only (served by the partial index ``cd_run_failed_idx``)."""
        return super().get_queryset(request).filter(status=RunStatus.FAILED.value)

    @admin.display(description="error")
    def error_glance(self, obj: Run) -> str:
        """The error type and the start of its message."""
        full = redact_text(obj.error_message, redact_names())
        message = full if len(full) <= 160 else full[:160] + "…"
        return format_html('<span class="cd-error" title="{}">{}: {}</span>', full,
                           obj.error_type.rsplit(".", 1)[-1], message)
