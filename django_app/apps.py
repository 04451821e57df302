"""The AppConfig of the celery_durable Django app."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


def _close_old_connections(sender: Any = None, **kwargs: Any) -> None:
    """Drop unusable or expired DB connections around a task, as Django does around requests.

    Eager tasks run inside the caller's request or transaction: their
    connections are the caller's to manage, so they are left alone.
    """
    request = getattr(sender, "request", None)
    if getattr(request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


class DurableConfig(AppConfig):
    """``celery_durable_django``: durable runs and their checkpoints in the Django database."""

    name = "celery_durable_django"
    label = "celery_durable"
    verbose_name = "Durable runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Manage worker DB connections around every task (``close_old_connections``); run
        eager transactional steps on a store without transactions in ``transaction.atomic``."""
        from celery import signals

        signals.task_prerun.connect(_close_old_connections, weak=False,
                                    dispatch_uid="celery_durable_prerun")
        signals.task_postrun.connect(_close_old_connections, weak=False,
                                     dispatch_uid="celery_durable_postrun")
        from django.db import transaction

        from celery_durable.stores.atomic import set_eager_transaction

        set_eager_transaction(transaction.atomic)  # eager transactional steps, memory store
