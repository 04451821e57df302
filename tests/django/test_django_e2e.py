"""End to end: a real worker with the Django store on PostgreSQL, driven from the admin."""

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


def test_failed_run_is_dead_lettered_then_fixed_from_the_admin(django_worker, tag, make_user,
                                                               client_for):
    """A permanent failure shows in the dead-letter view; retrying it with edited arguments
    from the admin makes it succeed without re-running the steps that had completed."""
    from django.contrib.admin.models import LogEntry
    from django_project.tasks import order

    from celery_durable_django.models import Run

    result = order.delay(tag, 0, "<script>window.__pwned = 1</script>")
    wait_for(lambda: run_status(result.id) == "FAILED", 30, 0.1, "the run to fail")
    run = Run.objects.get(pk=result.id)
    assert run.failed_step == "charge#0" and run.error_type.endswith("PermanentError")
    assert run.current_step == "charge#0" and run.attempts == 1
    assert [s.key for s in run.steps.order_by("position")] == ["reserve#0", "note#0",
                                                                "charge#0"]

    client = client_for(make_user("retry_run_with_arguments"))
    dead = client.get("/admin/celery_durable/deadletter/").content.decode()
    assert f"deadletter/{result.id}/change/" in dead
    assert "amount must be positive, got 0" in dead
    page = client.get(f"/admin/celery_durable/run/{result.id}/change/").content.decode()
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "<script>window.__pwned" not in page

    response = client.post(f"/admin/celery_durable/run/{result.id}/retry-with-arguments/", {
        "args": json.dumps([tag, 5]), "kwargs": json.dumps({"text": "fixed"}),
        "from_step": "failed", "confirm": "on"})
    assert response.status_code == 302
    replay = Run.objects.get(replay_of=result.id)  # a new run; the dead letter stays
    assert response["Location"].endswith(f"/run/{replay.pk}/change/")
    value = order.AsyncResult(replay.pk).get(timeout=30)
    assert value["cents"] == 500
    assert value["note"] == "<script>window.__pwned = 1</script>"  # kept, not re-run
    wait_for(lambda: run_status(replay.pk) == "SUCCEEDED", 10, 0.1, "the replay to succeed")
    assert run_status(result.id) == "FAILED"

    counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert int(counts.get(f"{tag}:reserve")) == 1
    assert int(counts.get(f"{tag}:note")) == 1
    assert int(counts.get(f"{tag}:charge")) == 2
    assert LogEntry.objects.filter(object_id=result.id).exists()
    page = client.get(f"/admin/celery_durable/run/{result.id}/change/").content.decode()
    assert f"Replayed as <a href=\"/admin/celery_durable/run/{replay.pk}/change/\">" in page
