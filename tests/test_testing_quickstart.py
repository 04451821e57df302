"""``assert_resumable`` on the quickstart example (examples/quickstart), see docs/testing.md."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest

from celery_durable import testing

pytestmark = pytest.mark.worker

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"


def test_the_quickstart_order_pipeline_is_resumable(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """process_order survives a crash after each of its 3 steps, shipping once per run."""
    if "REDIS_URL" not in os.environ:  # shop.py (and its worker) read REDIS_URL
        monkeypatch.setenv("REDIS_URL", os.environ["TEST_REDIS_URL"].rsplit("/", 1)[0])
    import importlib
    import sys

    sys.path.insert(0, str(QUICKSTART))
    try:
        shop = importlib.import_module("shop")
    finally:
        sys.path.remove(str(QUICKSTART))
    queue = f"quickstart-{uuid.uuid4().hex[:8]}"
    shop.app.conf.task_default_queue = queue  # this process publishes to a queue of its own
    worker = testing.start_worker("shop", queues=[queue], cwd=QUICKSTART,
                                  crash_dir=tmp_path / "crash")
    try:
        order_id = random.randrange(10**9)

        def shipments() -> int:
            return int(shop.ledger.hget(f"demo:{order_id}", "ship") or 0)

        report = testing.assert_resumable(shop.process_order, order_id, observe=shipments)
    finally:
        worker.stop()
    assert report.steps == ["fetch_order#0", "charge#0", "ship#0"]
    assert report.result == {"order": order_id, "charge": f"ch_{order_id}",
                             "label": f"label-{order_id}"}
    assert report.boundaries == 3
