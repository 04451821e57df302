"""The admin of wait tokens: pending, completed and expired tokens with their run, and
"complete with payload" behind its own permission (``celery_durable.complete_wait_token``).

A token's state is decided by the database's clock (read in the list's query), as the
store decides it. Completing goes through :func:`celery_durable.complete_wait_token`, so
the run resumes as it would from ``POST /durable/tokens/<id>``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from celery_durable import (
    DurableError,
    WaitTokenExpiredError,
    WaitTokenNotFoundError,
    complete_wait_token,
)

from ..models import WaitToken
from ..store import clock
from .actions import celery_app, open_run_form
from .changelist import format_moment, from_epoch, pre, pretty_json
from .forms import PayloadForm

PERMISSION = "celery_durable.complete_wait_token"


def _state(token: Any) -> str:
    if token.completed_at is not None:
        return "completed"
    now = getattr(token, "store_now", None)
    if token.expires_at is not None and now is not None and now >= token.expires_at:
        return "expired"
    return "pending"


class TokenStateFilter(admin.SimpleListFilter):
    """Pending, completed or expired, by the database's clock."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """The three states."""
        return [("pending", "Pending"), ("completed", "Completed"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """The tokens in the chosen state."""
        open_ = Q(completed_at__isnull=True)
        live = Q(expires_at__isnull=True) | Q(expires_at__gt=clock.StoreNow())
        match self.value():
            case "pending":
                return queryset.filter(open_ & live)
            case "completed":
                return queryset.filter(completed_at__isnull=False)
            case "expired":
                return queryset.filter(open_ & ~live)
        return queryset


@admin.action(permissions=["complete"], description="Complete the selected token with a "
              "payload…")
def complete_with_payload(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                          queryset: QuerySet[WaitToken]) -> HttpResponse | None:
    """Open the completion form of the one selected token."""
    return open_run_form(modeladmin, request, queryset, "complete",
                         "Select exactly one wait token to complete it.")


@admin.register(WaitToken)
class WaitTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Wait tokens, newest first; read-only but for "complete with payload"."""

    list_display = ("id", "state_display", "run_link", "created_display", "expires_display",
                    "completed_display")
    list_filter = (TokenStateFilter,)
    search_fields = ("=id", "=run_id")
    search_help_text = "A token id or a run id."
    ordering = ("-created_at", "-id")
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = [complete_with_payload]
    fields = ("id", "state_display", "run_link", "tags", "created_display", "expires_display",
              "completed_display", "payload_display")
    readonly_fields = fields

    class Media:
        css = {"all": ("celery_durable/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[WaitToken]:
        """Tokens with the database's clock (``store_now``) to tell expired from pending."""
        return super().get_queryset(request).annotate(store_now=clock.StoreNow())

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tokens are created by runs."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only: a token changes only by its completion."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Tokens go with their runs."""
        return False

    def has_complete_permission(self, request: HttpRequest) -> bool:
        """``celery_durable.complete_wait_token``."""
        return bool(request.user.has_perm(PERMISSION))

    @admin.display(description="state")
    def state_display(self, obj: WaitToken) -> str:
        """Pending, completed or expired, as a badge."""
        state = _state(obj)
        css = {"pending": "waiting", "completed": "succeeded", "expired": "cancelled"}[state]
        return format_html('<span class="cd-status cd-status-{}">{}</span>', css, state.title())

    @admin.display(description="run")
    def run_link(self, obj: WaitToken) -> str:
        """The run that waits (or waited) on the token."""
        url = reverse(f"{self.admin_site.name}:celery_durable_run_change", args=[obj.run_id])
        return format_html('<a href="{}">{}</a>', url, obj.run_id)

    @admin.display(description="created", ordering="created_at")
    def created_display(self, obj: WaitToken) -> str:
        """When the run created it."""
        return format_moment(from_epoch(obj.created_at))

    @admin.display(description="expires")
    def expires_display(self, obj: WaitToken) -> str:
        """When it expires (— never)."""
        return format_moment(from_epoch(obj.expires_at))

    @admin.display(description="completed")
    def completed_display(self, obj: WaitToken) -> str:
        """When it was completed (the first completion)."""
        return format_moment(from_epoch(obj.completed_at))

    @admin.display(description="payload")
    def payload_display(self, obj: WaitToken) -> str:
        """The first completion's payload (escaped)."""
        return pre(pretty_json(obj.payload))

    def get_urls(self) -> list[URLPattern]:
        """The admin's URLs plus the completion form."""
        opts = self.opts
        return [path("<path:object_id>/complete/", self.admin_site.admin_view(self.complete_view),
                     name=f"{opts.app_label}_{opts.model_name}_complete"), *super().get_urls()]

    def complete_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Complete one token with a JSON payload; the run resumes."""
        if not self.has_complete_permission(request):
            raise PermissionDenied
        token = self.get_object(request, object_id)
        if token is None:
            raise Http404(f"no wait token {object_id!r}")
        page = reverse(f"{self.admin_site.name}:celery_durable_waittoken_change",
                       args=[token.pk])
        form = PayloadForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                done = complete_wait_token(token.pk, form.cleaned_data["payload"],
                                           app=celery_app())
            except WaitTokenExpiredError:
                form.add_error(None, "The token expired before it was completed.")
            except (WaitTokenNotFoundError, DurableError) as exc:
                form.add_error(None, str(exc))
            else:
                if done.first:
                    self.log_change(request, token, "Completed with a payload.")
                    self.message_user(request, f"Token {token.pk} completed; "
                                      f"{done.resumed} run(s) resumed.", messages.SUCCESS)
                else:
                    self.message_user(request, f"Token {token.pk} was completed already; its "
                                      "first payload is kept.", messages.WARNING)
                return HttpResponseRedirect(page)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "run": token,
                   "form": form, "title": f"Complete wait token {token.pk}",
                   "original": token, "page_url": page, "media": self.media + form.media,
                   "has_view_permission": True}
        return TemplateResponse(request, "admin/celery_durable/waittoken/complete.html", context)
