"""``python manage.py standins``: serve the stand-in external services (see workflows.standins)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from workflows.standins import Services, make_server


class Command(BaseCommand):
    """Serve the payment API, inventory, shipping, model and tools stand-ins until stopped."""

    help = "Serve the stand-in payment API, model and tools on 127.0.0.1 (STANDIN_URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--port``, ``--fail-rate``, ``--max-failures``, ``--search-per-second``."""
        parser.add_argument("--port", type=int, default=urlparse(settings.STANDIN_URL).port,
                            help="port on 127.0.0.1 (default: the port of STANDIN_URL)")
        parser.add_argument("--fail-rate", type=float, default=0.3,
                            help="probability that a request fails with 503 (default 0.3)")
        parser.add_argument("--max-failures", type=int, default=2,
                            help="most failures in a row for one idempotency key (default 2)")
        parser.add_argument("--search-per-second", type=float, default=2.0,
                            help="rate limit of the search tool (default 2 per second)")

    def handle(self, *args: Any, **options: Any) -> None:
        """Serve until interrupted."""
        secret = settings.DURABLE_WEBHOOK_SECRETS.get("payment.succeeded")
        services = Services(options["fail_rate"], options["max_failures"],
                            options["search_per_second"],
                            callback=(settings.DEMO_BASE_URL, secret) if secret else None)
        server = make_server("127.0.0.1", options["port"], services)
        self.stdout.write(f"stand-in services on http://127.0.0.1:{server.server_port} "
                          f"(fail rate {options['fail_rate']:g})", ending="\n")
        self.stdout.flush()
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
