"""The webhook endpoints: ``path("durable/", include("celery_durable_django.urls"))``.

See docs/webhooks.md and :mod:`celery_durable_django.webhooks.views`.
"""

from __future__ import annotations

from django.urls import path

from .webhooks.views import event_view, runs_view, token_view

app_name = "celery_durable_webhooks"

urlpatterns = [
    path("events/<str:name>/<path:key>", event_view, name="events"),
    path("events/<str:name>", event_view, name="keyed_events"),
    path("runs/<str:name>", runs_view, name="runs"),
    path("tokens/<str:token_id>", token_view, name="tokens"),
]
