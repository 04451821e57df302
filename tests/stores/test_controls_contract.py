"""The run-control part of the store contract: creation, cancel, keys, children, slots.

Runs against every store of the ``store`` fixture (memory, Redis, Django on
SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from celery_durable import InvalidRunStateError
from celery_durable.records import Begin, NewRun, RunStatus, StepRecord, StepStatus, WaitInfo
from celery_durable.stores.base import CheckpointStore

TTL = 0.2
EXPIRED = 0.35


def new_id() -> str:
    return f"run-{uuid.uuid4().hex}"


def begin(store: CheckpointStore, run_id: str, owner: str = "host:1:1",
          options: dict[str, object] | None = None) -> Begin:
    return store.begin(run_id, task="tasks.example", args="[]", kwargs="{}",
                       options=options if options is not None else {"priority": 7},
                       owner=owner, lease_ttl=30.0)


def step(position: int) -> StepRecord:
    return StepRecord(position, f"s#{position}", "s", StepStatus.SUCCEEDED, 1, value='"v"',
                      started_at=1000.0, finished_at=1000.5)


def children_wait(token: int, position: int = 1) -> WaitInfo:
    return WaitInfo("children", f"gather#{position}", position, token)


# -- create_runs / get_runs -------------------------------------------------------------------


def test_create_runs_creates_pending_runs_once(store: CheckpointStore) -> None:
    """New runs are PENDING with their parent and key; creating them again changes nothing."""
    parent, a, b = new_id(), new_id(), new_id()
    specs = [NewRun(a, "tasks.child", "[1]", "{}", {}, parent=parent),
             NewRun(b, "tasks.child", "[2]", '{"x": 1}', {"queue": "q"}, idempotency_key="k-1")]
    assert store.create_runs(specs, grace=60) == [True, True]
    assert store.create_runs([NewRun(a, "tasks.other", "[9]")], grace=60) == [False]
    got = store.get_runs([b, new_id(), a])
    assert got[1] is None
    run_b, run_a = got[0], got[2]
    assert run_a is not None and run_b is not None
    assert (run_a.status, run_a.task, run_a.args, run_a.parent) == (
        RunStatus.PENDING, "tasks.child", "[1]", parent)
    assert (run_b.kwargs, run_b.options, run_b.idempotency_key) == ('{"x": 1}', {"queue": "q"},
                                                                    "k-1")
    assert run_a.due_at is not None and run_a.due_at > time.time() + 50
    assert run_a.steps == []


@pytest.mark.parametrize("final", [RunStatus.SUCCEEDED, RunStatus.FAILED])
def test_create_runs_replaces_a_finished_run_only_when_asked(store: CheckpointStore,
                                                             final: RunStatus) -> None:
    """A task id used again: with ``replace_finished`` a finished run (checkpoints and all)
    makes way for the new one; a run that is not finished never does."""
    done, live = new_id(), new_id()
    for run_id in (done, live):
        assert store.create_runs([NewRun(run_id, "tasks.example", "[1]")], grace=60) == [True]
        b = begin(store, run_id)
        assert store.save_step(run_id, b.token, step(0))
    assert store.finish(done, begin_token(store, done), status=final,
                        result="1")
    again = [NewRun(done, "tasks.again", "[2]"), NewRun(live, "tasks.again", "[2]")]
    assert store.create_runs(again, grace=60) == [False, False]
    assert store.create_runs(again, grace=60, replace_finished=True) == [True, False]
    fresh, untouched = store.get_run(done), store.get_run(live)
    assert fresh is not None and untouched is not None
    assert (fresh.status, fresh.task, fresh.args, fresh.steps, fresh.result) == (
        RunStatus.PENDING, "tasks.again", "[2]", [], None)
    assert untouched.status is RunStatus.RUNNING and len(untouched.steps) == 1
    assert begin(store, done).outcome == "acquired"


def begin_token(store: CheckpointStore, run_id: str) -> int:
    run = store.get_run(run_id)
    assert run is not None
    return run.token


def test_concurrent_creators_of_one_run_are_told_once(store: CheckpointStore) -> None:
    """Of eight threads creating the same runs at once, exactly one is told it created each.

    The caller told "created" publishes the run's message; two told so would
    send it twice (the idempotent trigger and child starts rely on this).
    """
    ids = [new_id() for _ in range(10)]
    barrier, told, errors = threading.Barrier(8), [], []

    def create() -> None:
        try:
            for run_id in ids:
                barrier.wait()
                told.append((run_id, store.create_runs([NewRun(run_id, "tasks.x")], grace=60)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            _close_django_connection(store)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(told) == 80
    for run_id in ids:
        answers = [made for rid, (made,) in told if rid == run_id]
        assert answers.count(True) == 1, (run_id, answers)
    assert all(run is not None for run in store.get_runs(ids))


def _close_django_connection(store: CheckpointStore) -> None:
    """A thread's own Django connection is closed when the thread is done with it."""
    if type(store).__module__.startswith("celery_durable_django"):
        from django.db import connections

        connections.close_all()


def test_a_created_run_is_due_after_its_grace(store: CheckpointStore) -> None:
    """A created run whose message never comes is due after the grace and claimed for publish."""
    run_id = new_id()
    store.create_runs([NewRun(run_id, "tasks.child")], grace=TTL)
    time.sleep(EXPIRED)
    assert run_id in store.due_runs()
    claim = store.claim_due(run_id, grace=60, max_recoveries=5)
    assert claim.action == "publish" and claim.run is not None
    assert claim.run.task == "tasks.child"


def test_first_delivery_of_a_created_run_fills_in_its_options(store: CheckpointStore) -> None:
    """A run created without options takes the routing of its first delivery, and keeps it."""
    run_id = new_id()
    store.create_runs([NewRun(run_id, "tasks.example", parent="p")], grace=60)
    first = begin(store, run_id, options={"priority": 9, "routing_key": "q"})
    assert first.outcome == "acquired"
    assert first.run.options == {"priority": 9, "routing_key": "q"}
    assert first.run.parent == "p"
    assert store.finish(run_id, first.token, status=RunStatus.SUCCEEDED, result="1")
    run = store.get_run(run_id)
    assert run is not None and run.options == {"priority": 9, "routing_key": "q"}


def test_a_routed_run_keeps_its_routing_and_gains_the_first_trace_header(
        store: CheckpointStore) -> None:
    """A run created with its routing only keeps it; a delivery adds the trace header once."""
    run_id = new_id()
    store.create_runs([NewRun(run_id, "tasks.example", options={"queue": "q"})], grace=60)
    header = {"durable_traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    first = begin(store, run_id, options={"routing_key": "q", "headers": header})
    assert first.outcome == "acquired"
    assert first.run.options == {"queue": "q", "headers": header}
    assert store.park(run_id, first.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    other = {"durable_traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
    second = begin(store, run_id, options={"routing_key": "q", "headers": other})
    assert second.run.options == {"queue": "q", "headers": header}  # the first one stays
    run = store.get_run(run_id)
    assert run is not None and run.options == {"queue": "q", "headers": header}


def test_a_registered_chain_survives_a_delivery_that_adds_headers(
        store: CheckpointStore) -> None:
    """The message options of a registered run (the rest of a chain, with empty argument
    lists) come back exactly as stored after a delivery adds its headers."""
    run_id = new_id()
    chain = [{"task": "tasks.add", "args": [], "kwargs": {}, "options": {},
              "subtask_type": None, "immutable": False}]
    store.create_runs([NewRun(run_id, "tasks.example",
                              options={"queue": "q", "chain": chain, "link": []})], grace=60)
    header = {"durable_traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    first = begin(store, run_id, options={"queue": "q", "headers": header})
    assert first.outcome == "acquired"
    expected = {"queue": "q", "chain": chain, "link": [], "headers": header}
    assert first.run.options == expected
    run = store.get_run(run_id)
    assert run is not None and run.options == expected


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_a_queued_run_ends_it(store: CheckpointStore) -> None:
    """A PENDING run becomes CANCELLED at once; its message then finds it finished."""
    run_id = new_id()
    store.create_runs([NewRun(run_id, "tasks.example")], grace=TTL)
    run = store.cancel(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED and run.finished_at
    time.sleep(EXPIRED)
    assert run_id not in store.due_runs()
    assert begin(store, run_id).outcome == "finished"


def test_cancel_a_running_run_fences_its_holder(store: CheckpointStore) -> None:
    """Cancelling a RUNNING run refuses its holder's next checkpoint, heartbeat and finish."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, step(0))
    cancelled = store.cancel(run_id)
    assert cancelled is not None and cancelled.status is RunStatus.CANCELLED
    assert not store.save_step(run_id, b.token, step(1))
    assert store.renew({run_id: b.token}, 30.0) == {run_id}
    assert not store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result="1")
    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert [s.position for s in run.steps] == [0]


def test_cancel_a_sleeping_run_drops_its_timer(store: CheckpointStore) -> None:
    """A SLEEPING run is cancelled at once and its timer no longer makes it due."""
    run_id = new_id()
    b = begin(store, run_id)
    wait = WaitInfo("sleep", "sleep#0", 0, b.token, until=time.time() + TTL)
    assert store.suspend(run_id, b.token, status=RunStatus.SLEEPING, wait=wait, step=step(0))
    assert store.cancel(run_id) is not None
    time.sleep(EXPIRED)
    assert run_id not in store.due_runs()
    assert store.wake(run_id, grace=60) is None


def test_cancel_a_missing_run(store: CheckpointStore) -> None:
    """A missing run is None, or with create_missing a CANCELLED record its message will find."""
    run_id = new_id()
    assert store.cancel(run_id) is None
    assert store.get_run(run_id) is None
    tomb = store.cancel(run_id, create_missing=True)
    assert tomb is not None and tomb.status is RunStatus.CANCELLED
    assert begin(store, run_id).outcome == "finished"


def test_cancel_refuses_succeeded_and_cancelled_runs(store: CheckpointStore) -> None:
    """A SUCCEEDED or already CANCELLED run cannot be cancelled; a FAILED one can."""
    done, failed = new_id(), new_id()
    b = begin(store, done)
    assert store.finish(done, b.token, status=RunStatus.SUCCEEDED, result="1")
    with pytest.raises(InvalidRunStateError):
        store.cancel(done)
    b = begin(store, failed)
    assert store.finish(failed, b.token, status=RunStatus.FAILED)
    assert store.cancel(failed) is not None
    with pytest.raises(InvalidRunStateError):
        store.cancel(failed)


# -- idempotency keys -------------------------------------------------------------------------


def test_idempotency_key_binds_once_until_it_expires(store: CheckpointStore) -> None:
    """The first claim binds the key; later ones get its run; after the TTL it binds anew."""
    key = f"order-{uuid.uuid4().hex[:6]}"
    assert store.claim_idempotency_key("t.a", key, "run-1", ttl=TTL) == "run-1"
    assert store.claim_idempotency_key("t.a", key, "run-2", ttl=TTL) == "run-1"
    assert store.claim_idempotency_key("t.b", key, "run-3", ttl=TTL) == "run-3"  # per task
    time.sleep(EXPIRED)
    assert store.claim_idempotency_key("t.a", key, "run-4", ttl=60) == "run-4"


def test_expired_idempotency_keys_are_purged_and_live_ones_kept(store: CheckpointStore) -> None:
    """Purging drops only expired keys; a live key still binds to its run afterwards."""
    expired, live = f"old-{uuid.uuid4().hex[:6]}", f"new-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        store.claim_idempotency_key("t.a", f"{expired}-{i}", f"run-{i}", ttl=TTL)
    store.claim_idempotency_key("t.a", live, "run-live", ttl=60)
    time.sleep(EXPIRED)
    first = store.purge_idempotency_keys(expired_before=time.time(), limit=2)
    rest = store.purge_idempotency_keys(expired_before=time.time())
    if type(store).__name__ == "RedisStore":  # its keys expire by themselves (TTL)
        assert (first, rest) == (0, 0)
    else:  # (a shared test database may hold other tests' expired keys too)
        assert first == 2 and first + rest >= 3
    assert store.purge_idempotency_keys(expired_before=time.time()) == 0
    assert store.claim_idempotency_key("t.a", live, "run-other", ttl=60) == "run-live"
    if type(store).__module__.startswith("celery_durable_django"):
        from celery_durable_django.models import IdempotencyKey

        left = IdempotencyKey.objects.using(store.using).filter(key__startswith=expired)
        assert not left.exists()


def test_concurrent_claims_of_one_key_agree(store: CheckpointStore) -> None:
    """Eight threads claiming one key at once all get the same run id, one of theirs."""
    key = f"order-{uuid.uuid4().hex[:6]}"
    barrier, got, errors = threading.Barrier(8), [], []

    def claim(i: int) -> None:
        try:
            barrier.wait()
            got.append(store.claim_idempotency_key("t.a", key, f"run-{i}", ttl=60))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(got) == 8 and len(set(got)) == 1 and got[0].startswith("run-")


# -- child notices ----------------------------------------------------------------------------


def test_notify_resumes_a_parent_parked_at_its_children(store: CheckpointStore) -> None:
    """A parent parked at a children wait is resumed once by a child's notice."""
    parent = new_id()
    b = begin(store, parent)
    assert store.suspend_children(parent, b.token, wait=children_wait(b.token), recheck=60,
                                  need=1, step=step(1)) == "parked"
    run = store.get_run(parent)
    assert run is not None and run.status is RunStatus.WAITING
    assert run.wait is not None and run.wait.kind == "children" and run.wait.position == 1
    assert [s.position for s in run.steps] == [1]
    resumed = store.notify_parent(parent, grace=60)
    assert resumed is not None and resumed.status is RunStatus.PENDING
    assert resumed.wait is not None and resumed.children_done == 1
    assert json.loads(resumed.wait.resolution or "{}")["how"] == "child"
    assert store.notify_parent(parent, grace=60) is None  # not parked any more
    again = begin(store, parent)
    assert again.outcome == "acquired" and again.run.children_done == 2


def test_a_parent_resumes_only_when_every_awaited_child_reported(
        store: CheckpointStore) -> None:
    """Parked with ``need`` = its count + 3, the parent sleeps through two notices and is
    resumed by the third: one wake for three children, not three."""
    parent = new_id()
    b = begin(store, parent)
    assert store.notify_parent(parent, grace=60) is None  # an earlier step's child
    assert store.suspend_children(parent, b.token, wait=children_wait(b.token), recheck=60,
                                  need=1 + 3) == "parked"
    for count in (2, 3):
        assert store.notify_parent(parent, grace=60) is None
        run, = store.get_runs([parent])  # (what a parent reads with its children)
        assert run is not None and run.status is RunStatus.WAITING
        assert run.children_done == count
    resumed = store.notify_parent(parent, grace=60)
    assert resumed is not None and resumed.status is RunStatus.PENDING
    assert resumed.children_done == 4


def test_a_notice_before_parking_keeps_the_parent_running(store: CheckpointStore) -> None:
    """Children that reported before the parent parks (the count reached ``need``) make the
    park say ``notice``; a park with a higher ``need`` then parks."""
    parent = new_id()
    b = begin(store, parent)
    assert store.notify_parent(parent, grace=60) is None
    wait = children_wait(b.token)
    assert store.suspend_children(parent, b.token, wait=wait, recheck=60,
                                  need=1) == "notice"
    run = store.get_run(parent)
    assert run is not None and run.status is RunStatus.RUNNING
    assert store.save_step(parent, b.token, step(0))  # still holds the lease
    assert store.suspend_children(parent, b.token, wait=wait, recheck=60,
                                  need=2) == "parked"
    assert store.suspend_children(parent, b.token, wait=wait, recheck=60,
                                  need=2) == "lost"


def test_a_child_finishing_between_the_parents_two_reads_never_strands_it(
        store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent reads its notice count, then its children (``children._look``), and parks
    with need = count + unfinished. A child that finishes and notifies between the two reads
    is seen finished, so the last unfinished child's notice still resumes the parent. (Read
    in the other order, that child would be counted twice and the parent left parked until
    the sweeper's recheck.)"""
    from celery_durable.config import DurableSettings
    from celery_durable.controls.children import _look
    from celery_durable.engine.context import RunContext
    from celery_durable.retry import RetryPolicy
    from celery_durable.serialization import get_serializer

    parent = new_id()
    b = begin(store, parent)
    ids = [f"{parent}~1.{i}" for i in range(2)]
    assert store.create_runs([NewRun(id=i, task="t", parent=parent) for i in ids],
                             grace=60) == [True, True]

    def finish_child(child: str) -> None:
        c = begin(store, child, owner="host:2:2")
        assert store.finish(child, c.token, status=RunStatus.SUCCEEDED, result="1")
        assert store.notify_parent(parent, grace=60) is None  # the parent is running

    reads: list[list[str]] = []
    real = store.get_runs

    def get_runs(run_ids: list[str]) -> list[object]:
        reads.append(list(run_ids))
        out = real(run_ids)
        if len(reads) == 1:
            finish_child(ids[0])  # lands between the two reads
        return out

    monkeypatch.setattr(store, "get_runs", get_runs)
    ctx = RunContext(task=None, run_id=parent, token=b.token, store=store,  # type: ignore[arg-type]
                     settings=DurableSettings(), serializer=get_serializer("json"),
                     policy=RetryPolicy(), checkpoints={})
    outcome = "notice"
    while outcome == "notice":  # children._children: look, park; on notice look again
        counted, runs = _look(ctx, ids)
        monkeypatch.undo()
        unfinished = sum(1 for r in runs if r is None or not r.status.finished)
        outcome = store.suspend_children(parent, b.token, wait=children_wait(b.token),
                                         recheck=60, need=counted + unfinished)
    assert reads[:2] == [[parent], ids] and outcome == "parked"
    c = begin(store, ids[1], owner="host:3:3")
    assert store.finish(ids[1], c.token, status=RunStatus.SUCCEEDED, result="1")
    resumed = store.notify_parent(parent, grace=60)
    assert resumed is not None and resumed.status is RunStatus.PENDING


def test_a_parked_parent_is_rechecked_by_the_sweeper(store: CheckpointStore) -> None:
    """A parent at a children wait is due after ``recheck`` (should a notice be lost)."""
    parent = new_id()
    b = begin(store, parent)
    assert store.suspend_children(parent, b.token, wait=children_wait(b.token),
                                  recheck=TTL, need=1) == "parked"
    time.sleep(EXPIRED)
    assert parent in store.due_runs()
    assert store.claim_due(parent, grace=60, max_recoveries=5).action == "publish"


def test_notify_a_missing_or_finished_parent_does_nothing(store: CheckpointStore) -> None:
    """A notice to a missing or finished parent returns None and creates nothing."""
    missing, done = new_id(), new_id()
    assert store.notify_parent(missing, grace=60) is None
    assert store.get_run(missing) is None
    b = begin(store, done)
    assert store.finish(done, b.token, status=RunStatus.SUCCEEDED, result="1")
    assert store.notify_parent(done, grace=60) is None
    finished = store.get_run(done)
    assert finished is not None and finished.children_done == 0


# -- concurrency slots ------------------------------------------------------------------------


def test_slots_are_limited_and_handed_over_fifo(store: CheckpointStore) -> None:
    """Two slots: the third and fourth runs queue; releases hand slots over oldest first."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    assert store.acquire_slot(group, "a", limit=2, ttl=30)
    assert store.acquire_slot(group, "b", limit=2, ttl=30)
    assert store.acquire_slot(group, "a", limit=2, ttl=30)  # already holds one
    assert not store.acquire_slot(group, "c", limit=2, ttl=30)
    time.sleep(0.01)
    assert not store.acquire_slot(group, "d", limit=2, ttl=30)
    assert store.release_slot(group, "a", limit=2) == ["c"]
    assert not store.acquire_slot(group, "d", limit=2, ttl=30)  # c is ahead of d
    assert not store.acquire_slot(group, "e", limit=2, ttl=30)  # newcomers queue too
    assert store.acquire_slot(group, "c", limit=2, ttl=30)
    assert store.release_slot(group, "b", limit=2) == ["d"]
    assert store.release_slot(group, "c", limit=2) == ["d", "e"]
    assert store.acquire_slot(group, "e", limit=2, ttl=30)  # one ahead, two free
    assert store.acquire_slot(group, "d", limit=2, ttl=30)


def test_a_slot_expires_unless_renewed(store: CheckpointStore) -> None:
    """A slot not renewed within its TTL is free again; a renewed one is kept."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    assert store.acquire_slot(group, "kept", limit=2, ttl=TTL)
    assert store.acquire_slot(group, "crashed", limit=2, ttl=TTL)
    assert not store.acquire_slot(group, "next", limit=2, ttl=TTL)
    for _ in range(3):
        time.sleep(TTL / 2)
        store.renew_slots({group: ["kept"]}, TTL)
    assert store.acquire_slot(group, "next", limit=2, ttl=30)  # "crashed" expired
    assert not store.acquire_slot(group, "other", limit=2, ttl=30)  # "kept" still holds


def test_an_abandoned_queue_entry_expires(store: CheckpointStore) -> None:
    """A queued run that stops asking leaves the queue after twice the TTL."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    assert store.acquire_slot(group, "a", limit=1, ttl=30)
    assert not store.acquire_slot(group, "gone", limit=1, ttl=TTL)
    time.sleep(0.01)
    assert not store.acquire_slot(group, "b", limit=1, ttl=30)
    time.sleep(2 * TTL + 0.1)
    assert store.release_slot(group, "a", limit=1) == ["b"]
