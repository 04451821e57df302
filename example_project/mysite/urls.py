"""URLs: the admin, celery_durable's endpoints (wait tokens, signed events) under
``durable/``, and the approvals page and outbox of the ``workflows`` app at the root."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("durable/", include("celery_durable_django.urls")),
    path("", include("workflows.urls")),
]
