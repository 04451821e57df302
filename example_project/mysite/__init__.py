"""The example project's Django package; loading it loads the Celery app too."""

from .celery import app as celery_app

__all__ = ["celery_app"]
