"""A process of one code version that starts an order or sends its event, as a web
process of that deploy would: ``python -m apps.versions_send start|packed TAG``.

The version and pinning come from ``VERSIONS_CODE`` / ``VERSIONS_PIN`` (see
``apps.versions_app``); ``start`` prints the new run's id.
"""

from __future__ import annotations

import sys

from apps.versions_app import app, order
from celery_durable import send_event


def main(action: str, tag: str) -> None:
    """Start an order for ``tag``, or send its ``packed`` event."""
    if action == "start":
        print(order.delay(tag).id)
    else:
        send_event("packed", key=tag, app=app)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
