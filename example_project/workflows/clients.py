"""Thin HTTP clients for the stand-in services, as a vendor SDK would provide them.

They know nothing about celery_durable: they raise ordinary exceptions, and
the steps in :mod:`workflows.tasks` decide which of them are worth a retry.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from django.conf import settings


class ServiceUnavailable(ConnectionError):
    """The service could not be reached or answered 5xx: try again later."""


class RateLimited(Exception):
    """429 Too Many Requests; ``retry_after`` is the server's Retry-After in seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"rate limited; retry after {retry_after:g}s")
        self.retry_after = retry_after


class CardDeclined(Exception):
    """The payment API refused the card (402): retrying will not help."""


class ClientError(Exception):
    """Any other 4xx answer."""


def call(method: str, path: str, *, body: dict[str, Any] | None = None,
         query: dict[str, Any] | None = None, idempotency_key: str | None = None,
         timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the stand-in services; return the decoded JSON answer."""
    url = f"{settings.STANDIN_URL}{path}" + (f"?{urlencode(query)}" if query else "")
    headers = {"Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        if exc.code == 429:
            raise RateLimited(float(exc.headers.get("Retry-After") or 1)) from None
        if exc.code == 402:
            raise CardDeclined(json.loads(detail).get("message", detail)) from None
        if exc.code >= 500:
            raise ServiceUnavailable(f"{method} {path}: {exc.code} {detail}") from None
        raise ClientError(f"{method} {path}: {exc.code} {detail}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        raise ServiceUnavailable(f"{method} {path}: {exc}") from None


def charge(*, amount: str, currency: str, source: str, description: str,
           idempotency_key: str) -> dict[str, Any]:
    """Charge a card (stand-in payment API); the key makes a repeated call harmless."""
    return call("POST", "/payments/charges", idempotency_key=idempotency_key, body={
        "amount": amount, "currency": currency, "source": source, "description": description})


def reserve(*, sku: str, quantity: int, idempotency_key: str) -> dict[str, Any]:
    """Reserve stock (stand-in inventory API)."""
    return call("POST", "/inventory/reservations", idempotency_key=idempotency_key,
                body={"sku": sku, "quantity": quantity})


def create_label(*, order_id: int, address: str, idempotency_key: str) -> dict[str, Any]:
    """Buy a shipping label (stand-in carrier API)."""
    return call("POST", "/shipping/labels", idempotency_key=idempotency_key,
                body={"order": order_id, "address": address})


def complete(payload: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    """Ask the stand-in "model" for its next move (or a draft)."""
    return call("POST", "/model/complete", body=payload, idempotency_key=idempotency_key)


def tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call one research tool (``search``, ``read``, ``calculate``)."""
    return call("GET", f"/tools/{name}", query=arguments)
