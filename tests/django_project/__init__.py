"""A Django + Celery project for the tests of the Django app (settings from the environment)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
