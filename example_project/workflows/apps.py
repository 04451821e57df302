"""The ``workflows`` app: the example durable tasks and their data."""

from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    """Orders, documents, and the durable tasks that process them."""

    name = "workflows"
    verbose_name = "Example workflows"
    default_auto_field = "django.db.models.BigAutoField"
