"""Transactional steps (``@step(atomic=True)``) on the Django store, in process, on
PostgreSQL and SQLite: the step's rows and its checkpoint commit together or not at all.

A delivery is a request pushed on the task, as a worker's (the real-worker SIGKILL tests
are in tests/django/test_django_atomic_worker.py); the business rows are auth groups.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from django.db import transaction
from django_support import deliver, make_django_store

from celery_durable import DurableError, durable_task, get_run, step

pytestmark = pytest.mark.usefixtures("django_pg")


@pytest.fixture(params=["django-postgres", "django-sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield make_django_store(request.param)


def _app(store: Any) -> Celery:
    app = Celery(f"atomic-{uuid.uuid4().hex[:6]}", broker="memory://", set_as_current=False)
    app.conf.durable_store = store
    return app


def _groups(alias: str, prefix: str) -> int:
    from django.contrib.auth.models import Group

    return Group.objects.using(alias).filter(name__startswith=prefix).count()


def test_the_rows_commit_with_the_checkpoint_and_a_failed_attempt_leaves_none(
        store: Any) -> None:
    """Attempt 1 inserts its row and fails: the row rolls back with it. Attempt 2 commits
    its row and the checkpoint together; a replay returns the recorded id, writes nothing."""
    from django.contrib.auth.models import Group

    app, prefix, calls = _app(store), f"g-{uuid.uuid4().hex[:8]}", Counter[str]()

    @step(atomic=True, max_attempts=3, backoff=0)
    def create_group(name: str) -> int:
        calls["create"] += 1
        group = Group.objects.using(store.using).create(name=f"{name}-{calls['create']}")
        if calls["create"] == 1:
            raise ConnectionError("the payment API timed out after the insert")
        return int(group.pk)

    @durable_task(app=app, name="atomic.make")
    def make(name: str) -> int:
        return int(create_group(name))

    run_id = str(uuid.uuid4())
    deliver(make, run_id, prefix)  # attempt 1 fails: retried later
    assert _groups(store.using, prefix) == 0  # its insert rolled back with it
    assert get_run(run_id, app=app).status == "RETRYING"
    group_id = deliver(make, run_id, prefix)
    assert _groups(store.using, prefix) == 1 and calls["create"] == 2
    assert Group.objects.using(store.using).get(pk=group_id).name == f"{prefix}-2"
    run = get_run(run_id, app=app)
    assert run.status == "SUCCEEDED" and len(run.steps) == 1 and run.steps[0].attempts == 2
    assert run.steps[0].atomic  # the checkpoint says its writes committed with it
    failures = run.steps[0].failures  # the failed attempt's record survived its rollback
    assert [a.number for a in failures] == [1] and failures[0].error is not None
    assert "timed out after the insert" in failures[0].error.message
    deliver(make, run_id, prefix)  # a duplicate delivery of the finished run
    assert calls["create"] == 2 and _groups(store.using, prefix) == 1


def _stale_run(store: Any, *, during_the_step: bool) -> tuple[int, list[Any]]:
    """A run taken over (its token moved, committed by another connection) just before its
    transactional step, or while the step runs (after its insert); (rows left, checkpoints)."""
    from django.contrib.auth.models import Group
    from django.db import connections
    from django.db.models import F

    from celery_durable_django.models import Run

    app, prefix = _app(store), f"g-{uuid.uuid4().hex[:8]}"
    run_id = str(uuid.uuid4())

    def take_over() -> None:
        def update() -> None:
            try:
                Run.objects.using(store.using).filter(pk=run_id).update(token=F("token") + 1)
            finally:
                connections[store.using].close()
        thread = threading.Thread(target=update)
        thread.start()
        thread.join(30)

    @step(atomic=True)
    def create_group(name: str) -> int:
        group = Group.objects.using(store.using).create(name=name)
        if during_the_step:
            take_over()
        return int(group.pk)

    @durable_task(app=app, name="atomic.stale")
    def stale(name: str) -> int:
        if not during_the_step:
            take_over()
        return int(create_group(name))

    deliver(stale, run_id, prefix)
    return _groups(store.using, prefix), get_run(run_id, app=app).steps


def test_a_holder_that_lost_its_lease_commits_nothing(store: Any) -> None:
    """Taken over before its step: the step's fencing check fails at the end and its row
    rolls back; no checkpoint is written."""
    assert _stale_run(store, during_the_step=False) == (0, [])


def test_a_takeover_while_the_step_runs_rolls_its_rows_back_on_postgresql() -> None:
    """On PostgreSQL the takeover can commit while the step runs (row locks; SQLite takes
    the database's write lock for the step's whole transaction, so there it waits)."""
    assert _stale_run(make_django_store("django-postgres"), during_the_step=True) == (0, [])


def test_a_deadlock_on_postgresql_is_a_failed_attempt_retried_in_a_new_transaction() -> None:
    """Attempt 1 inserts a row, locks group A, then waits for group B, which another
    connection holds while it waits for A: PostgreSQL aborts the step's transaction
    (the step is the victim: the other session's ``deadlock_timeout`` is longer). The row
    rolls back, the attempt is recorded with the deadlock as its cause, and attempt 2
    commits its row and the checkpoint."""
    from django.contrib.auth.models import Group
    from django.db import connections

    store = make_django_store("django-postgres")
    app, prefix, calls = _app(store), f"g-{uuid.uuid4().hex[:8]}", Counter[str]()
    first, second = (Group.objects.using(store.using).create(name=f"{prefix}-lock-{n}")
                     for n in "ab")
    holding_b, waiting = threading.Event(), threading.Event()

    def other_session() -> None:
        try:
            with transaction.atomic(using=store.using):
                with connections[store.using].cursor() as cursor:
                    cursor.execute("SET LOCAL deadlock_timeout = '30s'")
                Group.objects.using(store.using).select_for_update().get(pk=second.pk)
                holding_b.set()
                waiting.wait(30)  # the step is about to wait for B
                time.sleep(0.3)
                Group.objects.using(store.using).select_for_update().get(pk=first.pk)
        finally:
            connections[store.using].close()

    @step(atomic=True, max_attempts=3, backoff=0)
    def create_group(name: str) -> int:
        calls["create"] += 1
        group = Group.objects.using(store.using).create(name=f"{name}-{calls['create']}")
        if calls["create"] == 1:
            Group.objects.using(store.using).select_for_update().get(pk=first.pk)
            threading.Thread(target=other_session, daemon=True).start()
            assert holding_b.wait(30)
            waiting.set()
            Group.objects.using(store.using).select_for_update().get(pk=second.pk)
        return int(group.pk)

    @durable_task(app=app, name="atomic.deadlock")
    def make(name: str) -> int:
        return int(create_group(name))

    run_id = str(uuid.uuid4())
    deliver(make, run_id, prefix)  # attempt 1: the deadlock; retried (no backoff)
    if get_run(run_id, app=app).status != "SUCCEEDED":
        deliver(make, run_id, prefix)
    run = get_run(run_id, app=app)
    assert run.status == "SUCCEEDED" and calls["create"] == 2
    failures = run.steps[0].failures
    assert len(failures) == 1 and failures[0].error is not None
    assert "deadlock detected" in failures[0].error.message
    names = set(Group.objects.using(store.using).filter(name__startswith=prefix)
                .values_list("name", flat=True))
    assert names == {f"{prefix}-lock-a", f"{prefix}-lock-b", f"{prefix}-2"}  # not -1


def test_a_write_through_another_database_is_refused_before_it_runs() -> None:
    """On the PostgreSQL store, a transactional step that writes to the ``sqlite`` alias
    fails at that statement (nothing written there), and the run is dead-lettered."""
    from django.contrib.auth.models import Group

    store = make_django_store("django-postgres")
    make_django_store("django-sqlite")  # (the other alias, migrated)
    app, prefix = _app(store), f"g-{uuid.uuid4().hex[:8]}"

    @step(atomic=True)
    def elsewhere(name: str) -> int:
        return int(Group.objects.using("sqlite").create(name=name).pk)

    @durable_task(app=app, name="atomic.elsewhere")
    def write_elsewhere(name: str) -> int:
        return int(elsewhere(name))

    run_id = str(uuid.uuid4())
    with pytest.raises(Exception, match="wrote through the database 'sqlite'"):
        deliver(write_elsewhere, run_id, prefix)
    assert _groups("sqlite", prefix) == 0
    run = get_run(run_id, app=app)
    assert run.status == "FAILED" and run.error is not None
    assert "OtherDatabaseWrite" in run.error.type


@pytest.mark.parametrize("url, name", [("memory://", "MemoryStore"), ("redis", "RedisStore")])
def test_atomic_on_a_store_without_transactions_is_a_clear_error_before_the_step_runs(
        url: str, name: str) -> None:
    import os

    app = Celery("atomic-elsewhere", broker="memory://", set_as_current=False)
    app.conf.durable_store = os.environ["TEST_REDIS_URL"] if url == "redis" else url
    app.conf.durable_key_prefix = f"{os.environ['TEST_PREFIX']}atomic:"
    ran = Counter[str]()

    @step(atomic=True)
    def create(name: str) -> str:
        ran["create"] += 1
        return name

    @durable_task(app=app, name="atomic.memory")
    def on_memory(name: str) -> str:
        return str(create(name))

    with pytest.raises(DurableError, match=r"step create#0: atomic=True needs transactional "
                                           rf"steps.*{name} keeps checkpoints elsewhere"):
        deliver(on_memory, str(uuid.uuid4()), "x")
    assert ran["create"] == 0


def test_in_eager_mode_on_the_memory_store_a_failed_attempt_rolls_its_rows_back() -> None:
    """``task.apply()`` with the memory store: each attempt of a transactional step runs in
    Django's ``transaction.atomic()`` (no checkpoint in it: the guarantee needs the Django
    store), so the failed attempt's row is gone and the second attempt's stays."""
    from django.contrib.auth.models import Group

    app = Celery("atomic-eager", broker="memory://", set_as_current=False)
    app.conf.durable_store = "memory://"
    prefix, calls = f"g-{uuid.uuid4().hex[:8]}", Counter[str]()

    @step(atomic=True, max_attempts=2, backoff=0)
    def create_group(name: str) -> int:
        calls["create"] += 1
        group = Group.objects.create(name=f"{name}-{calls['create']}")
        if calls["create"] == 1:
            raise ConnectionError("timed out after the insert")
        return int(group.pk)

    @durable_task(app=app, name="atomic.eager")
    def make(name: str) -> int:
        return int(create_group(name))

    group_id = make.apply(args=(prefix,)).get()
    assert calls["create"] == 2
    assert list(Group.objects.filter(name__startswith=prefix).values_list("pk", flat=True)) \
        == [group_id]


def test_on_commit_callbacks_run_after_the_commit_and_never_for_a_rolled_back_attempt(
        store: Any) -> None:
    """A callback registered with ``transaction.on_commit`` by attempt 1 (which fails) never
    runs; attempt 2's runs once, after its commit: its checkpoint is already stored."""
    from django.contrib.auth.models import Group

    from celery_durable_django.models import Step

    app, prefix, calls = _app(store), f"g-{uuid.uuid4().hex[:8]}", Counter[str]()
    fired: list[tuple[int, bool]] = []
    run_id = str(uuid.uuid4())

    @step(atomic=True, max_attempts=3, backoff=0)
    def create_group(name: str) -> int:
        calls["create"] += 1
        attempt = calls["create"]
        group = Group.objects.using(store.using).create(name=f"{name}-{attempt}")
        transaction.on_commit(lambda: fired.append((attempt, Step.objects.using(
            store.using).filter(run_id=run_id, position=0, status="succeeded").exists())),
            using=store.using)
        if attempt == 1:
            raise ConnectionError("failed after registering the e-mail")
        return int(group.pk)

    @durable_task(app=app, name="atomic.on_commit")
    def make(name: str) -> int:
        return int(create_group(name))

    deliver(make, run_id, prefix)
    assert fired == []  # attempt 1 rolled back: its callback is dropped
    deliver(make, run_id, prefix)
    assert fired == [(2, True)]  # once, after the commit of the row and the checkpoint
