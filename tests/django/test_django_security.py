"""Admin security: the permission matrix, CSRF, escaping of stored payloads, redaction."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("db")

RUNS = "/admin/celery_durable/run/"
DEAD = "/admin/celery_durable/deadletter/"
PERMS = ["retry_run", "restart_run", "retry_run_with_arguments", "cancel_run", "wake_run",
         "send_event"]
#: admin action -> the permission it needs, and the run status it acts on.
ACTIONS = {
    "retry_from_failed_step": ("retry_run", "FAILED"),
    "restart_from_scratch": ("restart_run", "FAILED"),
    "retry_with_edited_arguments": ("retry_run_with_arguments", "FAILED"),
    "cancel_runs": ("cancel_run", "RUNNING"),
    "wake_now": ("wake_run", "SLEEPING"),
    "send_awaited_event": ("send_event", "WAITING"),
}
#: per-run form -> the permission it needs and the status of the run it is for.
FORMS = {"retry-with-arguments": ("retry_run_with_arguments", "FAILED"),
         "send-event": ("send_event", "WAITING")}
ROLES = ["superuser", "viewer", *(f"staff+{p}" for p in PERMS), "staff-no-perms", "anonymous"]


def paused(status: str) -> dict[str, Any]:
    """Row fields of a run paused at a sleep (SLEEPING) or an event wait (WAITING)."""
    if status == "SLEEPING":
        return {"wait_kind": "sleep", "wait_step": "sleep#0", "wait_until": time.time() + 864000}
    if status == "WAITING":
        return {"wait_kind": "event", "wait_step": "wait#0", "wait_event": "approval",
                "wait_key": "k-1", "wait_until": time.time() + 864000}
    return {}


@pytest.fixture
def client_as(make_user, client_for) -> Callable[[str], Any]:
    """Factory: a test client for one role of the matrix."""
    from django.contrib.auth.models import User
    from django.test import Client

    def make(role: str) -> Client:
        if role == "anonymous":
            return Client()
        if role == "superuser":
            user = User.objects.create_superuser(f"root-{uuid.uuid4().hex[:6]}", "r@x.org", "pw")
        elif role == "viewer":
            user = make_user()
        elif role == "staff-no-perms":
            user = User.objects.create_user(f"bare-{uuid.uuid4().hex[:6]}", password="pw",
                                            is_staff=True)
        else:
            user = make_user(role.split("+", 1)[1])
        return client_for(user)

    return make


def allowed(role: str, perm: str | None) -> bool:
    """What the matrix expects: may ``role`` use something needing ``perm`` (None: viewing)?"""
    if role in ("anonymous", "staff-no-perms"):
        return False
    return role == "superuser" or perm is None or role == f"staff+{perm}"


def check(role: str, response: Any, ok: bool, what: str) -> None:
    """Anonymous goes to the login page; a refused staff user gets 403; allowed is 200/302."""
    if role == "anonymous":
        assert response.status_code == 302 and "/admin/login/" in response["Location"], what
    elif ok:
        assert response.status_code in (200, 302), (what, response.status_code)
        if response.status_code == 302:
            assert "/admin/login/" not in response["Location"], what
    else:
        assert response.status_code == 403, (what, response.status_code)


@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix_for_every_page_form_and_action(role, client_as, make_run) -> None:
    """Each role sees exactly the pages and may run exactly the actions its permissions allow."""
    client = client_as(role)
    failed = make_run("FAILED")
    for url in (RUNS, DEAD, f"{RUNS}{failed.pk}/change/", f"{DEAD}{failed.pk}/change/"):
        check(role, client.get(url), allowed(role, None), url)
    for form, (perm, status) in FORMS.items():
        run = make_run(status, **paused(status))
        url = f"{RUNS}{run.pk}/{form}/"
        check(role, client.get(url), allowed(role, perm), f"GET {url}")
    for action, (perm, status) in ACTIONS.items():
        run = make_run(status, **paused(status))
        before = run.status, run.token
        response = client.post(RUNS, {"action": action, "index": 0, "post": "yes",
                                      "_selected_action": [run.pk]})
        ok = allowed(role, perm)
        check(role, response, ok, action)
        run.refresh_from_db()
        if not ok:
            assert (run.status, run.token) == before, f"{role} changed the run with {action}"
        elif action in ("retry_from_failed_step", "restart_from_scratch"):
            assert run.status == "PENDING", (role, action, run.status)
        elif action == "cancel_runs":
            assert run.status == "CANCELLED", role
        elif action == "wake_now":  # woken: due at once, its sleep resolved as "woken"
            assert run.status == "PENDING" and '"woken"' in (run.wait_resolution or ""), role


def test_actions_and_forms_enforce_csrf(make_user, make_run) -> None:
    """With CSRF checks on, a POST without the token is refused (403) and changes nothing."""
    from django.test import Client

    user = make_user(*PERMS)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    failed, waiting = make_run("FAILED"), make_run("WAITING", **paused("WAITING"))
    posts = [(RUNS, {"action": "retry_from_failed_step", "index": 0, "post": "yes",
                     "_selected_action": [failed.pk]}),
             (DEAD, {"action": "restart_from_scratch", "index": 0, "post": "yes",
                     "_selected_action": [failed.pk]}),
             (RUNS, {"action": "cancel_runs", "index": 0, "post": "yes",
                     "_selected_action": [waiting.pk]}),
             (f"{RUNS}{failed.pk}/retry-with-arguments/",
              {"args": "[1]", "kwargs": "{}", "from_step": "failed"}),
             (f"{RUNS}{waiting.pk}/send-event/", {"name": "approval", "key": "k-1",
                                                  "payload": "{}"})]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    failed.refresh_from_db()
    waiting.refresh_from_db()
    assert failed.status == "FAILED" and waiting.status == "WAITING"
    # With the token from the page's cookie the same action goes through.
    client.get(RUNS)
    token = client.cookies["csrftoken"].value
    response = client.post(RUNS, {"action": "retry_from_failed_step", "index": 0, "post": "yes",
                                  "_selected_action": [failed.pk], "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    failed.refresh_from_db()
    assert failed.status == "PENDING"


XSS = ['<script>window.__pwned=1;alert(1)</script>',
       '<img src=x onerror="window.__pwned=1;alert(2)">',
       '"><svg onload=window.__pwned=1>', "';window.__pwned=1;//",
       '</pre></textarea><script>window.__pwned=1</script>',
       '{{ 7*7 }}{% csrf_token %}']


def hostile_run(make_run: Callable[..., Any], status: str = "FAILED", **extra: Any) -> Any:
    """A run whose every stored text field carries XSS payloads."""
    payload = json.dumps(XSS)
    fields = dict(args=json.dumps([XSS, {"k": XSS[1]}]), kwargs=json.dumps({"note": XSS[0]}),
                  result=payload, error_message=" ".join(XSS), error_traceback="\n".join(XSS),
                  error_type=XSS[2], task=XSS[0][:60], idempotency_key=XSS[1][:60],
                  failed_step=XSS[2][:60], current_step=XSS[4][:60])
    fields.update(extra)
    return make_run(status, steps=[
        {"name": "fetch", "value": payload},
        {"name": XSS[1][:60], "status": "failed", "error_type": XSS[3],
         "error_message": XSS[0], "error_traceback": XSS[1]}], **fields)


def payload_pages(run: Any, waiting: Any) -> list[str]:
    """Every admin page that renders stored payloads."""
    return [RUNS, f"{RUNS}?q=script", DEAD, f"{RUNS}{run.pk}/change/",
            f"{DEAD}{run.pk}/change/", f"{RUNS}{run.pk}/retry-with-arguments/",
            f"{RUNS}{waiting.pk}/change/", f"{RUNS}{waiting.pk}/send-event/"]


def test_stored_payloads_are_escaped_on_every_page(make_run, make_user, client_for) -> None:
    """No XSS payload from arguments, outputs, errors or tracebacks reaches a page unescaped."""
    run = hostile_run(make_run)
    waiting = hostile_run(make_run, "WAITING", wait_kind="event", wait_step="wait#0",
                          wait_event=XSS[0][:60], wait_key=XSS[1][:60])
    client = client_for(make_user(*PERMS))
    for url in payload_pages(run, waiting):
        response = client.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        for raw in ("<script>window.__pwned", "<img src=x onerror", "<svg onload",
                    "</textarea><script>"):
            assert raw not in page, (url, raw)
        assert "&lt;script&gt;window.__pwned" in page or "&lt;img src=x" in page, url


@pytest.fixture
def redacting() -> Iterator[None]:
    """``durable_redact = ["card_number", "api_key"]`` on the app the admin uses."""
    from celery_durable_django.admin.actions import celery_app

    app = celery_app()
    old = app.conf.get("durable_redact")
    app.conf.durable_redact = ["card_number", "api_key"]
    app.__dict__.pop("_durable_settings", None)
    yield
    app.conf.durable_redact = old
    app.__dict__.pop("_durable_settings", None)


def test_redacted_fields_are_masked_in_the_admin(redacting, make_run, make_user,
                                                 client_for) -> None:
    """card_number / api_key values never appear on the run page, dead letters or the form."""
    run = make_run("FAILED", args=json.dumps([{"card_number": "4111111111111111", "n": 1}]),
                   kwargs=json.dumps({"text": {"api_key": "sk_live_SECRET"}}),
                   error_message="declined card_number=4111111111111111",
                   error_traceback="Traceback\nValueError: api_key='sk_live_SECRET'",
                   steps=[{"name": "charge", "value": json.dumps(
                       {"Card-Number": "4111111111111111", "ok": True})}])
    client = client_for(make_user(*PERMS))
    for url in (f"{RUNS}{run.pk}/change/", DEAD, f"{RUNS}{run.pk}/retry-with-arguments/"):
        page = client.get(url).content.decode()
        assert "4111111111111111" not in page and "sk_live_SECRET" not in page, url
        assert "***" in page, url
    # Submitting the form with the masked value keeps the real one.
    # (order(tag, amount, text="ok"): the replay's arguments fit its signature)
    response = client.post(f"{RUNS}{run.pk}/retry-with-arguments/", {
        "args": json.dumps([{"card_number": "***", "n": 2}, 5]),
        "kwargs": json.dumps({"text": {"api_key": "***"}}), "from_step": "start"})
    assert response.status_code == 302
    from celery_durable_django.models import Run

    replay = Run.objects.get(replay_of=run.pk)
    assert json.loads(replay.args) == [{"card_number": "4111111111111111", "n": 2}, 5]
    assert json.loads(replay.kwargs) == {"text": {"api_key": "sk_live_SECRET"}}


def test_oversized_and_invalid_form_input_is_refused(make_run, make_user, client_for) -> None:
    """Megabytes of text, invalid JSON and bad payloads are form errors; the run is unchanged."""
    run = make_run("FAILED")
    waiting = make_run("WAITING", **paused("WAITING"))
    client = client_for(make_user(*PERMS))
    url = f"{RUNS}{run.pk}/retry-with-arguments/"
    huge = json.dumps(["x" * (1024 * 1024 + 10)])
    for args, expected in ((huge, "at most"), ("[1, 2", "valid JSON"),
                           ('["\x00"]', "Null characters"),
                           ('[{"__cd__": ["nope", 1]}]', "cannot be decoded"),
                           ("null", "JSON list")):
        response = client.post(url, {"args": args, "kwargs": "{}", "from_step": "failed"})
        assert response.status_code == 200 and expected in response.content.decode(), args[:40]
    run.refresh_from_db()
    assert run.status == "FAILED" and run.args == '["tag", 0]'
    event = f"{RUNS}{waiting.pk}/send-event/"
    for payload in ("{bad", "x" * (1024 * 1024 + 1)):
        response = client.post(event, {"name": "approval", "key": "k-1", "payload": payload})
        assert response.status_code == 200, payload[:20]
    response = client.post(event, {"name": "n" * 300, "key": "k-1", "payload": "{}"})
    assert response.status_code == 200 and "at most 255" in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == "WAITING"
