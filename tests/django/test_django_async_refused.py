"""An ``async def`` durable task on the Django store: refused at the run's start with the
reason (Django's ORM refuses queries inside the event loop the body runs in), the run
dead-lettered with it, and no step run; not a store outage retried forever."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from celery import Celery
from celery.exceptions import Ignore, Retry
from django_support import make_django_store

from celery_durable import durable_task, get_run, step

pytestmark = pytest.mark.usefixtures("django_pg")


def test_an_async_task_on_the_django_store_is_dead_lettered_with_the_reason() -> None:
    store = make_django_store("django-postgres")
    app = Celery(f"async-django-{uuid.uuid4().hex[:6]}", broker="memory://",
                 set_as_current=False)
    app.conf.durable_store = store
    ran = Counter[str]()

    @step
    async def fetch(x: int) -> int:
        ran["fetch"] += 1
        await asyncio.sleep(0)
        return x + 1

    @durable_task(app=app, name="async.on_django")
    async def agent(x: int) -> int:
        return sum(await asyncio.gather(fetch(x), fetch(x + 1)))

    run_id = str(uuid.uuid4())
    agent.push_request(id=run_id, is_eager=False, called_directly=False, delivery_info={},
                       retries=0, hostname="unit@test")
    try:
        with pytest.raises(Exception, match="cannot serve yet"):
            agent(1)
    except (Ignore, Retry):
        pytest.fail("the run was parked for a retry: it must fail for good")
    finally:
        agent.pop_request()
    run = get_run(run_id, app=app)
    assert run.status == "FAILED" and run.error is not None
    assert "DjangoStore" in run.error.message and "Redis or SQL store" in run.error.message
    assert ran["fetch"] == 0 and run.steps == []
