"""Hostile input in the Django store (PostgreSQL): corrupt checkpoints dead-letter the run."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_durable import SerializationError, durable_task, step
from celery_durable.records import StepRecord, StepStatus
from celery_durable.stores import get_store

pytestmark = pytest.mark.usefixtures("db")
CALLS: list[str] = []


@step
def triple(x: int) -> int:
    CALLS.append("triple")
    return x * 3


@pytest.fixture
def app() -> Iterator[Celery]:
    """An eager app whose runs live in the Django store (forgotten by the admin afterwards)."""
    app = Celery("hostile-django", set_as_current=False)
    app.conf.update(task_always_eager=True, durable_store="django://")
    CALLS.clear()
    yield app
    # The admin re-triggers through the first live app on the Django store: do not let
    # this result-less eager app be picked by later admin tests of the session.
    app.conf.durable_store = "memory://"
    app.__dict__.pop("_durable_settings", None)


def parked(app: Celery) -> tuple[Any, str]:
    """A two-step run with step 1 checkpointed, whose dead holder's lease expired."""
    @durable_task(app=app, name=f"hostile.django.{uuid.uuid4().hex[:6]}")
    def task(x: int) -> int:
        return triple(triple(x))

    store = get_store(app)
    run_id = str(uuid.uuid4())
    begin = store.begin(run_id, task=task.name, args="[2]", kwargs="{}", options={},
                        owner="gone-host:1:1", lease_ttl=0.05)
    assert begin.outcome == "acquired"
    assert store.save_step(run_id, begin.token, StepRecord(0, "triple#0", "triple",
                                                           StepStatus.SUCCEEDED, value="6"))
    time.sleep(0.1)
    return task, run_id


@pytest.mark.parametrize(("column", "corrupt"), [
    ("value", '{"__cd__":["bytes",'), ("value", "\udcff not json"), ("args", "[2, "),
    ("kwargs", "{'x': 1}"),
])
def test_corrupt_row_dead_letters_the_run_once(app, column, corrupt) -> None:
    """A truncated/garbled value or argument column ends the run FAILED with a clear error."""
    from celery_durable_django.models import Run, Step

    task, run_id = parked(app)
    if column == "value":
        Step.objects.filter(run_id=run_id).update(value=corrupt.encode(
            "utf-8", "replace").decode())
    else:
        Run.objects.filter(pk=run_id).update(**{column: corrupt})
    result = task.apply(args=[2], task_id=run_id)
    assert isinstance(result.result, SerializationError), result.result
    assert "corrupt" in str(result.result) or "cannot be decoded" in str(result.result)
    assert CALLS == []
    run = Run.objects.get(pk=run_id)
    assert run.status == "FAILED"
    assert "cannot be decoded" in run.error_message or "corrupt" in run.error_message
    task.apply(args=[2], task_id=run_id)  # a redelivery is ignored, not looped
    assert CALLS == [] and Run.objects.get(pk=run_id).status == "FAILED"


def test_intact_row_resumes(app) -> None:
    """Control: the uncorrupted run replays step 1 and runs step 2 only."""
    task, run_id = parked(app)
    assert task.apply(args=[2], task_id=run_id).result == 18
    assert CALLS == ["triple"]


def test_a_corrupt_step_row_dead_letters_the_run_naming_its_position(app) -> None:
    """A step row the store never writes (an unknown status) is reported when replay
    reaches it, as CorruptCheckpointError naming the run and the position; no step runs."""
    from celery_durable.errors import CorruptCheckpointError
    from celery_durable_django.models import Run, Step

    task, run_id = parked(app)
    Step.objects.filter(run_id=run_id).update(status="bogus")
    result = task.apply(args=[2], task_id=run_id)
    assert isinstance(result.result, CorruptCheckpointError), result.result
    assert f"run {run_id}: the checkpoint at position 0 is corrupt" in str(result.result)
    assert CALLS == []
    assert Run.objects.get(pk=run_id).status == "FAILED"


def test_an_unknown_status_dead_letters_the_run_and_is_listed(app: Celery) -> None:
    """A status the engine never writes: the next delivery dead-letters the run naming the
    field, and listing the dead letters shows it (it raised ValueError and looped)."""
    from celery_durable import RunStatus, get_run, list_runs
    from celery_durable_django.models import Run

    task, run_id = parked(app)
    Run.objects.filter(pk=run_id).update(status="ZOMBIE")
    assert {r.id for r in list_runs(app=app, limit=1000)} >= {run_id}
    shown = get_run(run_id, app=app)
    assert shown.status is RunStatus.FAILED and shown.damage
    result = task.apply(args=[2], task_id=run_id)
    assert "field status" in str(result.result)
    run = get_run(run_id, app=app)
    assert run.status is RunStatus.FAILED and run.damage == []
    assert run.error is not None and "field status" in run.error.message
    assert CALLS == []
