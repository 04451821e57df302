"""Run controls with the Django store on PostgreSQL and a real worker."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
import redis
from harness import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("db")]


def run_status(run_id: str) -> str | None:
    """The run's status in the Django database, or None before it exists."""
    from celery_durable_django.models import Run

    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()


def test_admin_cancel_of_a_sleeping_run_uses_cancel_run(django_worker, tag, make_user,
                                                        client_for):
    """The admin's cancel action cancels a sleeping run for good and Celery sees it REVOKED."""
    from django_project.tasks import long_nap

    result = long_nap.delay(tag)
    wait_for(lambda: run_status(result.id) == "SLEEPING", 30, 0.1, "the run to sleep")
    client = client_for(make_user("cancel_run"))
    response = client.post("/admin/celery_durable/run/", {
        "action": "cancel_runs", "_selected_action": [result.id], "index": "0", "post": "yes"})
    assert response.status_code == 302
    assert run_status(result.id) == "CANCELLED"
    assert result.state == "REVOKED"
    # A cancelled run cannot be woken: its 10-day sleep is over for good.
    from django_project.celery import app

    from celery_durable import wake_run

    assert wake_run(result.id, app=app) is False
    time.sleep(1.0)
    assert run_status(result.id) == "CANCELLED"
    counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert int(counts.get(f"{tag}:note")) == 1  # the step after the sleep never ran


def test_concurrent_idempotent_triggers_make_one_row(django_worker, tag):
    """Twelve threads triggering with one key make one run row, run once, all get its id."""
    from django.db import connections
    from django_project.tasks import order

    from celery_durable_django.models import Run

    key = f"order-{uuid.uuid4().hex[:8]}"
    barrier, ids, lock = threading.Barrier(12), [], threading.Lock()

    def trigger() -> None:
        try:
            barrier.wait()
            run_id = order.apply_async((tag, 5), idempotency_key=key).id
            with lock:
                ids.append(run_id)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=trigger) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 12 and len(set(ids)) == 1
    assert list(Run.objects.filter(idempotency_key=key).values_list("id", flat=True)) == ids[:1]
    wait_for(lambda: run_status(ids[0]) == "SUCCEEDED", 30, 0.1, "the run to succeed")
    counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert int(counts.get(f"{tag}:charge")) == 1


def test_a_gather_on_the_django_store_resumes_its_parent_once(django_worker, tag):
    """Two children on the Django store finishing at 0.3 and 0.6 s (the worker has two
    processes, so the parent is free to run between them): each child runs once, the parent
    gets their results in order and is delivered twice, its start and one wake, counted from
    outside the worker. A wake per child notice would be three deliveries. (An early look
    needs a child to finish between the parent's two reads, a millisecond apart: here the
    children are just published at the first look and both done at the second.)"""
    from django_project.tasks import fan_out

    result = fan_out.delay(tag, 2, 0.3)
    assert result.get(timeout=60) == [0, 1]
    counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert all(int(counts.get(f"{tag}:square:{x}")) == 1 for x in range(2))
    assert int(counts.get(f"{tag}:fan_out:delivery")) == 2
