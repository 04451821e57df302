"""Signed HTTP endpoints for the outside world: events, triggers and run status
(:mod:`.views`), checked by :mod:`.signatures`; routed by ``celery_durable_django.urls``."""
