"""``python manage.py submit_examples``: submit a batch of example runs (see workflows.batch)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from workflows.batch import submit


class Command(BaseCommand):
    """Create orders and documents and start their durable runs (a worker must be running)."""

    help = "Submit example runs: orders, research questions and documents to approve."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--runs N``."""
        parser.add_argument("--runs", type=int, default=12, help="how many runs (default 12)")

    def handle(self, *args: Any, **options: Any) -> None:
        """Submit and list the runs."""
        for run in submit(options["runs"], follow_up_after=settings.FOLLOW_UP_DELAY):
            self.stdout.write(f"{run.kind:<9} {run.run_id}  {run.label}")
