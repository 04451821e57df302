"""Fixtures of the Django app tests: the PostgreSQL test database, users, runs, a worker."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django_support import require_postgres, setup, truncate
from harness import Worker, running

#: Runs made by :func:`make_run` are routed here: no worker consumes it, so an admin
#: test that re-triggers one does not hand a stray message to the end-to-end worker.
SINK_QUEUE = f"durable-admin-sink-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def django_pg() -> Iterator[None]:
    """Django configured on this session's PostgreSQL database (skips without one)."""
    setup()
    require_postgres()
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment()
    yield
    teardown_test_environment()
    import redis

    redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).delete(SINK_QUEUE)


@pytest.fixture
def db(django_pg: None) -> None:
    """An empty run table (and result table) on the ``default`` database."""
    truncate("default")


@pytest.fixture
def make_run(db: None) -> Callable[..., Any]:
    """Factory: ``make_run(status="FAILED", steps=[...], **fields)`` → a saved Run row."""
    from django.utils import timezone

    from celery_durable_django.models import Run, Step

    def make(status: str = "FAILED", steps: list[dict[str, Any]] | None = None,
             **fields: Any) -> Run:
        now = timezone.now()
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()), "task": "django_project.tasks.order",
            "args": '["tag", 0]', "kwargs": "{}", "options": {"queue": SINK_QUEUE},
            "created_at": now - dt.timedelta(seconds=5), "updated_at": now,
            "started_at": now - dt.timedelta(seconds=4), "status": status}
        if status == "FAILED":
            values.update(finished_at=now, failed_step="charge#0", current_step="charge#0",
                          attempts=1, error_type="celery_durable.errors.PermanentError",
                          error_message="amount must be positive, got 0",
                          error_traceback="Traceback (most recent call last):\n  ...")
        values.update(fields)
        run = Run.objects.create(**values)
        for position, step in enumerate(steps or []):
            Step.objects.create(run=run, position=position, **{
                "key": f"{step['name']}#0", "status": "succeeded", "attempts": 1,
                "started_at": 1_700_000_000.0 + position, "finished_at": 1_700_000_000.5
                + position, **step})
        return run

    return make


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    """Factory: ``make_user("retry_run", ...)`` → a staff user with view_run and those perms."""
    from django.contrib.auth.models import Permission, User

    def make(*codenames: str, password: str = "pw-for-tests") -> User:
        user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:8]}", password=password,
                                        is_staff=True)
        perms = Permission.objects.filter(content_type__app_label="celery_durable",
                                          codename__in=["view_run", *codenames])
        user.user_permissions.set(perms)
        return user

    return make


@pytest.fixture
def client_for(db: None) -> Callable[..., Any]:
    """Factory: a Django test client logged in as ``user``."""
    from django.test import Client

    def make(user: Any) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture(scope="module")
def django_worker(django_pg: None, tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[Worker]:
    """One real ``celery worker`` of the test project (Django store on PostgreSQL)."""
    log = Path(tmp_path_factory.mktemp("django-worker")) / "worker.log"
    worker = Worker("django_project", name=f"django-{uuid.uuid4().hex[:6]}",
                    queue=os.environ["TEST_QUEUE"], log_path=log, concurrency=2)
    try:
        with running(worker):
            yield worker
    finally:
        failed = [item for item in request.session.items
                  if getattr(item, "rep_call", None) is not None and item.rep_call.failed
                  and item.module is request.module]
        if failed:
            print(f"\n----- log of the Django worker -----\n{worker.log()[-8000:]}")


@pytest.fixture(scope="module")
def live_server(django_pg: None) -> Iterator[str]:
    """The test project served on 127.0.0.1 by Django's live server thread (static files too)."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test.testcases import LiveServerThread

    thread = LiveServerThread("127.0.0.1", StaticFilesHandler, connections_override=None,
                              port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait(10)
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()
