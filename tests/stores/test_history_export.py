"""``export_run`` → ``testing.replay`` on every store: a run's history, exported from the
store it ran on, replays the task's code in-process without calling a step, up to where
the history ends (a wait) and, once the run finished, to its result."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

from celery import Celery
from celery.exceptions import Ignore

from celery_durable import durable_task, send_event, step, wait_for_event
from celery_durable.stores.base import CheckpointStore
from celery_durable.testing import export_run, replay


def test_an_exported_history_replays_without_calling_a_step(store: CheckpointStore) -> None:
    app = Celery(f"export-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.durable_store = store
    calls: Counter[str] = Counter()

    @step
    def price(item: str) -> float:
        calls["price"] += 1
        return 9.5

    @step
    def ship(item: str, paid: Any) -> str:
        calls["ship"] += 1
        return f"shipped {item} ({paid['by']})"

    @durable_task(app=app, name="export.order")
    def order(item: str) -> dict[str, Any]:
        amount = price(item)
        paid = wait_for_event("paid", key=item, timeout=3600)
        return {"amount": amount, "shipment": ship(item, paid)}

    def deliver(run_id: str, *args: Any) -> Any:
        order.push_request(id=run_id, is_eager=False, called_directly=False,
                           delivery_info={}, retries=0, hostname="unit@test")
        try:
            return order(*args)
        except Ignore:
            return None
        finally:
            order.pop_request()

    run_id, item = str(uuid.uuid4()), f"item-{uuid.uuid4().hex[:6]}"
    assert deliver(run_id, item) is None  # parked at the wait
    waiting = replay(order, export_run(run_id, app=app))
    assert not waiting.finished and waiting.replayed == 1
    assert "position 1" in (waiting.ended_at or "")
    send_event("paid", key=item, payload={"by": "card"}, app=app)
    done = deliver(run_id, item)
    assert done == {"amount": 9.5, "shipment": f"shipped {item} (card)"}
    doc = export_run(run_id, app=app)
    assert json.loads(json.dumps(doc)) == doc  # plain JSON
    before = dict(calls)
    replayed = replay(order, doc)
    assert replayed.finished and replayed.result == done and replayed.replayed == 3
    assert dict(calls) == before  # no step function was called
