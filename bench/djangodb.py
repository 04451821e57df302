"""Prepare a Django database for the DjangoStore contenders (run in its own process).

``python -m bench.djangodb`` with ``BENCH_DB`` / ``BENCH_PG_URL`` /
``BENCH_SQLITE_PATH`` set migrates that database (``run_syncdb`` too, so the
tables exist even for an app whose migrations are not written yet).
"""

from __future__ import annotations

import os


def migrate() -> None:
    """Create the tables of every installed app in the configured database."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_settings")
    import django
    from django.core.management import call_command

    django.setup()
    from celery_durable_django.store import DjangoStore  # noqa: F401 - fails early if missing

    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)


if __name__ == "__main__":
    migrate()
