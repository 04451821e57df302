"""URLs of the example workflows: the approvals page and the outbox."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.approvals, name="approvals"),
    path("approvals/", views.approvals),
    path("approvals/<int:doc_id>/decide/", views.decide_document, name="decide_document"),
    path("outbox/", views.outbox, name="outbox"),
]
