"""The webhook endpoints (docs/webhooks.md) over real HTTP: a live Django server, an HTTP
client (httpx), a real worker, the Django store on PostgreSQL and the Redis broker.

Every refusal is checked to change nothing: the waiting run stays WAITING, no run starts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from harness import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("db")]


def signed(secret: str, body: bytes, header: str = "X-Durable-Signature",
           at: int | None = None) -> dict[str, str]:
    """The signature header a sender computes (``t=<time>,v1=<HMAC-SHA256 of "t.body">``)."""
    stamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {header: f"t={stamp},v1={digest}", "Content-Type": "application/json"}


def status(run_id: str) -> str | None:
    from celery_durable_django.models import Run

    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()


def waiting_approval(tag: str) -> tuple[str, int]:
    """A run of the test project's ``approval`` waiting for its event; (run id, doc id)."""
    from django_project.tasks import approval

    doc_id = uuid.uuid4().int % 10**9
    run_id = approval.delay(tag, doc_id).id
    wait_for(lambda: status(run_id) == "WAITING", 30, 0.1, "the run to wait")
    return run_id, doc_id


def test_a_stripe_signed_event_resumes_a_waiting_run_once_and_a_replay_is_refused(
        django_worker, live_server, tag):
    run_id, doc_id = waiting_approval(tag)
    body = json.dumps({"approved": True, "by": "stripe"}).encode()
    headers = signed("whsec_test_approval", body, header="Stripe-Signature")
    url = f"{live_server}/durable/events/approval/{doc_id}"
    answer = httpx.post(url, content=body, headers=headers)
    assert answer.status_code == 200 and answer.json() == {
        "event": "approval", "key": str(doc_id), "resumed": 1}
    wait_for(lambda: status(run_id) == "SUCCEEDED", 30, 0.1, "the run to finish")
    from celery_durable_django.models import Run

    assert json.loads(Run.objects.get(pk=run_id).result)["decision"] == {
        "approved": True, "by": "stripe"}
    again = httpx.post(url, content=body, headers=headers)  # the same request, replayed
    assert again.status_code == 403 and "replayed" in again.json()["error"]


def test_bad_requests_are_refused_and_deliver_nothing(django_worker, live_server, tag,
                                                      monkeypatch):
    """Missing, wrong, expired and replayed signatures, a body over the limit, a body that
    is not JSON, an unknown endpoint and a GET: each refused, the run still waiting."""
    run_id, doc_id = waiting_approval(tag)
    url = f"{live_server}/durable/events/approval/{doc_id}"
    body = b'{"approved": true}'
    secret, header = "whsec_test_approval", "Stripe-Signature"

    def post(content: bytes, headers: dict[str, str], to: str = url) -> httpx.Response:
        return httpx.post(to, content=content, headers=headers)

    cases = {
        "missing": (post(body, {"Content-Type": "application/json"}), 401, "missing"),
        "wrong secret": (post(body, signed("whsec_other", body, header)), 401, "not match"),
        "edited body": (post(b'{"approved": false}', signed(secret, body, header)), 401,
                        "not match"),
        "expired": (post(body, signed(secret, body, header, at=int(time.time()) - 3600)), 401,
                    "more than 300 s"),
        "our scheme on a Stripe endpoint": (post(body, signed(secret, body)), 401, "missing"),
        "not JSON": (post(b"{approved", signed(secret, b"{approved", header)), 400, "not JSON"),
        "unknown event": (post(body, signed(secret, body, header),
                               f"{live_server}/durable/events/unknown/1"), 404,
                          "no such endpoint"),
        "GET": (httpx.get(url), 405, "POST only"),
    }
    from django.conf import settings

    monkeypatch.setattr(settings, "DURABLE_WEBHOOK_MAX_BYTES", 64, raising=False)
    big = b'{"pad": "' + b"x" * 100 + b'"}'
    cases["too big"] = (post(big, signed(secret, big, header)), 413, "over 64 bytes")
    for name, (answer, code, says) in cases.items():
        assert answer.status_code == code, (name, answer.status_code, answer.text)
        assert says in answer.json()["error"], (name, answer.text)
    time.sleep(0.5)
    assert status(run_id) == "WAITING"  # nothing was delivered


def test_an_hmac_signed_event_with_a_rotated_secret_and_an_xss_payload_shown_escaped(
        django_worker, live_server, tag, make_user, client_for):
    from django_project.tasks import _counters, dispatch

    _counters.set(f"{tag}:code", "v1")
    run_id = dispatch.delay(tag).id
    wait_for(lambda: status(run_id) == "WAITING", 30, 0.1, "the run to wait")
    script = "<script>window.__pwned = 1</script>"
    body = json.dumps({"note": script}).encode()
    for secret in ("old-shipped-secret", "shipped-secret"):  # both verify during rotation
        answer = httpx.post(f"{live_server}/durable/events/shipped/{tag}", content=body,
                            headers=signed(secret, body))
        assert answer.status_code == 200, answer.text
    wait_for(lambda: status(run_id) == "SUCCEEDED", 30, 0.1, "the run to finish")
    page = client_for(make_user()).get(f"/admin/celery_durable/run/{run_id}/change/")
    text = page.content.decode()
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text and script not in text


def order_trigger(live: str, payload: Any, key: str | None = None,
                  task: str = "django_project.tasks.order",
                  secret: str = "order-trigger-secret", at: int | None = None) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = signed(secret, body, at=at)
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{live}/durable/runs/{task}", content=body, headers=headers)


def test_an_idempotent_trigger_sent_twice_starts_one_run_and_its_status_is_served(
        django_worker, live_server, tag, make_user, client_for):
    import os

    import redis

    from celery_durable_django.models import Run

    key = f"order-{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    first = order_trigger(live_server, {"args": [tag, 5]}, key, at=now)
    second = order_trigger(live_server, {"args": [tag, 5]}, key, at=now + 1)  # re-signed
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    run_id = first.json()["id"]
    assert second.json()["id"] == run_id
    assert first.json()["status_url"] == f"{live_server}/durable/runs/{run_id}"
    wait_for(lambda: status(run_id) == "SUCCEEDED", 30, 0.1, "the run to finish")
    assert Run.objects.filter(idempotency_key=key).count() == 1
    counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert int(counts.get(f"{tag}:charge")) == 1

    path = f"/durable/runs/{run_id}"
    stamp = int(time.time())
    digest = hmac.new(b"status-secret", f"{stamp}.{path}".encode(), hashlib.sha256).hexdigest()
    report = httpx.get(f"{live_server}{path}",
                       headers={"X-Durable-Signature": f"t={stamp},v1={digest}"})
    assert report.status_code == 200, report.text
    run = report.json()
    assert run["status"] == "SUCCEEDED" and run["result"]["cents"] == 500
    assert [s["key"] for s in run["steps"]] == ["reserve#0", "note#0", "charge#0"]
    assert all(s["status"] == "succeeded" and s["finished_at"] for s in run["steps"])
    assert httpx.get(f"{live_server}{path}").status_code == 401  # unsigned, not logged in
    viewer = client_for(make_user())
    assert viewer.get(path).json()["id"] == run_id  # a user with view_run
    unknown = viewer.get("/durable/runs/no-such-run")
    assert unknown.status_code == 404 and unknown.json() == {"error": "no such run"}


def test_triggers_outside_the_allow_list_or_with_bad_arguments_start_nothing(
        django_worker, live_server, tag):
    from celery_durable_django.models import Run

    before = Run.objects.count()
    cases = [
        (order_trigger(live_server, {"args": [tag]}, task="django_project.tasks.approval",
                       secret="not-on-the-allow-list"), 404, "no such endpoint"),
        (order_trigger(live_server, {"args": [tag]}, task="no.such.task"), 404,
         "no such endpoint"),
        (order_trigger(live_server, {"args": [tag, 1, "x", "extra"]}), 400,
         "arguments do not fit django_project.tasks.order("),
        (order_trigger(live_server, {"args": {"tag": tag}}), 400, '"args" must be'),
        (order_trigger(live_server, [tag, 5]), 400, "must be a JSON object"),
        (order_trigger(live_server, {"args": [tag, 5]}, secret="wrong"), 401, "not match"),
        (httpx.put(f"{live_server}/durable/runs/django_project.tasks.order"), 405, "only"),
    ]
    for answer, code, says in cases:
        assert answer.status_code == code, answer.text
        assert says in answer.json()["error"], answer.text
    assert Run.objects.count() == before


def test_a_github_signed_event_is_accepted_once_per_delivery(db, live_server):
    """GitHub's scheme (X-Hub-Signature-256 over the body, no timestamp): a delivery id is
    accepted once; the endpoint is CSRF-exempt (a POST over HTTP with no CSRF cookie or
    token) only because it checks the signature."""
    body = b'{"ref": "refs/heads/main"}'
    digest = hmac.new(b"github-secret", body, hashlib.sha256).hexdigest()
    delivery = str(uuid.uuid4())

    def post(signature: str, delivery_id: str = delivery) -> Any:
        return httpx.post(f"{live_server}/durable/events/github.push/main", content=body,
                          headers={"Content-Type": "application/json",
                                   "X-Hub-Signature-256": signature,
                                   "X-GitHub-Delivery": delivery_id})

    wrong = post("sha256=" + "0" * 64)
    assert wrong.status_code == 401 and "does not match" in wrong.json()["error"]
    first = post(f"sha256={digest}")
    assert first.status_code == 200 and first.json()["resumed"] == 0  # no run waits for it
    replay = post(f"sha256={digest}")
    assert replay.status_code == 403 and "replayed" in replay.json()["error"]
    assert post(f"sha256={digest}", str(uuid.uuid4())).status_code == 200  # a new delivery


def test_a_stripe_event_without_a_key_in_its_url_takes_it_from_the_body(
        django_worker, live_server, tag):
    """Stripe posts every event to one URL: the endpoint's ``"key"`` path finds the run's key
    in the event (``data.object.metadata.doc_id``); an event without it is a 400."""
    run_id, doc_id = waiting_approval(tag)
    url = f"{live_server}/durable/events/approval"
    lacking = json.dumps({"type": "payment_intent.succeeded", "data": {"object": {}}}).encode()
    answer = httpx.post(url, content=lacking, headers=signed("whsec_test_approval", lacking,
                                                              header="Stripe-Signature"))
    assert answer.status_code == 400 and "data.object.metadata.doc_id" in answer.json()["error"]
    event = json.dumps({"type": "payment_intent.succeeded", "data": {"object": {
        "id": "pi_123", "metadata": {"doc_id": str(doc_id)}}}}).encode()
    answer = httpx.post(url, content=event, headers=signed("whsec_test_approval", event,
                                                            header="Stripe-Signature"))
    assert answer.status_code == 200 and answer.json()["resumed"] == 1, answer.text
    wait_for(lambda: status(run_id) == "SUCCEEDED", 30, 0.1, "the run to finish")
    unkeyed = httpx.post(f"{live_server}/durable/events/shipped", content=b"{}",
                         headers=signed("shipped-secret", b"{}"))
    assert unkeyed.status_code == 404  # "shipped" takes its key in the URL only


def token_run(tag: str, timeout: float = 86400.0) -> tuple[str, str]:
    """A run of ``token_approval`` waiting on its token; (run id, the token's URL path)."""
    from django_project.tasks import _counters, token_approval

    run_id = token_approval.delay(tag, timeout).id
    wait_for(lambda: status(run_id) == "WAITING", 30, 0.1, "the run to wait")
    return run_id, _counters.get(f"{tag}:token_url").decode()


def test_an_http_client_completes_a_wait_token_and_the_run_finishes(
        django_worker, live_server, tag):
    run_id, path = token_run(tag)
    assert path.startswith("/durable/tokens/")
    url = f"{live_server}{path}"
    assert httpx.get(url).json()["status"] == "pending"
    answer = httpx.post(url, json={"approved": True, "by": "ana"})
    assert answer.status_code == 200 and answer.json()["resumed"] == 1, answer.text
    wait_for(lambda: status(run_id) == "SUCCEEDED", 30, 0.1, "the run to finish")
    from celery_durable_django.models import Run

    assert json.loads(Run.objects.get(pk=run_id).result)["decision"] == {
        "approved": True, "by": "ana"}
    second = httpx.post(url, json={"approved": False})
    assert second.status_code == 409
    assert second.json()["completed_at"] == answer.json()["completed_at"]
    assert httpx.get(url).json()["status"] == "completed"
    assert httpx.put(url).status_code == 405


def test_twenty_concurrent_completions_of_one_token_leave_exactly_one(
        django_worker, live_server, tag):
    import threading

    run_id, path = token_run(tag)
    barrier, codes, lock = threading.Barrier(20), [], threading.Lock()

    def complete(n: int) -> None:
        barrier.wait()
        answer = httpx.post(f"{live_server}{path}", json={"n": n}, timeout=30)
        with lock:
            codes.append((answer.status_code, n))

    threads = [threading.Thread(target=complete, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [n for code, n in codes if code == 200]
    assert len(codes) == 20 and len(winners) == 1, codes
    assert sorted(code for code, _ in codes).count(409) == 19
    wait_for(lambda: status(run_id) == "SUCCEEDED", 30, 0.1, "the run to finish")
    from celery_durable_django.models import Run

    assert json.loads(Run.objects.get(pk=run_id).result)["decision"] == {"n": winners[0]}


def test_unknown_expired_and_malformed_token_completions_change_nothing(
        django_worker, live_server, tag, monkeypatch):
    from django.conf import settings

    run_id, path = token_run(tag)
    url = f"{live_server}{path}"
    assert httpx.post(f"{live_server}/durable/tokens/not-a-token", json=1).status_code == 404
    bad = httpx.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    monkeypatch.setattr(settings, "DURABLE_WEBHOOK_MAX_BYTES", 16, raising=False)
    assert httpx.post(url, json={"pad": "x" * 64}).status_code == 413
    time.sleep(0.3)
    assert status(run_id) == "WAITING" and httpx.get(url).json()["status"] == "pending"
    short_id, short_path = token_run(f"{tag}-short", timeout=1.0)
    time.sleep(1.5)
    expired = httpx.post(f"{live_server}{short_path}", json={"late": True})
    assert expired.status_code == 410 and expired.json()["expired_at"]
    wait_for(lambda: status(short_id) == "SUCCEEDED", 30, 0.1, "the wait to time out")


def test_an_html_form_completes_a_token_and_goes_back_to_a_page_of_the_site(
        django_worker, live_server, tag):
    """An e-mail's or a page's form posts its fields (the payload) and a ``next`` page on this
    site; a ``next`` elsewhere is not followed (JSON answer instead)."""
    run_id, path = token_run(tag)
    url = f"{live_server}{path}"
    form = {"decision": "approve", "by": "ana", "next": "/admin/?from=mail"}
    answer = httpx.post(url, data=form)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/?from=mail&token=completed"
    wait_for(lambda: status(run_id) == "SUCCEEDED", 30, 0.1, "the run to finish")
    from celery_durable_django.models import Run

    assert json.loads(Run.objects.get(pk=run_id).result)["decision"] == {
        "decision": "approve", "by": "ana"}
    elsewhere = httpx.post(url, data={"decision": "reject", "next": "https://evil.example/"})
    assert elsewhere.status_code == 409  # not redirected off-site; the first payload kept
