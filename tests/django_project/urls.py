"""URLs of the test project: the admin and celery_durable's webhook endpoints."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls),
               path("durable/", include("celery_durable_django.urls"))]
