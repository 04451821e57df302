"""The outside world in: signed HTTP endpoints that deliver events, start runs and report a
run's status (include ``celery_durable_django.urls`` under ``durable/``).

* ``POST events/<name>/<key>``: ``send_event(name, key, <JSON body>)``; 200 with how
  many runs it resumed.
* ``POST runs/<task name>``: ``{"args": [...], "kwargs": {...}}`` starts a run of a task
  on ``DURABLE_WEBHOOK_TASKS``; ``Idempotency-Key`` maps to ``idempotency_key``; 202
  with the run's id and status URL.
* ``GET runs/<run id>``: the run as JSON (:mod:`.status`), for a signed request or a
  logged-in user with ``celery_durable.view_run``.
* ``POST tokens/<token id>``: completes a wait token with the JSON body (the token's
  unguessable id is the credential); 409 with the first completion's time when it was
  completed already, 410 when it expired; ``GET`` reports its state.

Each signed request is checked by :mod:`.signatures` before its body is parsed, and a
signature is accepted once. A request answered 2xx was delivered; one refused changed
nothing (but a refused replay, which consumed nothing new).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.utils import uuid
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, QueryDict
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt

from celery_durable import (
    DurableError,
    RunNotFoundError,
    WaitTokenExpiredError,
    WaitTokenNotFoundError,
    complete_wait_token,
    get_run,
    send_event,
)
from celery_durable.arguments import misfit
from celery_durable.stores import get_store
from celery_durable.stores.base import IdempotencyKeys, idempotency_keys_of, wait_tokens_of

from ..admin.actions import celery_app
from .signatures import SignatureError, endpoint, tolerance
from .status import run_json, store_now

logger = logging.getLogger(__name__)

#: Largest request body read, in bytes (``DURABLE_WEBHOOK_MAX_BYTES``).
DEFAULT_MAX_BYTES = 1024 * 1024
#: How long a GitHub delivery id is remembered (GitHub signs no timestamp).
_DELIVERY_MEMORY = 7 * 24 * 3600.0


class Refused(Exception):
    """An answer other than success: its status and a reason the caller may read."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _answer(code: int, **fields: Any) -> JsonResponse:
    return JsonResponse(fields, status=code)


def _refusals(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Turn :class:`Refused`, a bad signature and a store outage into JSON answers."""
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except Refused as exc:
            return _answer(exc.status, error=str(exc))
        except SignatureError as exc:
            return _answer(exc.status, error=f"not authenticated: {exc}")
        except DurableError as exc:
            return _answer(503, error=f"not delivered: {type(exc).__name__}")
        except Exception:  # the store or the broker: nothing was answered 2xx
            logger.exception("celery_durable webhook %s failed", request.path)
            return _answer(503, error="not delivered: the store or the broker failed")
    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _body(request: HttpRequest) -> bytes:
    """The request body, refused with 413 past the size limit before it is read whole."""
    limit = int(getattr(settings, "DURABLE_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BYTES))
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Refused(400, "Content-Length is not a number") from None
    if declared > limit:
        raise Refused(413, f"the body is over {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise Refused(413, f"the body is over {limit} bytes")
    return body


def _verified(request: HttpRequest, name: str, body: bytes, app: Celery) -> str:
    """Check the request's signature for endpoint ``name`` (404 when it has no secret); the
    replay id to consume once the request is valid."""
    configured = endpoint(name)
    if configured is None:
        raise Refused(404, "no such endpoint")
    return configured.verifier(request, body, configured.secrets, store_now(app), tolerance())


def _key_in(payload: Any, name: str) -> str:
    """The event key an endpoint's ``"key"`` path names in the body (``data.object.id``)."""
    configured = endpoint(name)
    path = configured.key_path if configured is not None else None
    if path is None:
        raise Refused(404, "no such endpoint")  # (this event takes its key in the URL)
    value = payload
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or isinstance(value, (dict, list)):
        raise Refused(400, f"the body has no {path} to use as the event's key")
    return str(value)


def _consume(app: Celery, replay_id: str) -> None:
    """Accept a signature once: a second request with it is a replay (403)."""
    store = get_store(app)
    if not store.supports(IdempotencyKeys):
        return  # (every shipped store has them)
    ttl = _DELIVERY_MEMORY if replay_id.startswith("github:") else 2 * tolerance()
    mine = uuid()
    if idempotency_keys_of(store).claim_idempotency_key(
            "celery_durable.webhook", replay_id, mine, ttl=ttl) != mine:
        raise SignatureError("this signature was used already (a replayed request)", 403)


def _json(body: bytes, what: str) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"the {what} is not JSON: {exc}") from None


@csrf_exempt  # a signed endpoint: the signature, not a cookie, authenticates it
@_refusals
def event_view(request: HttpRequest, name: str, key: str | None = None) -> HttpResponse:
    """``POST events/<name>/<key>`` (or ``events/<name>`` with the key in the body, where
    the endpoint names it): deliver the event; how many runs it resumed."""
    if request.method != "POST":
        return _answer(405, error="POST only")
    app = celery_app()
    body = _body(request)
    replay_id = _verified(request, name, body, app)
    payload = _json(body, "event payload")
    if key is None:
        key = _key_in(payload, name)
    _consume(app, replay_id)
    resumed = send_event(name, key, payload, app=app)
    return _answer(200, event=name, key=key, resumed=resumed)


@csrf_exempt  # POST is signed; GET is signed or a logged-in user's
@_refusals
def runs_view(request: HttpRequest, name: str) -> HttpResponse:
    """``POST runs/<task name>`` starts a run; ``GET runs/<run id>`` reports one."""
    if request.method == "POST":
        return _trigger(request, name)
    if request.method == "GET":
        return _status(request, name)
    return _answer(405, error="GET (a run's status) or POST (start a run) only")


@csrf_exempt  # the token id is the credential (an unguessable id handed to the completer)
@_refusals
def token_view(request: HttpRequest, token_id: str) -> HttpResponse:
    """``POST tokens/<id>`` completes the token with the JSON body; ``GET`` reports it."""
    app = celery_app()
    if request.method == "GET":
        record = wait_tokens_of(get_store(app)).get_wait_token(token_id)
        if record is None:
            raise Refused(404, "no such wait token")
        return _answer(200, token=record.id, status=record.status, run=record.run_id,
                       expires_at=record.expires_at, completed_at=record.completed_at)
    if request.method != "POST":
        return _answer(405, error="GET (the token's state) or POST (complete it) only")
    body = _body(request)
    form = (QueryDict(body.decode("utf-8", errors="replace"))
            if request.content_type == "application/x-www-form-urlencoded" else None)
    # An HTML form: its fields are the payload (``next`` is where to go after, not in it).
    payload = ({name: form[name] for name in form if name != "next"} if form is not None
               else _json(body, "payload"))
    try:
        done = complete_wait_token(token_id, payload, app=app)
    except WaitTokenNotFoundError:
        raise Refused(404, "no such wait token") from None
    except WaitTokenExpiredError as exc:
        return _answer(410, error="the wait token expired before it was completed",
                       expired_at=exc.expired_at)
    if form is not None and (target := _local(form.get("next", ""))) is not None:
        return HttpResponseRedirect(f"{target}{'&' if '?' in target else '?'}token="
                                    f"{'completed' if done.first else 'already-completed'}",
                                    status=303)
    if not done.first:
        return _answer(409, error="the wait token was completed already; its first payload "
                       "is kept", completed_at=done.completed_at)
    return _answer(200, token=token_id, status="completed", completed_at=done.completed_at,
                   resumed=done.resumed)


def _local(target: str) -> str | None:
    """A form's ``next`` page, if it is a path on this site (a person's form goes back)."""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts=None) and \
            target.startswith("/") and not target.startswith("//"):
        return target
    return None


def _allowed_task(app: Celery, name: str) -> Any:
    allowed = getattr(settings, "DURABLE_WEBHOOK_TASKS", None) or ()
    task = app.tasks.get(name) if name in allowed else None
    if task is None or endpoint(name) is None:
        raise Refused(404, "no such endpoint")  # (never says which tasks exist)
    return task


def _trigger(request: HttpRequest, name: str) -> HttpResponse:
    app = celery_app(name)
    body = _body(request)
    task = _allowed_task(app, name)
    replay_id = _verified(request, name, body, app)
    data = _json(body, "body")
    data = {} if data is None else data
    if not isinstance(data, dict) or set(data) - {"args", "kwargs"}:
        raise Refused(400, 'the body must be a JSON object {"args": [...], "kwargs": {...}}')
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise Refused(400, '"args" must be a JSON array and "kwargs" a JSON object')
    why = misfit(task, args, kwargs)
    if why is not None:
        raise Refused(400, why)
    key = request.headers.get("Idempotency-Key") or None
    _consume(app, replay_id)
    result = task.apply_async(args, kwargs, idempotency_key=key) if key else task.apply_async(
        args, kwargs)
    url = request.build_absolute_uri(reverse("celery_durable_webhooks:runs", args=[result.id]))
    return _answer(202, id=result.id, status_url=url)


def _status(request: HttpRequest, run_id: str) -> HttpResponse:
    app = celery_app()
    user = getattr(request, "user", None)
    if not (user is not None and user.is_authenticated
            and user.has_perm("celery_durable.view_run")):
        _verified(request, "@status", b"", app)  # (a GET's signature covers its path)
    try:
        info = get_run(run_id, app=app)
    except RunNotFoundError:
        raise Refused(404, "no such run") from None
    return JsonResponse(run_json(app, info))


__all__ = ["event_view", "runs_view", "token_view"]
