"""Admin controls for paused runs: "wake now" and "send the awaited event".

Both go through the engine's API (:func:`celery_durable.wake_run`,
:func:`celery_durable.send_event`), so the run's message is published as
it would be by a timer or a webhook; each is behind its own permission and
written to the admin ``LogEntry``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.translation import ngettext

from celery_durable import DurableError, RunStatus, send_event, wake_run

from ..models import Run
from .actions import celery_app, each_run, open_run_form, permitted_run
from .forms import PayloadForm

PAUSED = (RunStatus.SLEEPING.value, RunStatus.WAITING.value)


@admin.action(permissions=["wake"],
              description="End the sleep / time out the wait of selected runs now")
def wake_now(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
             queryset: QuerySet[Run]) -> HttpResponse | None:
    """Resume each sleeping run now; a waiting run resumes as if its wait timed out."""
    def wake(run: Run) -> str | None:
        if run.status not in PAUSED:
            return f"{run.pk} is {run.status.lower()}, not sleeping or waiting"
        if not wake_run(run.pk, app=celery_app(run.task)):
            return f"{run.pk} was no longer paused"
        modeladmin.log_change(request, run, "Woken now.")
        return None

    return each_run(modeladmin, request, queryset, "woken", wake,
                    "Wake {count} {runs} now? A sleeping run's sleep ends now; a waiting run's "
                    "wait times out now, as if the event never came.")


@admin.action(permissions=["send_event"], description="Send the awaited event…")
def send_awaited_event(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                       queryset: QuerySet[Run]) -> HttpResponse | None:
    """Open the send-event form for the one selected waiting run."""
    return open_run_form(modeladmin, request, queryset, "send_event",
                         "Select exactly one waiting run to send its event.")


class SendEventForm(PayloadForm):
    """An event's name, key and JSON payload."""

    name = forms.CharField(label="Event name", max_length=255)
    key = forms.CharField(label="Key", max_length=255, required=False)
    field_order = ["name", "key", "payload"]


def send_event_view(modeladmin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    """The form behind "send the awaited event", prefilled from the run's wait."""
    obj = permitted_run(modeladmin, request, object_id,
                        modeladmin.has_send_event_permission(request))
    page = modeladmin.run_page_url(obj)
    if request.method == "POST":
        form = SendEventForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                resumed = send_event(data["name"], data["key"], data["payload"],
                                     app=celery_app(obj.task))
            except DurableError as exc:
                form.add_error(None, str(exc))
            else:
                modeladmin.log_change(request, obj, f"Sent event {data['name']!r} "
                                      f"key {data['key']!r}.")
                modeladmin.message_user(request, ngettext(
                    "Event %(name)r sent; %(count)d run resumed.",
                    "Event %(name)r sent; %(count)d runs resumed.", resumed) % {
                        "name": data["name"], "count": resumed}, messages.SUCCESS)
                return HttpResponseRedirect(page)
    else:
        form = SendEventForm(initial={"name": obj.wait_event or "", "key": obj.wait_key or ""})
    context = {**modeladmin.admin_site.each_context(request), "opts": modeladmin.opts,
               "run": obj, "form": form, "title": f"Send an event to {obj.task}",
               "original": obj, "page_url": page, "media": modeladmin.media + form.media,
               "has_view_permission": True}
    return TemplateResponse(request, "admin/celery_durable/run/send_event.html", context)


ACTIONS = [wake_now, send_awaited_event]
PERMISSIONS = {"wake": "celery_durable.wake_run", "send_event": "celery_durable.send_event"}
