"""Signals and step events of durable runs, from real workers on real Redis."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from harness import wait_for
from test_flower import flower  # noqa: F401 - a real Flower process (fixture)

pytestmark = pytest.mark.worker


def recorded(redis_client: Any, run_id: str) -> list[dict[str, Any]]:
    from apps.ops_app import signals_key

    return [json.loads(x) for x in redis_client.lrange(signals_key(run_id), 0, -1)]


def test_signals_follow_a_run_through_retries_and_success(start_worker, tag, redis_client):
    """A step failing twice: started, retrying, resumed and succeeded signals, in order."""
    from apps.ops_app import checkout

    start_worker("apps.ops_app")
    result = checkout.delay(tag, 2)
    assert result.get(timeout=30) == "done ch-3"
    wait_for(lambda: any(e["signal"] == "run_succeeded" for e in recorded(redis_client, result.id)),
             10, message="run_succeeded")
    seen = [(e["signal"], e.get("step"), e.get("attempt"))
            for e in recorded(redis_client, result.id)]
    assert seen == [
        ("run_started", None, None),
        ("step_started", "prepare#0", 1), ("step_succeeded", "prepare#0", 1),
        ("step_started", "flaky_charge#0", 1), ("step_retrying", "flaky_charge#0", 1),
        ("run_resumed", None, None),
        ("step_started", "flaky_charge#0", 2), ("step_retrying", "flaky_charge#0", 2),
        ("run_resumed", None, None),
        ("step_started", "flaky_charge#0", 3), ("step_succeeded", "flaky_charge#0", 3),
        ("step_started", "finish#0", 1), ("step_succeeded", "finish#0", 1),
        ("run_succeeded", None, None),
    ], seen
    entries = recorded(redis_client, result.id)
    assert all(e["task"] == "apps.ops_app.checkout" for e in entries)
    assert all(e["sender"] == "apps.ops_app.checkout" for e in entries)
    retrying = [e for e in entries if e["signal"] == "step_retrying"]
    assert retrying[0]["error"] == "ConnectionError" and retrying[0]["delay"] > 0
    assert retrying[0]["logs"] == 1  # the step's one warning line
    assert [e["completed"] for e in entries if e["signal"] == "run_resumed"] == [1, 1]
    assert entries[-1]["result"] == "done ch-3"


def test_signals_of_a_dead_letter_a_sleep_and_a_cancel(start_worker, tag, redis_client):
    """A permanent failure sends step_failed and run_dead_lettered; a sleep run_suspended;
    cancel_run run_cancelled."""
    from apps.ops_app import app, doomed, napper

    from celery_durable import cancel_run

    start_worker("apps.ops_app")
    failed = doomed.delay(tag)
    with pytest.raises(Exception, match="card declined"):
        failed.get(timeout=30)
    wait_for(lambda: any(e["signal"] == "run_dead_lettered"
                         for e in recorded(redis_client, failed.id)), 10, message="dead letter")
    entries = recorded(redis_client, failed.id)
    assert [e["signal"] for e in entries][-3:] == ["step_started", "step_failed",
                                                  "run_dead_lettered"]
    assert entries[-2]["step"] == "explode#0" and entries[-2]["logs"] == 50
    assert entries[-1]["failed_step"] == "explode#0"
    assert entries[-1]["error"] == "celery_durable.errors.PermanentError"

    sleeping = napper.delay(tag)
    wait_for(lambda: any(e["signal"] == "run_suspended"
                         for e in recorded(redis_client, sleeping.id)), 15, message="suspended")
    suspended = [e for e in recorded(redis_client, sleeping.id)
                 if e["signal"] == "run_suspended"]
    assert suspended == [{"signal": "run_suspended", "sender": "apps.ops_app.napper",
                          "task": "apps.ops_app.napper", "step": "sleep#0",
                          "status": "SLEEPING"}]
    assert cancel_run(sleeping.id, app=app)  # in this process: the test has the receivers too
    assert recorded(redis_client, sleeping.id)[-1]["signal"] == "run_cancelled"


class EventCapture:
    """A real ``app.events.Receiver`` in a thread, keeping every event it gets."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(
                conn, handlers={"*": self.events.append})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventCapture:
        self.thread.start()
        probe = f"probe-{time.time()}"

        def attached() -> bool:  # our own event came back: the queue is bound
            with self.app.events.default_dispatcher() as d:
                d.send("task-probe", uuid=probe)
            return any(e.get("uuid") == probe for e in list(self.events))

        wait_for(attached, 15, 0.2, "the event receiver to attach")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(timeout=5)

    def of(self, run_id: str, prefix: str = "task-step-") -> list[dict[str, Any]]:
        """Events of ``run_id`` whose type starts with ``prefix``, in arrival order."""
        return [e for e in list(self.events)
                if e.get("uuid") == run_id and e["type"].startswith(prefix)]


def test_worker_with_events_sends_step_events_in_order(start_worker, tag):
    """With -E every executed step sends task-step-* events, in order, with key and attempt."""
    from apps.ops_app import app, checkout

    start_worker("apps.ops_app", extra_args=["-E"], env={"TEST_RECORD_SIGNALS": "0"})
    with EventCapture(app) as capture:
        result = checkout.delay(tag, 1)
        assert result.get(timeout=30) == "done ch-2"
        wait_for(lambda: any(e["type"] == "task-succeeded" for e in capture.of(result.id, "")),
                 10, message="task-succeeded event")
        steps = [(e["type"], e["step"], e["attempt"]) for e in capture.of(result.id)]
    assert steps == [
        ("task-step-started", "prepare#0", 1), ("task-step-succeeded", "prepare#0", 1),
        ("task-step-started", "flaky_charge#0", 1), ("task-step-failed", "flaky_charge#0", 1),
        ("task-step-started", "flaky_charge#0", 2), ("task-step-succeeded", "flaky_charge#0", 2),
        ("task-step-started", "finish#0", 1), ("task-step-succeeded", "finish#0", 1),
    ], steps
    failed = next(e for e in capture.of(result.id) if e["type"] == "task-step-failed")
    assert failed["will_retry"] is True and failed["delay"] > 0
    assert failed["error"].startswith("ConnectionError: gateway timeout")
    assert failed["step_name"] == "flaky_charge" and failed["hostname"]


def test_worker_without_events_sends_no_step_events(start_worker, tag):
    """Without -E a worker sends no step events (the receivers are not even connected)."""
    from apps.ops_app import app, checkout

    worker = start_worker("apps.ops_app", env={"TEST_RECORD_SIGNALS": "0"})
    with EventCapture(app) as capture:
        result = checkout.delay(tag, 0)
        assert result.get(timeout=30) == "done ch-1"
        time.sleep(0.5)
        assert capture.of(result.id, "") == []  # no event at all about this run
        # Other sessions' workers may share the broker: look at this worker's events only.
        ours = [e for e in list(capture.events)
                if str(e.get("hostname", "")).startswith(f"{worker.name}@")]
        assert [e for e in ours if e["type"].startswith("task-step-")] == []


def test_flower_shows_step_states_while_a_run_executes(start_worker, flower, tag):  # noqa: F811
    """A real Flower following a -E worker shows STEP-STARTED while a slow step runs, then
    SUCCESS."""
    from apps.core_app import five_with_slow
    from test_flower import states_until_success

    start_worker("apps.core_app", extra_args=["-E"])
    time.sleep(1.0)  # let Flower's event consumer attach before the run starts
    result = five_with_slow.delay(tag, 2.0)
    seen = states_until_success(flower, result.id)
    assert "STEP-STARTED" in seen, seen
    assert seen[-1] == "SUCCESS"
