"""Who may call the webhook endpoints: signed requests, checked by a verifier per endpoint.

Secrets come from the Django setting ``DURABLE_WEBHOOK_SECRETS``, keyed by
endpoint: an event name (``POST /durable/events/<name>/<key>``), a task name
(``POST /durable/runs/<task>``, which must also be in ``DURABLE_WEBHOOK_TASKS``)
or ``"@status"`` (``GET /durable/runs/<id>``). A value is a secret, a list of
secrets (any of them verifies: rotate by adding the new one first), or
``{"verifier": "stripe" | "github" | "hmac" | "dotted.path", "secrets": ...}``.
An endpoint with no secret configured answers 404: nothing is reachable by
default.

Verifiers (each compares in constant time, ``hmac.compare_digest``):

* ``hmac`` (ours): header ``X-Durable-Signature: t=<unix time>,v1=<hex>`` where
  ``hex = HMAC-SHA256(secret, "<t>.<body>")``; for a ``GET`` the body is the
  request's path. ``t`` must be within ``DURABLE_WEBHOOK_TOLERANCE`` seconds
  (default 300) of the store's clock.
* ``stripe``: Stripe's ``Stripe-Signature`` header, the same scheme with the
  endpoint's ``whsec_…`` secret (several ``v1`` entries allowed).
* ``github``: GitHub's ``X-Hub-Signature-256: sha256=<hex>`` over the body;
  GitHub sends no timestamp, so replays are refused by its ``X-GitHub-Delivery`` id.

Every verifier returns the request's *replay id* (the signature, or GitHub's
delivery id); the views refuse a replay id seen within twice the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.module_loading import import_string

#: Seconds a signature's timestamp may differ from the store's clock.
DEFAULT_TOLERANCE = 300.0


class SignatureError(Exception):
    """The request is not signed as its endpoint requires (401, or 403 for a replay)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.status = status


#: A verifier: (request, body, secrets, store clock, tolerance) -> the request's replay id.
Verifier = Callable[[HttpRequest, bytes, Sequence[str], float, float], str]


def _digest(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _matches(candidates: Sequence[str], secrets: Sequence[str], message: bytes) -> str | None:
    """The first candidate signature that one of ``secrets`` made (constant-time compares)."""
    for secret in secrets:
        expected = _digest(secret, message)
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate.strip().lower()):
                return candidate.strip().lower()
    return None


def _timed_scheme(header: str, request: HttpRequest, body: bytes, secrets: Sequence[str],
                  now: float, tolerance: float) -> str:
    """``t=<time>,v1=<hex>[,v1=<hex>]`` over ``"<t>.<body>"`` (ours and Stripe's)."""
    value = request.headers.get(header)
    if not value:
        raise SignatureError(f"missing {header} header")
    parts = [p.partition("=") for p in value.split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    signatures = [v for k, _, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not signatures:
        raise SignatureError(f"{header} must be t=<unix time>,v1=<hex signature>")
    try:
        stamp = int(stamps[0])
    except ValueError:
        raise SignatureError(f"{header}: t is not a unix time") from None
    if abs(now - stamp) > tolerance:
        raise SignatureError(f"{header}: the timestamp is more than {tolerance:g} s from now "
                             "(expired, or the sender's clock is wrong)")
    signed = body if request.method != "GET" else request.path.encode()
    found = _matches(signatures, secrets, f"{stamp}.".encode() + signed)
    if found is None:
        raise SignatureError(f"{header}: the signature does not match")
    return found


def hmac_verifier(request: HttpRequest, body: bytes, secrets: Sequence[str], now: float,
                  tolerance: float) -> str:
    """Our scheme: ``X-Durable-Signature: t=<time>,v1=HMAC-SHA256(secret, "<t>.<body>")``."""
    return _timed_scheme("X-Durable-Signature", request, body, secrets, now, tolerance)


def stripe_verifier(request: HttpRequest, body: bytes, secrets: Sequence[str], now: float,
                    tolerance: float) -> str:
    """Stripe's ``Stripe-Signature`` (the endpoint's signing secret, ``whsec_…``)."""
    return _timed_scheme("Stripe-Signature", request, body, secrets, now, tolerance)


def github_verifier(request: HttpRequest, body: bytes, secrets: Sequence[str], now: float,
                    tolerance: float) -> str:
    """GitHub's ``X-Hub-Signature-256: sha256=<hex>``; replays are known by the delivery id."""
    value = request.headers.get("X-Hub-Signature-256", "")
    scheme, _, signature = value.partition("=")
    if scheme != "sha256" or not signature:
        raise SignatureError("missing or malformed X-Hub-Signature-256 header")
    if _matches([signature], secrets, body) is None:
        raise SignatureError("X-Hub-Signature-256: the signature does not match")
    delivery = request.headers.get("X-GitHub-Delivery", "")
    if not delivery:
        raise SignatureError("missing X-GitHub-Delivery header")
    return f"github:{delivery}"


VERIFIERS: dict[str, Verifier] = {"hmac": hmac_verifier, "stripe": stripe_verifier,
                                  "github": github_verifier}


@dataclass(frozen=True)
class Endpoint:
    """How one endpoint's requests are verified (and, for an event posted without a key in
    its URL, where in the JSON body the key is: ``"key": "data.object.id"``)."""

    verifier: Verifier
    secrets: tuple[str, ...]
    key_path: str | None = None


def endpoint(name: str) -> Endpoint | None:
    """The verification of endpoint ``name`` from ``DURABLE_WEBHOOK_SECRETS``; None when no
    secret is configured for it (the endpoint does not exist)."""
    config: Mapping[str, Any] = getattr(settings, "DURABLE_WEBHOOK_SECRETS", None) or {}
    spec = config.get(name)
    if not spec:
        return None
    verifier: Any = "hmac"
    key_path = None
    if isinstance(spec, Mapping):
        verifier, key_path = spec.get("verifier", "hmac"), spec.get("key")
        spec = spec.get("secrets")
    secrets = (spec,) if isinstance(spec, str) else tuple(str(s) for s in spec or ())
    if not any(secrets):
        return None
    chosen = VERIFIERS.get(verifier) if isinstance(verifier, str) else verifier
    if chosen is None:
        chosen = import_string(verifier)
    return Endpoint(verifier=chosen, secrets=tuple(s for s in secrets if s),
                    key_path=str(key_path) if key_path else None)


def tolerance() -> float:
    """``DURABLE_WEBHOOK_TOLERANCE`` (seconds), default 300."""
    return float(getattr(settings, "DURABLE_WEBHOOK_TOLERANCE", DEFAULT_TOLERANCE))


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Durable-Signature`` value a sender puts on ``body`` (tests, Python senders)."""
    return f"t={timestamp},v1={_digest(secret, f'{timestamp}.'.encode() + body)}"


__all__ = ["Endpoint", "SignatureError", "endpoint", "github_verifier", "hmac_verifier", "sign",
           "stripe_verifier", "tolerance"]
