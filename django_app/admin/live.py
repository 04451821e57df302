"""Live refresh: the JSON the run page and the run lists poll while runs are unfinished.

``<run id>/live/`` answers the run page: its status, whether it is finished,
the HTML of its read-only fields that change while it runs, and the step
table (the same template the page is drawn with). ``live/?id=…&id=…`` answers
a list: the changing cells of those runs. Both are behind the view
permission, read one run (or one page of runs) by primary key, and return
HTML made by the admin's own escaping display methods (``conditional_escape``
on each), so the page's script only places it. ``celery_durable/live.js``
polls every two seconds and stops once every run on the page has finished.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.template.loader import render_to_string
from django.utils.html import conditional_escape

from celery_durable.records import FINISHED, RunStatus

from ..models import Run
from .actions import permitted_run

#: The run page's read-only fields that change while a run runs.
PAGE_FIELDS = ("status_display", "attempts_display", "duration_display", "result_display",
               "error_display", "traceback_display", "wait_display", "metadata_display")
#: The list's cells that change while a run runs.
LIST_FIELDS = ("status_display", "step_display", "attempts_display", "duration_display")
#: Most runs one list poll may ask for (a list page shows at most 500).
MOST_IDS = 500
_FINISHED = {status.value for status in FINISHED}


def finished(run: Run) -> bool:
    """Whether the run's status is final (a status this code does not know counts as final)."""
    return run.status in _FINISHED or run.status not in RunStatus.__members__


def _cells(modeladmin: admin.ModelAdmin[Any], run: Run, names: tuple[str, ...]) -> dict[str, str]:
    """The HTML of the display methods ``names`` for ``run`` (escaped unless already safe)."""
    found = {}
    for name in names:
        method = getattr(modeladmin, name, None)
        if method is not None:
            found[name] = str(conditional_escape(method(run)))
    return found


def run_live_view(modeladmin: Any, request: HttpRequest, object_id: str) -> JsonResponse:
    """The run page's poll: status, changing fields and the step table of one run."""
    run = permitted_run(modeladmin, request, object_id, modeladmin.has_view_permission(request))
    steps = render_to_string("admin/celery_durable/run/steps.html", {
        **modeladmin.steps_context(run), "live_url": request.path}, request)
    return JsonResponse({"id": run.pk, "status": run.status, "finished": finished(run),
                         "fields": _cells(modeladmin, run, PAGE_FIELDS), "steps": steps})


def list_live_view(modeladmin: Any, request: HttpRequest) -> JsonResponse:
    """A list's poll: the changing cells of the runs named by ``?id=`` (at most 500)."""
    if not modeladmin.has_view_permission(request):
        raise PermissionDenied
    ids = request.GET.getlist("id")[:MOST_IDS]
    runs = modeladmin.get_queryset(request).filter(pk__in=ids) if ids else []
    return JsonResponse({"runs": {
        run.pk: {"status": run.status, "finished": finished(run),
                 "fields": _cells(modeladmin, run, LIST_FIELDS)} for run in runs}})
