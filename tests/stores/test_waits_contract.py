"""The durable-wait part of the store contract: timers, mailboxes, first-write-wins delivery.

Runs against every store of the ``store`` fixture; a store whose wait
methods still raise NotImplementedError (the base class default) is skipped.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from celery_durable.records import Begin, RunStatus, StepRecord, StepStatus, WaitInfo
from celery_durable.stores.base import CheckpointStore

BUFFER = 60.0
EXPIRED = 0.35  # sleep this long to be sure a 0.2 s timer or buffer passed


def new_id() -> str:
    return f"run-{uuid.uuid4().hex}"


def begin(store: CheckpointStore, run_id: str, owner: str = "host:1:1") -> Begin:
    return store.begin(run_id, task="tasks.example", args="[]", kwargs="{}", options={},
                       owner=owner, lease_ttl=30.0)


@pytest.fixture
def ws(store: CheckpointStore) -> CheckpointStore:
    """The store, if it supports waits."""
    try:
        store.unregister_waiter("probe", "probe", "probe")
    except NotImplementedError:
        pytest.skip(f"{type(store).__name__} does not support waits yet")
    return store


def ev() -> tuple[str, str]:
    return f"ev-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4().hex[:8]}"


def pending_step(position: int, key: str) -> StepRecord:
    return StepRecord(position, key, key.split("#")[0], StepStatus.SUCCEEDED, 1,
                      value='{"kind":"x"}', started_at=1000.0)


def park_waiting(store: CheckpointStore, name: str, key: str, *, until: float | None = None,
                 after: int = 0) -> tuple[str, int]:
    run_id = new_id()
    b = begin(store, run_id)
    wait = WaitInfo("event", f"wait_for_event:{name}#0", 0, b.token, until=until, event=name,
                    key=key, after=after)
    assert store.suspend(run_id, b.token, status=RunStatus.WAITING, wait=wait,
                         step=pending_step(0, wait.step))
    return run_id, b.token


def test_suspend_needs_the_lease_and_records_the_wait(ws: CheckpointStore) -> None:
    """suspend writes the step, status and wait under the lease; a stale token is refused."""
    run_id = new_id()
    b = begin(ws, run_id)
    until = time.time() + 30
    wait = WaitInfo("sleep", "sleep#0", 0, b.token, until=until)
    assert not ws.suspend(run_id, b.token + 1, status=RunStatus.SLEEPING, wait=wait)
    assert ws.suspend(run_id, b.token, status=RunStatus.SLEEPING, wait=wait,
                      step=pending_step(0, "sleep#0"))
    run = ws.get_run(run_id)
    assert run is not None and run.status is RunStatus.SLEEPING and not run.owner
    assert run.wait is not None
    assert (run.wait.kind, run.wait.step, run.wait.wait_id) == ("sleep", "sleep#0", b.token)
    assert run.wait.until == pytest.approx(until, abs=1e-3)
    assert run.wait.resolution is None
    assert [s.key for s in run.steps] == ["sleep#0"]
    assert begin(ws, run_id, "host:2:2").outcome == "early"
    listed = [r for r in ws.list_runs(status=RunStatus.SLEEPING) if r.id == run_id]
    assert listed and listed[0].wait is not None and listed[0].wait.kind == "sleep"


def test_a_due_timer_is_claimed_once(ws: CheckpointStore) -> None:
    """A sleep whose wake time passed is published by exactly one claim."""
    run_id = new_id()
    b = begin(ws, run_id)
    wait = WaitInfo("sleep", "sleep#0", 0, b.token, until=time.time() + 0.2)
    assert ws.suspend(run_id, b.token, status=RunStatus.SLEEPING, wait=wait)
    time.sleep(EXPIRED)
    assert run_id in ws.due_runs(1000)
    claims = [ws.claim_due(run_id, grace=60, max_recoveries=5) for _ in range(3)]
    assert [c.action for c in claims].count("publish") == 1
    run = ws.get_run(run_id)
    assert run is not None and run.status is RunStatus.PENDING
    assert begin(ws, run_id).outcome == "acquired"


def test_a_wait_without_timeout_is_never_due(ws: CheckpointStore) -> None:
    """A WAITING run without a timeout is not published by the sweeper."""
    name, key = ev()
    run_id, _ = park_waiting(ws, name, key)
    claim = ws.claim_due(run_id, grace=60, max_recoveries=5)
    assert claim.action != "publish"
    run = ws.get_run(run_id)
    assert run is not None and run.status is RunStatus.WAITING


def test_mailbox_keeps_events_for_late_waiters(ws: CheckpointStore) -> None:
    """An event posted before anyone waits is found by register_waiter, once per cursor."""
    name, key = ev()
    event, waiters = ws.post_event(name, key, '{"a":1}', buffer=BUFFER)
    assert waiters == []
    found = ws.register_waiter("r1", name, key, after=0, buffer=BUFFER)
    assert found is not None
    assert (found.id, found.payload, found.seq) == (event.id, '{"a":1}', event.seq)
    assert ws.register_waiter("r1", name, key, after=event.seq, buffer=BUFFER) is None
    assert ws.register_waiter("r1", "other", key, after=0, buffer=BUFFER) is None


def test_events_get_increasing_seqs_and_come_oldest_first(ws: CheckpointStore) -> None:
    """Rapid events of one key get strictly increasing seqs; a waiter gets the oldest new one."""
    name, key = ev()
    events = [ws.post_event(name, key, str(i), buffer=BUFFER)[0] for i in range(20)]
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    first = ws.register_waiter("r", name, key, after=0, buffer=BUFFER)
    assert first is not None and first.payload == "0"
    nxt = ws.register_waiter("r", name, key, after=events[4].seq, buffer=BUFFER)
    assert nxt is not None and nxt.payload == "5"


def test_events_older_than_the_buffer_are_dropped(ws: CheckpointStore) -> None:
    """An event past its buffer, or posted with buffer 0, is not delivered to a late waiter."""
    name, key = ev()
    ws.post_event(name, key, "old", buffer=0.2)
    ws.post_event(name, key + "x", "never kept", buffer=0)
    time.sleep(EXPIRED)
    assert ws.register_waiter("r", name, key, after=0, buffer=0.2) is None
    assert ws.register_waiter("r", name, key + "x", after=0, buffer=BUFFER) is None


def test_delivery_is_first_write_wins(ws: CheckpointStore) -> None:
    """A waiting run takes one event: repeated or later deliveries and wakes do nothing."""
    name, key = ev()
    run_id, token = park_waiting(ws, name, key)
    assert ws.register_waiter(run_id, name, key, after=0, buffer=BUFFER) is None
    e1, waiters = ws.post_event(name, key, '"one"', buffer=BUFFER)
    assert waiters == [run_id]
    runs = ws.deliver_event(e1, waiters, grace=60)
    assert [r.id for r in runs] == [run_id]
    assert runs[0].status is RunStatus.PENDING and runs[0].not_before is None
    e2, _ = ws.post_event(name, key, '"two"', buffer=BUFFER)
    assert ws.deliver_event(e1, [run_id], grace=60) == []
    assert ws.deliver_event(e2, [run_id], grace=60) == []
    assert ws.wake(run_id, grace=60) is None
    run = ws.get_run(run_id)
    assert run is not None and run.wait is not None and run.wait.resolution is not None
    res = json.loads(run.wait.resolution)
    assert (res["how"], res["id"], int(res["seq"]), res["payload"]) == (
        "event", e1.id, e1.seq, '"one"')
    assert int(res["wid"]) == token


def test_delivery_checks_name_key_and_cursor(ws: CheckpointStore) -> None:
    """A run is not resumed by another key's event, nor by an event not newer than its cursor."""
    name, key = ev()
    old, _ = ws.post_event(name, key, "old", buffer=BUFFER)
    run_id, _ = park_waiting(ws, name, key, after=old.seq)
    assert ws.deliver_event(old, [run_id], grace=60) == []
    other, _ = ws.post_event(name, key + "-other", "x", buffer=BUFFER)
    assert ws.deliver_event(other, [run_id], grace=60) == []
    new, _ = ws.post_event(name, key, "new", buffer=BUFFER)
    assert [r.id for r in ws.deliver_event(new, [run_id], grace=60)] == [run_id]


def test_every_waiter_gets_the_event(ws: CheckpointStore) -> None:
    """Several runs waiting on one name and key are all resumed by one event."""
    name, key = ev()
    ids = []
    for _ in range(3):
        run_id, _ = park_waiting(ws, name, key)
        ws.register_waiter(run_id, name, key, after=0, buffer=BUFFER)
        ids.append(run_id)
    event, waiters = ws.post_event(name, key, "p", buffer=BUFFER)
    assert sorted(waiters) == sorted(ids)
    assert sorted(r.id for r in ws.deliver_event(event, waiters, grace=60)) == sorted(ids)


def test_gone_runs_leave_the_waiter_set(ws: CheckpointStore) -> None:
    """Delivering to a run that does not exist removes it from the waiters."""
    name, key = ev()
    ws.register_waiter("no-such-run", name, key, after=0, buffer=BUFFER)
    event, waiters = ws.post_event(name, key, "p", buffer=BUFFER)
    assert waiters == ["no-such-run"]
    assert ws.deliver_event(event, waiters, grace=60) == []
    assert ws.post_event(name, key, "p", buffer=BUFFER)[1] == []


def test_timeout_and_event_race_has_one_winner(ws: CheckpointStore) -> None:
    """Once the sweeper claimed a timed-out wait, a late event no longer resumes it."""
    name, key = ev()
    run_id, _ = park_waiting(ws, name, key, until=time.time() + 0.2)
    time.sleep(EXPIRED)
    assert ws.claim_due(run_id, grace=60, max_recoveries=5).action == "publish"
    event, _ = ws.post_event(name, key, "late", buffer=BUFFER)
    assert ws.deliver_event(event, [run_id], grace=60) == []


def test_wake_resumes_a_parked_run_once(ws: CheckpointStore) -> None:
    """wake resolves a sleeping run's wait once; running and unknown runs are not woken."""
    run_id = new_id()
    b = begin(ws, run_id)
    assert ws.wake(run_id, grace=60) is None  # RUNNING
    wait = WaitInfo("sleep", "sleep#0", 0, b.token, until=time.time() + 10 * 86400)
    assert ws.suspend(run_id, b.token, status=RunStatus.SLEEPING, wait=wait)
    run = ws.wake(run_id, grace=60)
    assert run is not None and run.status is RunStatus.PENDING and run.not_before is None
    assert run.wait is not None and json.loads(run.wait.resolution or "{}")["how"] == "woken"
    assert ws.wake(run_id, grace=60) is None
    assert ws.wake(new_id(), grace=60) is None
    assert begin(ws, run_id).outcome == "acquired"


def test_concurrent_deliveries_and_wakes_resume_once(ws: CheckpointStore) -> None:
    """Eight threads racing to deliver and wake one waiting run resume it exactly once."""
    name, key = ev()
    run_id, _ = park_waiting(ws, name, key, until=time.time() + 60)
    event, _ = ws.post_event(name, key, "p", buffer=BUFFER)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        if i % 2:
            results.append(ws.wake(run_id, grace=60) is not None)
        else:
            results.append(bool(ws.deliver_event(event, [run_id], grace=60)))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
