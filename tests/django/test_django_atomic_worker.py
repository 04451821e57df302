"""Transactional steps with real workers SIGKILLed (the Django store on PostgreSQL, and on
SQLite): a step's row is committed exactly once whether the pool process dies inside the function
after its insert, after the checkpoint was written but before the commit, or after the
commit. The same kill in a plain step leaves a duplicate row (why ``atomic=True`` exists).
Rows are counted in the database, from outside the worker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Worker, running, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("db")]


@pytest.fixture(scope="module", params=["default", "sqlite"])
def crash_worker(django_pg: None, tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[Any]:
    """A worker of the test project with the crash hooks on (celery_durable.testing's), its
    store on PostgreSQL (``default``) or on the SQLite file of the ``sqlite`` alias."""
    from django_support import make_django_store

    alias = request.param
    make_django_store(f"django-{'postgres' if alias == 'default' else 'sqlite'}")
    crash_dir = tmp_path_factory.mktemp("crash")
    log = crash_dir / "worker.log"
    env = {"CELERY_DURABLE_CRASH_DIR": str(crash_dir)}
    if alias == "sqlite":
        env["DURABLE_TEST_DATABASE_URL"] = ""  # its default database: the SQLite file
    worker = Worker("django_project", name=f"atomic-{uuid.uuid4().hex[:6]}",
                    queue=os.environ["TEST_QUEUE"], log_path=log, concurrency=2, env=env)
    worker.crash_dir = crash_dir  # type: ignore[attr-defined]
    worker.alias = alias  # type: ignore[attr-defined]
    with running(worker):
        yield worker


def rows(worker: Any, tag: str) -> int:
    from django.contrib.auth.models import Group

    return Group.objects.using(worker.alias).filter(name__startswith=f"{tag}-").count()


def start(worker: Any, run_id: str, *args: Any) -> None:
    """Send the task by name (the worker's store creates the run from its message)."""
    from django_project.celery import app

    app.send_task("django_project.tasks.insert_row", args=args, task_id=run_id)


def finish(worker: Any, run_id: str) -> Any:
    from celery_durable_django.models import Run

    runs = Run.objects.using(worker.alias)
    wait_for(lambda: runs.filter(pk=run_id, status="SUCCEEDED").exists(), 60, 0.2,
             f"run {run_id} to succeed after the crash")
    return runs.get(pk=run_id)


def plan(worker: Any, kind: str, run_id: str, position: int = 0) -> None:
    """A crash of the pool process at ``position``: ``crash`` after the commit,
    ``crash-uncommitted`` after the checkpoint is written, before the commit."""
    Path(worker.crash_dir, f"{kind}-{run_id}").write_text(str(position))


@pytest.mark.parametrize("where", ["inside the function", "before the commit",
                                   "after the commit"])
def test_a_transactional_step_commits_its_row_once_whatever_the_crash(crash_worker, tag,
                                                                      where):
    from django_project.tasks import _counters

    run_id = str(uuid.uuid4())
    if where == "before the commit":
        plan(crash_worker, "crash-uncommitted", run_id)
    elif where == "after the commit":
        plan(crash_worker, "crash", run_id)
    start(crash_worker, run_id, tag, True, where == "inside the function")
    run = finish(crash_worker, run_id)
    assert rows(crash_worker, tag) == 1
    assert run.recoveries >= 1  # the pool process really died, the run was recovered
    assert int(_counters.get(f"{tag}:note")) == 1
    assert not Path(crash_worker.crash_dir, f"crash-uncommitted-{run_id}").exists()
    assert not Path(crash_worker.crash_dir, f"crash-{run_id}").exists()


def test_the_same_crash_in_a_plain_step_leaves_a_duplicate_row(crash_worker, tag):
    run_id = str(uuid.uuid4())
    start(crash_worker, run_id, tag, False, True)
    finish(crash_worker, run_id)
    assert rows(crash_worker, tag) == 2  # committed before the crash, and again on resume
