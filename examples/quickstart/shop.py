"""A tiny shop: an order pipeline whose payment step fails once, then resumes.

Run it with ``make quickstart``; see README.md.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from celery_durable import durable_task, step

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")

app = Celery("shop", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(durable_lease_ttl=5, worker_hijack_root_logger=False)

# Side effects are counted in Redis, outside the worker, so the demo can show
# that a completed step is never executed twice.
ledger = redis.Redis.from_url(f"{REDIS_URL}/2", decode_responses=True)


@step
def fetch_order(order_id: int) -> dict[str, object]:
    """Load the order (a stand-in for a database read)."""
    ledger.hincrby(f"demo:{order_id}", "fetch_order", 1)
    return {"id": order_id, "amount": "19.99", "sku": "mug"}


@step(max_attempts=3, backoff=1.0)
def charge(order: dict[str, object]) -> dict[str, object]:
    """Charge the card; the stand-in payment API times out on the first attempt."""
    calls = ledger.hincrby(f"demo:{order['id']}", "charge", 1)
    key = step.context().idempotency_key  # pass this to a real payment API
    if calls == 1:
        raise TimeoutError("payment API timed out (simulated)")
    return {"id": f"ch_{order['id']}", "idempotency_key": key}


@step
def ship(order: dict[str, object]) -> str:
    """Book the shipment."""
    ledger.hincrby(f"demo:{order['id']}", "ship", 1)
    return f"label-{order['id']}"


@durable_task(app=app)
def process_order(order_id: int) -> dict[str, object]:
    """Fetch, charge, ship: each step checkpointed, the failed charge retried alone."""
    order = fetch_order(order_id)
    payment = charge(order)
    label = ship(order)
    return {"order": order_id, "charge": payment["id"], "label": label}
