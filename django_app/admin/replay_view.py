"""The run page's "retry with edited arguments": a form of the new arguments (redacted
values kept as they were), the steps it keeps, then ``replay_run`` as a new run."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from celery_durable import DurableError, RunStatus
from celery_durable.ops.replay import kept_steps, replay_run
from celery_durable.redact import redact_json_text, redact_text, unredact
from celery_durable.stores import get_store

from ..models import Run
from . import actions
from .actions import redact_names
from .changelist import pretty_json
from .forms import ReplayForm

_STATUSES = {status.value: status for status in RunStatus}


def _decoded(text: str | None) -> Any:
    """Stored JSON text as plain JSON values (tags kept), or None if it is not JSON."""
    try:
        return json.loads(text or "null")
    except ValueError:
        return None


def retry_arguments_view(run_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    """Replay a finished run with edited arguments (validated JSON) as a new run: the
    form, then the replay."""
    obj = actions.permitted_run(run_admin, request, object_id,
                                run_admin.has_retry_with_arguments_permission(request))
    page = run_admin.run_page_url(obj)
    status = _STATUSES.get(obj.status)
    if status is None or not status.finished:
        run_admin.message_user(request, f"Run {obj.pk} is {obj.status.lower()}; only a finished "
                          "run can be replayed.", messages.WARNING)
        return HttpResponseRedirect(page)
    completed = list(obj.steps.filter(status="succeeded").order_by("position")
                     .values_list("key", flat=True))
    if request.method == "POST":
        form = ReplayForm(request.POST, completed=completed)
        if form.is_valid() and (new_id := _replay(run_admin, request, obj, form)) is not None:
            return HttpResponseRedirect(reverse(
                f"{run_admin.admin_site.name}:celery_durable_run_change", args=[new_id]))
    else:
        form = ReplayForm(initial={
            # Uncut: the form submits this text back as the new arguments.
            "args": pretty_json(redact_json_text(obj.args, redact_names()), cut=False),
            "kwargs": pretty_json(redact_json_text(obj.kwargs, redact_names()), cut=False),
            "from_step": "start"}, completed=completed)
    obj.error_message = redact_text(obj.error_message, redact_names())  # shown, not saved
    context = {**run_admin.admin_site.each_context(request), "opts": run_admin.opts, "run": obj,
               "form": form, "title": f"Replay {obj.task} with edited arguments",
               "original": obj, "page_url": page, "media": run_admin.media + form.media,
               "has_view_permission": True}
    return TemplateResponse(request, "admin/celery_durable/run/retry_arguments.html",
                            context)

def _replay(run_admin: Any, request: HttpRequest, obj: Run, form: ReplayForm) -> str | None:
    """Start the replay the valid ``form`` asks for and log it; its id, or None with the
    form's errors set (unconfirmed kept steps, arguments the task refuses)."""
    data = form.cleaned_data
    app = actions.celery_app(obj.task)
    from_step = str(data["from_step"])
    kept = ""
    if from_step != "start":
        record = get_store(app).get_run(obj.pk)
        kept = ", ".join(s.key for s in kept_steps(record, from_step)) if record else ""
        if not data["confirm"]:
            form.add_error("confirm", f"This replay keeps the values recorded for "
                           f"{kept or 'no step'} (computed from the old arguments); "
                           "tick the box to confirm.")
            return None
    try:
        new = replay_run(obj.pk, args=unredact(data["args"], _decoded(obj.args),
                                               redact_names()),
                         kwargs=unredact(data["kwargs"], _decoded(obj.kwargs),
                                         redact_names()),
                         from_step=from_step, app=app,
                         idempotency_key=data["idempotency_key"] or None)
    except (TypeError, ValueError, DurableError) as exc:
        form.add_error(None, str(exc))
        return None
    how = f"keeping {kept}" if kept else "from the start"
    run_admin.log_change(request, obj, f"Replayed with edited arguments as run {new.id}, {how}.")
    run_admin.message_user(request, f"Run {obj.pk} replayed with edited arguments as run "
                      f"{new.id} ({how}).", messages.SUCCESS)
    return str(new.id)
