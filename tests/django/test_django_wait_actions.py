"""Admin controls for paused runs, with a real worker on the Django store."""

from __future__ import annotations

import json
import os

import pytest
import redis
from harness import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("db")]


def run_status(run_id: str) -> str | None:
    """The run's status in the Django database, or None before the worker created it."""
    from celery_durable_django.models import Run

    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()


def test_send_event_form_resumes_a_waiting_run(django_worker, tag, make_user, client_for):
    """A waiting run shows its awaited event; the send-event form resumes it with the payload."""
    from django_project.tasks import approval

    result = approval.delay(tag, 7)
    wait_for(lambda: run_status(result.id) == "WAITING", 30, 0.1, "the run to wait")
    client = client_for(make_user("send_event"))
    listing = client.get("/admin/celery_durable/run/").content.decode()
    assert "waiting for approval key 7" in listing
    page = client.get(f"/admin/celery_durable/run/{result.id}/change/").content.decode()
    assert "cd-send-event" in page
    form = client.get(f"/admin/celery_durable/run/{result.id}/send-event/").content.decode()
    assert 'value="approval"' in form and 'value="7"' in form

    bad = client.post(f"/admin/celery_durable/run/{result.id}/send-event/",
                      {"name": "approval", "key": "7", "payload": "{not json"})
    assert bad.status_code == 200
    assert "The payload must be valid JSON" in bad.content.decode()
    assert run_status(result.id) == "WAITING"

    response = client.post(f"/admin/celery_durable/run/{result.id}/send-event/", {
        "name": "approval", "key": "7", "payload": json.dumps({"by": "<b>ann</b>"})})
    assert response.status_code == 302
    assert result.get(timeout=30) == {"draft": "draft 7", "decision": {"by": "<b>ann</b>"}}
    wait_for(lambda: run_status(result.id) == "SUCCEEDED", 10, 0.1, "the run to succeed")
    page = client.get(f"/admin/celery_durable/run/{result.id}/change/").content.decode()
    assert "ended: event" in page
    counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert int(counts.get(f"{tag}:note")) == 1


def test_wake_now_action_resumes_a_ten_day_sleep(django_worker, tag, make_user, client_for):
    """"Wake now" resumes a run sleeping for ten days at once; without the permission it is 403."""
    from django_project.tasks import long_nap

    result = long_nap.delay(tag)
    wait_for(lambda: run_status(result.id) == "SLEEPING", 30, 0.1, "the run to sleep")
    action = {"action": "wake_now", "_selected_action": [result.id], "index": "0", "post": "yes"}

    outsider = client_for(make_user())
    assert outsider.post("/admin/celery_durable/run/", action).status_code == 403
    assert outsider.get(f"/admin/celery_durable/run/{result.id}/send-event/").status_code == 403
    assert run_status(result.id) == "SLEEPING"

    client = client_for(make_user("wake_run"))
    assert "sleeping until" in client.get("/admin/celery_durable/run/").content.decode()
    assert client.post("/admin/celery_durable/run/", action).status_code == 302
    assert result.get(timeout=30) == "after"
    wait_for(lambda: run_status(result.id) == "SUCCEEDED", 10, 0.1, "the run to succeed")
    page = client.get(f"/admin/celery_durable/run/{result.id}/change/").content.decode()
    assert "ended: woken" in page
    counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert int(counts.get(f"{tag}:note")) == 2
