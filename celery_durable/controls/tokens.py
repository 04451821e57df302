"""Wait tokens: a URL a run hands to the outside world, and waits on until it is called.

Inside a run::

    token = create_wait_token(timeout=timedelta(days=7))   # a checkpointed step
    send_approval_email(to=manager, approve_url=token.url)  # (in a step of yours)
    decision = wait_for_token(token)                       # WAITING, no worker held

and anywhere else (a view, a shell, ``POST <token.url>`` through the Django app)::

    complete_wait_token(token_id, {"approved": True})

The store keeps the token and decides its completion once, by its own clock
(:mod:`celery_durable.stores.tokens`); the payload reaches the run as the event
``durable.token`` keyed by the token id, so a token completed before its run
waits is received as an early event is (within ``durable_event_buffer``). A second
completion keeps the first payload, answers when that was, and sends the first
payload again (so a completion whose delivery failed is repaired by any retry).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

from ..config import app_or_current, settings_for
from ..engine.awaiting import as_awaited
from ..engine.context import active_run, body_context
from ..engine.steps import step
from ..errors import (
    WaitTokenExpiredError,
    WaitTokenNotFoundError,
    WaitTokenTimeoutError,
)
from ..serialization import encode, get_serializer
from ..stores import get_store
from ..stores.base import wait_tokens_of
from ..stores.tokens import TOKEN_EVENT
from ..tags import check_tags
from .waits import Duration, _seconds, await_event, post_event

#: The step that creates a token (its checkpoint holds the token).
CREATE_STEP = "create_wait_token"


@dataclass(frozen=True)
class WaitToken:
    """A token a run waits on: its ``id``, the ``url`` that completes it, its expiry (the
    store's clock, epoch seconds; None: never)."""

    id: str
    url: str
    expires_at: float | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class TokenCompletion:
    """What :func:`complete_wait_token` did."""

    token_id: str
    run_id: str
    #: True when this call completed the token; False when an earlier one had (its
    #: payload is kept, and sent to the run again).
    first: bool
    #: When the token was completed (the store's clock; the first completion's).
    completed_at: float
    #: How many runs the delivery resumed now.
    resumed: int


def token_url(app: Celery, token_id: str) -> str:
    """The URL that completes ``token_id``: under ``durable_public_url`` (where the project
    includes ``celery_durable_django.urls``), else ``/durable/tokens/<id>``."""
    base = settings_for(app).public_url
    return f"{str(base).rstrip('/') if base else '/durable'}/tokens/{token_id}"


def _create(timeout: float | None, tags: list[str]) -> dict[str, Any]:
    ctx = active_run()
    assert ctx is not None  # a step of a run
    token_id = uuid.uuid4().hex
    record = wait_tokens_of(ctx.store).create_wait_token(token_id, ctx.run_id, timeout=timeout,
                                                         tags=tags)
    return {"id": token_id, "expires_at": record.expires_at, "run_id": ctx.run_id}


def create_wait_token(timeout: Duration | None = None, *,
                      tags: Iterable[str] = ()) -> WaitToken:
    """Create a wait token of the current run (a checkpointed step: a replay returns the
    same token). It expires ``timeout`` (a timedelta or seconds) from now by the store's
    clock; None never. Hand ``token.url`` (or ``token.id``) to whoever completes it."""
    ctx = body_context("create_wait_token")
    if ctx is None:
        raise RuntimeError("create_wait_token() only works inside a durable run")
    seconds = _seconds(timeout, "timeout")
    made = step.run(CREATE_STEP, _create, seconds, check_tags(list(tags)))
    return WaitToken(id=made["id"], url=token_url(ctx.task.app, made["id"]),
                     expires_at=made["expires_at"], run_id=made["run_id"])


def _as_token(token: WaitToken | Mapping[str, Any]) -> WaitToken:
    if isinstance(token, WaitToken):
        return token
    if isinstance(token, Mapping) and isinstance(token.get("id"), str):
        return WaitToken(id=token["id"], url=str(token.get("url", "")),
                         expires_at=token.get("expires_at"))
    raise TypeError(f"wait_for_token() needs the WaitToken create_wait_token() returned, "
                    f"not {type(token).__name__}")


def wait_for_token(token: WaitToken | Mapping[str, Any], *, timeout_error: bool = False) -> Any:
    """Suspend the run (``WAITING``, no worker held) until ``token`` is completed; return
    the payload. When the token expires first: None, or with ``timeout_error=True``
    :class:`~celery_durable.errors.WaitTokenTimeoutError`. In eager mode only a token
    completed already is received."""
    ctx = body_context("wait_for_token")
    if ctx is None:
        raise RuntimeError("wait_for_token() only works inside a durable run")
    chosen = _as_token(token)
    until = None if chosen.expires_at is None else ("at", float(chosen.expires_at))
    outcome, payload = await_event(ctx, TOKEN_EVENT, chosen.id, until=until)
    if outcome == "timeout" and timeout_error:
        raise WaitTokenTimeoutError(f"wait token {chosen.id} expired before it was completed",
                                    run_id=ctx.run_id)
    return as_awaited(payload)


def complete_wait_token(token_id: str, payload: Any = None, *,
                        app: Celery | None = None) -> TokenCompletion:
    """Complete wait token ``token_id`` with ``payload`` and resume its run.

    Raises :class:`~celery_durable.errors.WaitTokenNotFoundError` for an unknown
    token and :class:`~celery_durable.errors.WaitTokenExpiredError` for an expired
    one. A token completed before keeps its first payload (``first`` is False).
    """
    app = app_or_current(app)
    settings = settings_for(app)
    text = encode(get_serializer(settings.serializer), payload,
                  max_bytes=settings.max_checkpoint_bytes,
                  what=f"payload of wait token {token_id!r}")
    outcome, record = wait_tokens_of(get_store(app)).complete_wait_token(token_id, text)
    if outcome == "unknown" or record is None:
        raise WaitTokenNotFoundError(f"no wait token {token_id!r}")
    if outcome == "expired":
        error = WaitTokenExpiredError(f"wait token {token_id!r} expired before it was "
                                      "completed", run_id=record.run_id)
        error.expired_at = record.expires_at
        raise error
    assert record.completed_at is not None and record.payload is not None
    resumed = post_event(app, TOKEN_EVENT, token_id, record.payload)
    return TokenCompletion(token_id=token_id, run_id=record.run_id,
                           first=outcome == "completed", completed_at=record.completed_at,
                           resumed=resumed)


__all__ = ["TokenCompletion", "WaitToken", "complete_wait_token", "create_wait_token",
           "token_url", "wait_for_token"]
