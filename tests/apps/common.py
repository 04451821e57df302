"""Builds a test Celery app on the real Redis named by the TEST_* variables."""

from __future__ import annotations

import os

import redis
from celery import Celery


def make_app(name: str, **conf: object) -> Celery:
    """A Celery app on the test broker/backend, with this session's queue and key prefix."""
    app = Celery(name, broker=os.environ["TEST_BROKER_URL"],
                 backend=os.environ["TEST_BACKEND_URL"])
    app.conf.update(
        task_default_queue=os.environ["TEST_QUEUE"],
        durable_key_prefix=os.environ["TEST_PREFIX"],
        durable_lease_ttl=float(os.environ.get("TEST_LEASE_TTL", "3")),
        durable_sweep_interval=0.2,
        broker_transport_options={"visibility_timeout": 3600},
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.update(conf)
    return app


def counters() -> redis.Redis:
    """Where steps count their executions: outside the worker, in the real Redis."""
    return redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
