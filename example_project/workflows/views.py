"""The approvals page: documents waiting for a decision, with Approve and Reject buttons."""

from __future__ import annotations

import os

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from .models import Document
from .tasks import decide


@staff_member_required
def approvals(request: HttpRequest) -> HttpResponse:
    """List the documents, newest first; those awaiting approval get buttons."""
    documents = Document.objects.order_by("-created_at")[:50]
    return render(request, "workflows/approvals.html", {
        **admin.site.each_context(request), "title": "Documents awaiting approval",
        "documents": documents, "flower_url": os.environ.get("FLOWER_URL", "")})


@staff_member_required
@require_POST
def decide_document(request: HttpRequest, doc_id: int) -> HttpResponse:
    """Approve or reject one document: ``send_event`` resumes its waiting run."""
    doc = get_object_or_404(Document, pk=doc_id)
    approved = request.POST.get("decision") == "approve"
    resumed = decide(doc.pk, approved=approved, by=request.user.get_username(),
                     reason=request.POST.get("reason", ""))
    verb = "approved" if approved else "rejected"
    if resumed:
        messages.success(request, f"“{doc.title}” {verb}: its run resumes.")
    else:
        messages.info(request, f"“{doc.title}” {verb}: its run is not waiting yet and will "
                      "get the decision when it gets there.")
    return HttpResponseRedirect(reverse("approvals"))
