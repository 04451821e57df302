"""URLs: the admin, and the approvals page of the ``workflows`` app at the root."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("workflows.urls")),
]
