"""The approvals page (documents waiting for a decision, with Approve and Reject buttons) and
the outbox (the e-mails the runs sent, with the approval e-mail's buttons)."""

from __future__ import annotations

import os
import re

from django.conf import settings
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
    """Approve or reject one document: completing its wait token resumes its run."""
    doc = get_object_or_404(Document, pk=doc_id)
    approved = request.POST.get("decision") == "approve"
    resumed = decide(doc.pk, approved=approved, by=request.user.get_username(),
                     reason=request.POST.get("reason", ""))
    verb = "approved" if approved else "rejected"
    if resumed:
        messages.success(request, f"“{doc.title}” {verb}: its run resumes.")
    else:
        messages.info(request, f"“{doc.title}”: its run was decided already, or has no wait "
                      "token yet; nothing changed.")
    return HttpResponseRedirect(reverse("approvals"))


#: A wait token's URL in an e-mail (``create_wait_token().url``).
TOKEN_URL = re.compile(r"https?://\S+/durable/tokens/[0-9a-f]+")


@staff_member_required
def outbox(request: HttpRequest) -> HttpResponse:
    """The e-mails the runs sent (the file backend's outbox), newest first. An e-mail with a
    wait token's link gets Approve and Reject buttons that post to that link."""
    mails = []
    for path in sorted(settings.EMAIL_FILE_PATH.glob("*.log"), reverse=True)[:50]:
        text = path.read_text(errors="replace")
        found = TOKEN_URL.search(text)
        mails.append({"name": path.name, "text": text,
                      "token_url": found.group(0) if found else None})
    return render(request, "workflows/outbox.html", {
        **admin.site.each_context(request), "title": "Outbox", "mails": mails,
        "done": request.GET.get("token", "")})
