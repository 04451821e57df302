"""The admin's controls over runs: retry, restart, retry with edited arguments, cancel.

Each is an ``@admin.action`` behind its own permission (see
``Run.Meta.permissions``). Re-triggering goes through
:func:`celery_durable.ops.inspection.retry_run`, so the store is reset *and* the run's
message is published; every change is written to the admin ``LogEntry`` and
reported with ``message_user``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, current_app
from celery._state import _get_active_apps  # no public name lists every live app
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import ngettext

from celery_durable import DurableError, RunStatus, cancel_run, retry_run
from celery_durable.config import settings_for
from celery_durable.stores import get_store

from ..models import Run
from ..store import DjangoStore

#: ``has_<perm>_permission`` → the Django permission it checks.
PERMISSIONS = {
    "retry": "celery_durable.retry_run",
    "restart": "celery_durable.restart_run",
    "retry_with_arguments": "celery_durable.retry_run_with_arguments",
    "cancel": "celery_durable.cancel_run",
}
RETRIABLE = (RunStatus.FAILED.value, RunStatus.CANCELLED.value)


def _uses_django_store(app: Celery) -> bool:
    """True if ``app`` keeps its durable runs in the Django database (asks ``get_store``)."""
    try:
        return isinstance(get_store(app), DjangoStore)
    except DurableError:  # no store this app can use
        return False


def celery_app(task_name: str | None = None) -> Celery:
    """The Celery app that re-triggers a run of ``task_name``.

    Among the current app (a Django project's ``proj/__init__.py`` imports it)
    and every other live app, the first that keeps runs in the Django database
    and knows the task; else the first that keeps runs in the Django database;
    else the current app.
    """
    current = current_app._get_current_object()
    apps = [current, *(a for a in _get_active_apps() if a is not current)]
    django_apps = [a for a in apps if _uses_django_store(a)]
    for app in django_apps:
        if task_name is not None and task_name in app.tasks:
            return app
    return django_apps[0] if django_apps else current


def redact_names() -> frozenset[str]:
    """``durable_redact`` (``CELERY_DURABLE_REDACT``) of the app that keeps runs in Django."""
    return settings_for(celery_app()).redact_names


def back(request: HttpRequest) -> HttpResponse | None:
    """Redirect to the POSTed ``next`` (the run page's buttons send it), if it is safe."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()},
                                                  require_https=request.is_secure()):
        return HttpResponseRedirect(target)
    return None


def report(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, done: int, verb: str,
           errors: list[str]) -> None:
    """Tell the user what happened: how many runs, and the first few refusals."""
    if done:
        modeladmin.message_user(request, ngettext(
            "%(count)d run %(verb)s.", "%(count)d runs %(verb)s.", done) % {
                "count": done, "verb": verb}, messages.SUCCESS)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5
                                         else "")
        modeladmin.message_user(request, ngettext(
            "%(count)d run was not changed: %(why)s", "%(count)d runs were not changed: "
            "%(why)s", len(errors)) % {"count": len(errors), "why": shown}, messages.WARNING)


def retrigger(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, run: Run,
              from_step: str, args: list[Any] | None = None,
              kwargs: dict[str, Any] | None = None) -> None:
    """Re-trigger one run through ``retry_run`` and log it."""
    retry_run(run.pk, from_step=from_step, args=args, kwargs=kwargs,
              app=celery_app(run.task))
    what = "from the failed step" if from_step == "failed" else "from scratch"
    extra = " with edited arguments" if args is not None or kwargs is not None else ""
    modeladmin.log_change(request, run, f"Re-triggered {what}{extra}.")


#: Runs listed on a confirmation page (the count is always the whole selection).
CONFIRM_SAMPLE = 20


def confirm_first(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                  queryset: QuerySet[Run], question: str) -> HttpResponse | None:
    """The confirmation page of an action ("Cancel 37 runs?"), as Django's delete action has;
    None once the user has confirmed (``post=yes``)."""
    if request.POST.get("post") == "yes":
        return None
    count = queryset.count()
    names = request.POST.getlist("action")
    try:
        action = names[int(request.POST.get("index", 0))]
    except (IndexError, ValueError):
        action = names[0] if names else ""
    across = request.POST.get("select_across", "0")
    target = back(request)
    context = {
        **modeladmin.admin_site.each_context(request), "opts": modeladmin.model._meta,
        "title": question.format(count=count, runs=ngettext("run", "runs", count)),
        "count": count, "action": action, "select_across": across,
        "sample": list(queryset.only("id", "task", "status")[:CONFIRM_SAMPLE]),
        "selected": ([] if across == "1"
                     else request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)),
        "next": request.POST["next"] if target is not None else "",
        "post_url": request.get_full_path()}
    return TemplateResponse(request, "admin/celery_durable/run/confirm_action.html", context)


def each_run(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Run],
             verb: str, act: Callable[[Run], str | None],
             question: str = "") -> HttpResponse | None:
    """Ask first (``question``, see :func:`confirm_first`), then apply ``act`` to every
    selected run, report, go back.

    ``act`` returns None when it changed the run, else why it did not; a
    ``DurableError`` it raises is reported for that run.
    """
    if question and (page := confirm_first(modeladmin, request, queryset, question)):
        return page
    done, errors = 0, []
    for run in queryset.only("id", "task", "status").iterator():
        try:
            why = act(run)
        except DurableError as exc:
            why = f"{run.pk}: {exc}"
        if why is None:
            done += 1
        else:
            errors.append(why)
    report(modeladmin, request, done, verb, errors)
    return back(request)


def _retry_all(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
               queryset: QuerySet[Run], from_step: str, verb: str,
               question: str) -> HttpResponse | None:
    def retry(run: Run) -> str | None:
        if run.status not in RETRIABLE:
            return f"{run.pk} is {run.status.lower()}"
        retrigger(modeladmin, request, run, from_step)
        return None

    return each_run(modeladmin, request, queryset, verb, retry, question)


@admin.action(permissions=["retry"], description="Retry selected runs from the failed step")
def retry_from_failed_step(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                           queryset: QuerySet[Run]) -> HttpResponse | None:
    """Resume each failed or cancelled run at its failed step; completed steps are kept."""
    return _retry_all(modeladmin, request, queryset, "failed",
                      "re-triggered from the failed step",
                      "Retry {count} {runs} from the failed step? Completed steps are kept.")


@admin.action(permissions=["restart"], description="Restart selected runs from scratch")
def restart_from_scratch(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                         queryset: QuerySet[Run]) -> HttpResponse | None:
    """Drop every checkpoint of each failed or cancelled run and run it again."""
    return _retry_all(modeladmin, request, queryset, "start", "restarted from scratch",
                      "Restart {count} {runs} from scratch? Every checkpoint is dropped and "
                      "every step runs again.")


@admin.action(permissions=["retry_with_arguments"],
              description="Replay the selected run with edited arguments…")
def retry_with_edited_arguments(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                                queryset: QuerySet[Run]) -> HttpResponse | None:
    """Open the replay form (edited arguments, a new run) of the one selected run."""
    return open_run_form(modeladmin, request, queryset, "retry_arguments",
                         "Select exactly one run to edit its arguments.")


def open_run_form(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                  queryset: QuerySet[Run], url_suffix: str, warning: str) -> HttpResponse | None:
    """Redirect to the per-run form ``<app>_<model>_<url_suffix>`` of the one selected run."""
    ids = list(queryset.values_list("pk", flat=True)[:2])
    if len(ids) != 1:
        modeladmin.message_user(request, warning, messages.WARNING)
        return None
    opts = modeladmin.model._meta
    return HttpResponseRedirect(reverse(
        f"{modeladmin.admin_site.name}:{opts.app_label}_{opts.model_name}_{url_suffix}",
        args=[ids[0]]))


@admin.action(permissions=["cancel"], description="Cancel selected runs")
def cancel_runs(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                queryset: QuerySet[Run]) -> HttpResponse | None:
    """Cancel each run (and its child runs) with ``cancel_run``; a running one stops.

    ``cancel_run`` also records REVOKED in the result backend, so
    ``AsyncResult`` is truthful.
    """
    def cancel(run: Run) -> str | None:
        if run.status in (RunStatus.SUCCEEDED.value, RunStatus.CANCELLED.value,
                          RunStatus.REPLACED.value):
            return f"{run.pk} is {run.status.lower()}; it cannot be cancelled"
        if not cancel_run(run.pk, app=celery_app(run.task)):
            return f"{run.pk} finished before it could be cancelled"
        modeladmin.log_change(request, run, "Cancelled.")
        return None

    return each_run(modeladmin, request, queryset, "cancelled", cancel,
                    "Cancel {count} {runs}? A running step stops at its next checkpoint; "
                    "child runs are cancelled too.")


ACTIONS = [retry_from_failed_step, restart_from_scratch, retry_with_edited_arguments,
           cancel_runs]


def check_posted_action(modeladmin: admin.ModelAdmin[Any], request: HttpRequest) -> None:
    """403 for a POSTed action the user may not run (Django would only say "no action")."""
    if request.method != "POST" or "index" not in request.POST:
        return
    names = request.POST.getlist("action")
    try:
        name = names[int(request.POST.get("index", 0))]
    except (IndexError, ValueError):
        return
    guarded = {getattr(fn, "__name__", fn) for fn in modeladmin.actions or ()
               if getattr(fn, "allowed_permissions", ())}  # set by @admin.action
    if name in guarded and name not in modeladmin.get_actions(request):
        raise PermissionDenied(f"you may not run the action {name!r}")


def permitted_run(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, object_id: str,
                  allowed: bool) -> Run:
    """The run ``object_id`` for a page of its own: 403 unless ``allowed``, 404 if none."""
    if not allowed:
        raise PermissionDenied
    run: Run | None = modeladmin.get_object(request, object_id)
    if run is None:
        raise Http404(f"no run {object_id!r}")
    return run
