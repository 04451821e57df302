"""A plain Celery app as Celery's own examples write it: results in Celery's SQL database
backend (``db+…``, ``TEST_SQL_BACKEND``), a RabbitMQ broker (``TEST_RABBITMQ_URL``), and no
``durable_store``: celery_durable keeps the runs in the result backend's database through
the SQL store, creating its tables on first start. Set by ``tests/test_sql_worker.py``.
Every execution is counted in Redis, outside the worker.
"""

from __future__ import annotations

import os

from celery import Celery

from apps.common import counters
from apps.core_app import add_one, slow  # steps counted in Redis
from celery_durable import durable_task

app = Celery("sql_app", broker=os.environ.get("TEST_RABBITMQ_URL",
                                              "amqp://guest:guest@127.0.0.1:5672//"),
             backend=os.environ.get("TEST_SQL_BACKEND", "db+sqlite:///results.sqlite"))
app.conf.update(
    task_default_queue=os.environ.get("TEST_QUEUE", "celery"),
    durable_sql_create_tables=True,
    durable_lease_ttl=float(os.environ.get("TEST_LEASE_TTL", "3")),
    durable_sweep_interval=0.2,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
r = counters()


class CardDeclined(Exception):
    """A transient failure outside any step: Celery's autoretry handles it."""


@durable_task(app=app, name="sql.order", bind=True, autoretry_for=(CardDeclined,),
              retry_kwargs={"max_retries": 3}, retry_backoff=1, retry_jitter=False)
def order(self, tag: str, seconds: float) -> list[object]:  # type: ignore[no-untyped-def]
    """Two steps, a slow one (the test kills the worker there), then the body fails once
    outside a step (autoretry), then one more step."""
    a = add_one(tag, 0)
    s = slow(tag, seconds)
    if int(r.incr(f"{tag}:body-failure")) == 1:
        raise CardDeclined(f"declined once for {tag}")
    return [a, s, add_one(tag, a), self.request.retries]
