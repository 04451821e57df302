"""Admin of the example's orders and documents, with Approve / Reject actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Document, Order
from .tasks import decide


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Orders; ``process_order`` fills in the charge and the tracking number."""

    list_display = ("id", "customer", "sku", "quantity", "amount", "payment_source", "status",
                    "charge_id", "tracking", "created_at")
    list_filter = ("status",)


def _decide(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Document],
            approved: bool) -> None:
    waiting = list(queryset.filter(status=Document.Status.AWAITING))
    for doc in waiting:
        decide(doc.pk, approved=approved, by=request.user.get_username())
    modeladmin.message_user(request, f"{len(waiting)} document(s) "
                            f"{'approved' if approved else 'rejected'}.", messages.SUCCESS)


@admin.action(description="Approve selected documents")
def approve(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Document]) -> None:
    """Complete each selected document's wait token (approved): its run resumes."""
    _decide(modeladmin, request, queryset, True)


@admin.action(description="Reject selected documents")
def reject(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Document]) -> None:
    """Complete each selected document's wait token (rejected): its run resumes."""
    _decide(modeladmin, request, queryset, False)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Documents and their approval status."""

    list_display = ("id", "title", "status", "decided_by", "run_id", "created_at")
    list_filter = ("status",)
    actions = [approve, reject]
