"""A transactional step's holder frozen past its lease (SIGSTOP), then resumed: another
worker has taken the run over and committed the step; the frozen holder's checkpoint is
refused and its row rolls back with it. Rows are counted in PostgreSQL, from outside.

(PostgreSQL only: on SQLite the frozen holder's open transaction holds the database's
write lock, so nobody can take over until it resumes: docs/steps-and-replay.md.)
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
from harness import Worker, running, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("db")]


def _worker(tmp_path: Path, name: str) -> Worker:
    return Worker("django_project", name=f"{name}-{uuid.uuid4().hex[:6]}",
                  queue=os.environ["TEST_QUEUE"], log_path=tmp_path / f"{name}.log",
                  concurrency=1)


def test_a_frozen_stale_holder_cannot_commit_its_transactional_step(
        django_pg: None, tmp_path: Path, tag: str) -> None:
    from django.contrib.auth.models import Group
    from django_project.celery import app
    from django_project.tasks import _counters
    from django_support import make_django_store

    from celery_durable_django.models import Run

    make_django_store("django-postgres")
    run_id = str(uuid.uuid4())
    with running(_worker(tmp_path, "frozen")) as frozen:
        app.send_task("django_project.tasks.insert_row_and_pause", args=(tag, 8.0),
                      task_id=run_id)
        wait_for(lambda: _counters.get(f"{tag}:inserted") == b"1", 60, 0.1,
                 "the first holder to insert its row")
        os.killpg(frozen.pid, signal.SIGSTOP)  # heartbeat and step stop; the host is not dead
        try:
            with running(_worker(tmp_path, "second")):
                wait_for(lambda: Run.objects.filter(pk=run_id, status="SUCCEEDED").exists(),
                         90, 0.2, "the second worker to take the run over and finish it")
        finally:
            os.killpg(frozen.pid, signal.SIGCONT)
        wait_for(lambda: f"{run_id}] ignored" in frozen.log(), 60, 0.2,
                 "the stale delivery to end")
        assert "lost the lease" in frozen.log() or "lease lost" in frozen.log()
    assert _counters.get(f"{tag}:inserted") == b"2"  # both holders inserted a row
    assert Group.objects.filter(name__startswith=f"{tag}-").count() == 1  # one committed
    run = Run.objects.get(pk=run_id)
    assert run.recoveries >= 1
    step = run.steps.get(position=0)
    assert step.atomic and int(step.value) == Group.objects.get(
        name__startswith=f"{tag}-").pk  # the committed row is the checkpoint's
