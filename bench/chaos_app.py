"""The Celery app of the chaos suite's workers: one durable task of N ledgered steps.

Configured by the driver (``bench/chaos.py``) through environment variables:
``CHAOS_BROKER`` (Redis or RabbitMQ URL), ``CHAOS_REDIS`` (result backend and,
unless ``CHAOS_STORE=django://``, the RedisStore), ``CHAOS_QUEUE``,
``CHAOS_LEDGER`` (the ledger file), ``CHAOS_STEP_MS`` (mean step duration),
``CHAOS_PG_URL`` (Django store database).
"""

from __future__ import annotations

import os
import random
import time

from celery import Celery

from celery_durable import durable_task, step

STORE = os.environ.get("CHAOS_STORE", "")
if STORE.startswith("django"):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_settings")
    os.environ.setdefault("BENCH_DB", "postgres")
    os.environ.setdefault("BENCH_PG_URL", os.environ.get("CHAOS_PG_URL", ""))
    import django

    django.setup()

REDIS = os.environ.get("CHAOS_REDIS", "redis://127.0.0.1:6379")
LEDGER = os.environ.get("CHAOS_LEDGER", "chaos-ledger")
STEP_MS = float(os.environ.get("CHAOS_STEP_MS", "20"))

app = Celery("chaos", broker=os.environ.get("CHAOS_BROKER", f"{REDIS}/0"),
             backend=f"{REDIS}/1")
app.conf.update(
    task_default_queue=os.environ.get("CHAOS_QUEUE", "chaos"),
    durable_key_prefix="chaos:",
    durable_lease_ttl=3.0,
    durable_sweep_interval=0.25,
    # Chaos kills a run's worker many times; recoveries must not dead-letter it.
    durable_max_recoveries=1000,
    # A run published but never started (its message lost with a killed worker's
    # prefetch, or published while the broker was down) is republished after this.
    durable_requeue_grace=20.0,
    broker_transport_options={"visibility_timeout": 20},
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_hijack_root_logger=False,
    result_expires=3600,
)
if STORE:
    app.conf.durable_store = STORE


def ledger(line: str) -> None:
    """Append one line to the ledger file with a single O_APPEND write (outside the worker)."""
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@step
def work(i: int) -> int:
    """One step: log its start ('B run position pid'), work a little, return ``i``."""
    ctx = step.context()
    ledger(f"B {ctx.run_id} {ctx.position} {os.getpid()}\n")
    time.sleep(random.uniform(0.25, 1.75) * STEP_MS / 1000)
    return i


@durable_task(app=app, name="chaos.run")
def chaos_run(steps: int) -> int:
    """``steps`` steps in a row; returns the sum of their indices."""
    return sum(work(i) for i in range(steps))
