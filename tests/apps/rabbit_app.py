"""Durable tasks on a RabbitMQ broker (the most common production broker); results and the
store on the test Redis. Every execution is counted in Redis, outside the worker.

The broker is ``TEST_RABBITMQ_URL`` (set by ``tests/test_rabbitmq.py``), with this session's
queue.
"""

from __future__ import annotations

import os

from apps.common import counters, make_app
from apps.core_app import add_one, crash_and_retry_body  # steps counted in Redis
from celery_durable import durable_task, gather, sleep, wait_for_event

app = make_app("rabbit_app", broker_url=os.environ.get("TEST_RABBITMQ_URL",
                                                       "amqp://guest:guest@127.0.0.1:5672//"))
r = counters()


def hit(tag: str, name: str) -> int:
    """Count one execution of ``name`` for test ``tag``."""
    return int(r.incr(f"{tag}:{name}"))


@durable_task(app=app, name="rabbit.crash_and_retry")
def crash_and_retry(tag: str, seconds: float) -> list[object]:
    """Two steps, a slow one (the test kills the worker there), a flaky one, one more."""
    return crash_and_retry_body(tag, seconds)


@durable_task(app=app, name="rabbit.approval")
def approval(tag: str, key: str) -> object:
    add_one(tag, 0)
    return wait_for_event("approved", key=key, timeout=600)


@durable_task(app=app, name="rabbit.napper")
def napper(tag: str) -> str:
    add_one(tag, 0)
    sleep(3600)
    return str(add_one(tag, 1))


@durable_task(app=app, name="rabbit.square")
def square(tag: str, x: int) -> int:
    hit(tag, f"square:{x}")
    return x * x


@durable_task(app=app, name="rabbit.fan_out")
def fan_out(tag: str, n: int) -> list[int]:
    add_one(tag, 0)
    return gather(*(square.s(tag, x) for x in range(n)))
