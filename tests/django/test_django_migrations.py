"""The Django app's migrations match its models, whatever the settings."""

from __future__ import annotations

from django_support import setup


def test_makemigrations_check_finds_no_changes():
    """``makemigrations --check --dry-run`` reports nothing to do for the app."""
    setup()
    from django.core.management import call_command

    call_command("makemigrations", "celery_durable", check=True, dry_run=True, verbosity=0)


def test_every_index_is_explicitly_named():
    """Every index of the app's tables has a name chosen in models.py (cd_...)."""
    setup()
    from celery_durable_django.models import Run, Step

    for model in (Run, Step):
        for index in model._meta.indexes:
            assert index.name.startswith("cd_"), index
        assert not any(f.db_index for f in model._meta.fields if not f.primary_key
                       and not f.unique), model
