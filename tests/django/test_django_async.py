"""``async def`` durable tasks on the Django store, in process on PostgreSQL and SQLite:
the steps call the store from the body's event loop, where Django's ORM refuses queries;
the store runs those calls in a helper thread (django_app/store/_event_loop.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django_support import deliver, make_django_store

from celery_durable import durable_task, get_run, step

pytestmark = pytest.mark.usefixtures("django_pg")


@pytest.fixture(params=["django-postgres", "django-sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield make_django_store(request.param)


def test_gathered_async_steps_are_checkpointed_in_the_django_database(store: Any) -> None:
    """Three gathered steps (one fails its first attempt): the retry delivery runs only the
    failed one; every checkpoint is a row of the store's database."""
    from celery_durable_django.models import Step

    app = Celery(f"async-django-{uuid.uuid4().hex[:6]}", broker="memory://",
                 set_as_current=False)
    app.conf.durable_store = store
    ran = Counter[str]()

    @step(max_attempts=3, backoff=0)
    async def fetch(x: int) -> int:
        ran[f"fetch-{x}"] += 1
        await asyncio.sleep(0.01)
        if x == 2 and ran["fetch-2"] == 1:
            raise ConnectionError("the tool timed out")
        return x * 10

    @durable_task(app=app, name="async.on_django")
    async def agent() -> int:
        return sum(await asyncio.gather(fetch(1), fetch(2), fetch(3)))

    run_id = str(uuid.uuid4())
    assert deliver(agent, run_id) is None  # fetch(2) failed: parked for its retry
    assert deliver(agent, run_id) == 60
    assert ran == {"fetch-1": 1, "fetch-2": 2, "fetch-3": 1}
    run = get_run(run_id, app=app)
    assert run.status == "SUCCEEDED" and [s.key for s in run.steps] == [
        "fetch#0@0", "fetch#0@1", "fetch#0@2"]
    rows = Step.objects.using(store.using).filter(run_id=run_id)
    assert sorted(rows.values_list("value", flat=True)) == ["10", "20", "30"]


def _agent_ran_once_each(*runs: tuple[str, str]) -> None:
    """Each (tag, run id): every step ran once (counted in Redis) and is a row here."""
    from django_project.tasks import _counters

    from celery_durable_django.models import Step

    for tag, run_id in runs:
        assert [int(_counters.get(f"{tag}:{name}") or 0) for name in (
            "tool-search", "tool-weather", "tool-stock", "note")] == [1, 1, 1, 1]
        assert list(Step.objects.filter(run_id=run_id).order_by("position").values_list(
            "key", flat=True)) == ["async_tool#0@0", "async_tool#0@1", "async_tool#0@2",
                                   "note#0"]


@pytest.mark.worker
def test_a_real_worker_runs_an_async_task_on_the_django_store(django_worker, tag) -> None:
    """A prefork worker of the Django test project: three async steps gathered (they can
    only finish if they execute at once), then a sync step; each ran once (counted in Redis
    from outside), and their checkpoints are rows in PostgreSQL."""
    from django_project.tasks import async_agent

    result = async_agent.delay(tag)
    assert result.get(timeout=60) == ["search:True", "weather:True", "stock:True"]
    _agent_ran_once_each((tag, result.id))


@pytest.mark.worker
def test_a_threads_pool_worker_runs_two_async_runs_on_the_django_store(
        django_pg: None, tmp_path: Path, tag: str) -> None:
    """Two async runs at once on a threads pool (two event loops, each with its own helper
    thread for the store): both finish, every step once."""
    import os

    from django_project.tasks import async_agent
    from harness import Worker, running

    worker = Worker("django_project", name=f"async-threads-{uuid.uuid4().hex[:6]}",
                    queue=os.environ["TEST_QUEUE"], log_path=tmp_path / "worker.log",
                    concurrency=2, pool="threads")
    with running(worker):
        results = [async_agent.delay(f"{tag}-{i}") for i in range(2)]
        for result in results:
            assert result.get(timeout=60) == ["search:True", "weather:True", "stock:True"]
    _agent_ran_once_each(*((f"{tag}-{i}", r.id) for i, r in enumerate(results)))
