"""The CheckpointStore contract: every store (memory, Redis, Django) must pass all of it."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import pytest

from celery_durable import InvalidRunStateError
from celery_durable.records import ErrorInfo, RunStatus, StepRecord, StepStatus
from celery_durable.stores.base import CheckpointStore, RunHistory, run_history_of

TTL = 0.2      # a lease short enough to expire within a test
EXPIRED = 0.35  # sleep this long to be sure a TTL lease (or a due time) passed


def new_id() -> str:
    return f"run-{uuid.uuid4().hex}"


def begin(store: CheckpointStore, run_id: str, owner: str = "host:1:1", *,
          ttl: float = 30.0, task: str = "tasks.example", args: str = "[1, 2]",
          kwargs: str = '{"k": "v"}', max_recoveries: int = 5,
          steal_from: str | None = None) -> Any:
    return store.begin(run_id, task=task, args=args, kwargs=kwargs,
                       options={"routing_key": "q", "priority": 3}, owner=owner,
                       lease_ttl=ttl, max_recoveries=max_recoveries, steal_from=steal_from)


def succeeded(position: int, key: str | None = None, value: str = '"v"',
              attempts: int = 1) -> StepRecord:
    key = key or f"s{position}#0"
    return StepRecord(position, key, key.split("#")[0], StepStatus.SUCCEEDED, attempts,
                      value=value, started_at=1000.0 + position, finished_at=1000.5 + position)


def failed(position: int, key: str | None = None, status: StepStatus = StepStatus.FAILED,
           attempts: int = 3) -> StepRecord:
    key = key or f"s{position}#0"
    return StepRecord(position, key, key.split("#")[0], status, attempts,
                      error=ErrorInfo("builtins.ValueError", "boom", "Traceback ...\nboom"),
                      started_at=2000.0, finished_at=2000.5)


# -- begin: create, acquire, busy, early, finished, dead -------------------------------------


def test_begin_creates_the_run_and_acquires_the_lease(store: CheckpointStore) -> None:
    """The first delivery creates the run, RUNNING under its lease, with its args and options."""
    run_id = new_id()
    b = begin(store, run_id, "host:1:1")
    assert b.outcome == "acquired"
    assert b.token > 0
    run = b.run
    assert run.id == run_id and run.status is RunStatus.RUNNING
    assert (run.task, run.args, run.kwargs) == ("tasks.example", "[1, 2]", '{"k": "v"}')
    assert run.options == {"routing_key": "q", "priority": 3}
    assert run.owner == "host:1:1"
    assert run.steps == [] and run.recoveries == 0
    assert run.created_at is not None and run.started_at is not None
    assert run.lease_expires is not None and run.lease_expires > time.time() + 20
    stored = store.get_run(run_id)
    assert stored is not None and stored.status is RunStatus.RUNNING and stored.token == b.token


def test_begin_while_another_holds_a_live_lease_is_busy(store: CheckpointStore) -> None:
    """A second delivery while the lease is live is told ``busy`` and who holds it."""
    run_id = new_id()
    first = begin(store, run_id, "host:1:1")
    second = begin(store, run_id, "host:2:2")
    assert second.outcome == "busy"
    assert second.run.owner == "host:1:1"
    assert store.save_step(run_id, first.token, succeeded(0))  # the holder is unaffected


def test_begin_does_not_overwrite_the_stored_arguments(store: CheckpointStore) -> None:
    """Later deliveries never replace the arguments recorded when the run was created."""
    run_id = new_id()
    first = begin(store, run_id, ttl=TTL, args="[1]")
    assert store.park(run_id, first.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    again = begin(store, run_id, "host:2:2", args="[999]", kwargs="{}", task="other")
    assert again.outcome == "acquired"
    assert (again.run.args, again.run.kwargs, again.run.task) == ("[1]", '{"k": "v"}',
                                                                  "tasks.example")


def test_begin_returns_every_checkpoint(store: CheckpointStore) -> None:
    """A new delivery receives all checkpoints of the run, ordered by position."""
    run_id = new_id()
    first = begin(store, run_id)
    for pos in (0, 1, 2):
        assert store.save_step(run_id, first.token, succeeded(pos, value=f'"v{pos}"'))
    assert store.park(run_id, first.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      step=failed(3, status=StepStatus.RETRYING, attempts=1))
    again = begin(store, run_id, "host:2:2")
    assert again.outcome == "acquired" and again.token > first.token
    assert [(s.position, s.key, s.status, s.value) for s in again.steps] == [
        (0, "s0#0", StepStatus.SUCCEEDED, '"v0"'), (1, "s1#0", StepStatus.SUCCEEDED, '"v1"'),
        (2, "s2#0", StepStatus.SUCCEEDED, '"v2"'), (3, "s3#0", StepStatus.RETRYING, None)]
    assert again.steps[3].attempts == 1
    assert again.steps[3].error == ErrorInfo("builtins.ValueError", "boom",
                                                  "Traceback ...\nboom")
    assert again.run.recoveries == 0  # resuming a parked run is not a recovery


def test_a_resumed_delivery_replays_its_successes_without_building_their_records(
        store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay through ``run_step``: each success returns its value and its function does not
    run; on-demand checkpoints answer through ``succeeded_value`` and build no record
    (only the retried step, a RETRYING record, is read in full)."""
    from celery_durable.config import DurableSettings
    from celery_durable.engine.context import RunContext
    from celery_durable.engine.steps import run_step
    from celery_durable.records import OnDemandCheckpoints
    from celery_durable.retry import RetryPolicy
    from celery_durable.serialization import get_serializer

    run_id = new_id()
    first = begin(store, run_id)
    for pos in range(4):
        assert store.save_step(run_id, first.token,
                               succeeded(pos, key=f"w#{pos}", value=str(pos * 10)))
    assert store.park(run_id, first.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      step=failed(4, key="flaky#0", status=StepStatus.RETRYING, attempts=1))
    again = begin(store, run_id, "host:2:2")
    ctx = RunContext(task=None, run_id=run_id, token=again.token, store=store,  # type: ignore[arg-type]
                     settings=DurableSettings(), serializer=get_serializer("json"),
                     policy=RetryPolicy(), checkpoints=again.checkpoints)
    built: list[int] = []
    if isinstance(again.checkpoints, OnDemandCheckpoints):
        real_get = again.checkpoints.get
        monkeypatch.setattr(again.checkpoints, "get",
                            lambda position, default=None: built.append(position) or real_get(
                                position, default))

    def must_not_run() -> None:
        raise AssertionError("a completed step ran again")

    assert [run_step(ctx, "w", must_not_run, (), {}, {}) for _ in range(4)] == [0, 10, 20, 30]
    assert run_step(ctx, "flaky", lambda: "ran", (), {}, {}) == "ran"
    if isinstance(again.checkpoints, OnDemandCheckpoints):
        assert built == [4]


def test_begin_on_a_parked_run_is_early_until_its_delay_passes(store: CheckpointStore) -> None:
    """A run parked for a retry refuses deliveries (``early``) until the delay has passed."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=TTL, due_in=60,
                      step=failed(0, status=StepStatus.RETRYING, attempts=1))
    early = begin(store, run_id, "host:2:2")
    assert early.outcome == "early"
    assert early.run.status is RunStatus.RETRYING and early.run.owner == ""
    assert early.run.not_before is not None and early.run.not_before > time.time()
    time.sleep(EXPIRED)
    later = begin(store, run_id, "host:2:2")
    assert later.outcome == "acquired" and later.run.recoveries == 0


def test_begin_on_a_finished_run_is_finished(store: CheckpointStore) -> None:
    """Deliveries of a finished run do nothing and see its final state."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='{"ok": 1}')
    again = begin(store, run_id, "host:2:2")
    assert again.outcome == "finished"
    assert again.run.status is RunStatus.SUCCEEDED
    assert again.run.result == '{"ok": 1}'
    assert again.run.finished_at is not None and again.run.owner == ""


def test_expired_lease_is_taken_over_as_a_recovery(store: CheckpointStore) -> None:
    """After the holder's lease expires another delivery takes over and a recovery is counted."""
    run_id = new_id()
    first = begin(store, run_id, "host:1:1", ttl=TTL)
    assert store.save_step(run_id, first.token, succeeded(0))
    time.sleep(EXPIRED)
    second = begin(store, run_id, "host:2:2")
    assert second.outcome == "acquired"
    assert second.token > first.token
    assert second.run.recoveries == 1
    assert second.run.owner == "host:2:2"
    assert [s.key for s in second.steps] == ["s0#0"]


def test_steal_from_a_dead_holder_takes_a_live_lease(store: CheckpointStore) -> None:
    """``steal_from`` names a holder known dead: its live lease is taken over at once."""
    run_id = new_id()
    first = begin(store, run_id, "host:1:1")
    wrong = begin(store, run_id, "host:2:2", steal_from="host:9:9")
    assert wrong.outcome == "busy"
    stolen = begin(store, run_id, "host:2:2", steal_from="host:1:1")
    assert stolen.outcome == "acquired" and stolen.token > first.token
    assert stolen.run.recoveries == 1
    assert not store.save_step(run_id, first.token, succeeded(0))


def test_recoveries_past_the_cap_dead_letter_the_run(store: CheckpointStore) -> None:
    """Taking over a RUNNING run more than ``max_recoveries`` times ends it FAILED (``dead``)."""
    run_id = new_id()
    b = begin(store, run_id, "host:1:1", ttl=TTL, max_recoveries=1)
    assert store.save_step(run_id, b.token, succeeded(0))
    time.sleep(EXPIRED)
    b = begin(store, run_id, "host:2:2", ttl=TTL, max_recoveries=1)
    assert b.outcome == "acquired" and b.run.recoveries == 1
    time.sleep(EXPIRED)
    dead = begin(store, run_id, "host:3:3", ttl=TTL, max_recoveries=1)
    assert dead.outcome == "dead"
    assert dead.run.status is RunStatus.FAILED
    assert dead.run.error is not None and dead.run.error.type.endswith("WorkerLostError")
    assert "max_recoveries=1" in dead.run.error.message
    assert not store.save_step(run_id, b.token, succeeded(1))
    assert begin(store, run_id, "host:4:4").outcome == "finished"
    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.FAILED
    assert [s.key for s in run.steps] == ["s0#0"]  # checkpoints are kept
    assert run_id not in store.due_runs()


# -- fencing ---------------------------------------------------------------------------------


def test_stale_token_writes_are_refused(store: CheckpointStore) -> None:
    """Once another delivery holds the lease, the old token's save/park/finish all fail."""
    run_id = new_id()
    old = begin(store, run_id, "host:1:1")
    assert store.save_step(run_id, old.token, succeeded(0, value='"old"'))
    new = begin(store, run_id, "host:2:2", steal_from="host:1:1")
    assert not store.save_step(run_id, old.token, succeeded(0, value='"stale"'))
    assert not store.save_step(run_id, old.token, succeeded(1, value='"stale"'))
    assert not store.park(run_id, old.token, status=RunStatus.RETRYING, delay=60, due_in=60,
                          step=failed(1, status=StepStatus.RETRYING))
    assert not store.finish(run_id, old.token, status=RunStatus.SUCCEEDED, result='"x"')
    assert not store.finish(run_id, old.token, status=RunStatus.FAILED,
                            error=ErrorInfo("E", "m"))
    run = store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.RUNNING and run.owner == "host:2:2" and run.token == new.token
    assert [(s.position, s.value) for s in run.steps] == [(0, '"old"')]
    assert store.save_step(run_id, new.token, succeeded(1, value='"new"'))


def test_writes_after_releasing_the_lease_are_refused(store: CheckpointStore) -> None:
    """Parking or finishing releases the lease: the same token cannot write afterwards."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    assert not store.save_step(run_id, b.token, succeeded(0))
    assert not store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='"x"')
    b2 = begin(store, run_id, "host:2:2")
    assert store.finish(run_id, b2.token, status=RunStatus.SUCCEEDED, result='"x"')
    assert not store.finish(run_id, b2.token, status=RunStatus.FAILED, error=ErrorInfo("E", "m"))
    assert not store.park(run_id, b2.token, status=RunStatus.RETRYING, delay=0, due_in=1)
    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED


def test_writes_to_an_unknown_run_are_refused(store: CheckpointStore) -> None:
    """No token holds a run that does not exist."""
    run_id = new_id()
    assert not store.save_step(run_id, 1, succeeded(0))
    assert not store.finish(run_id, 1, status=RunStatus.SUCCEEDED, result='"x"')
    assert store.get_run(run_id) is None


def test_save_steps_writes_several_checkpoints_under_the_token(store: CheckpointStore) -> None:
    """``save_steps`` (async steps that finished together) writes each under the token, as
    ``save_step`` would; a stale token writes none of them."""
    run_id = new_id()
    old = begin(store, run_id)
    assert store.save_steps(run_id, old.token, [succeeded(2, value='"c"'),
                                                succeeded(0, value='"a"')]) == [True, True]
    new = begin(store, run_id, "host:2:2", steal_from="host:1:1")
    assert store.save_steps(run_id, old.token, [succeeded(1), succeeded(3)]) == [False, False]
    assert store.save_steps(run_id, new.token, [succeeded(1, value='"b"')]) == [True]
    run = store.get_run(run_id)
    assert run is not None
    assert [(s.position, s.value) for s in run.steps] == [(0, '"a"'), (1, '"b"'), (2, '"c"')]


def test_save_step_replaces_the_checkpoint_at_its_position(store: CheckpointStore) -> None:
    """A retried step's record is overwritten in place, keeping every field."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, failed(0, status=StepStatus.RETRYING, attempts=1))
    assert store.save_step(run_id, b.token, succeeded(0, value='{"a": [1, 2]}', attempts=2))
    run = store.get_run(run_id)
    assert run is not None and len(run.steps) == 1
    s = run.steps[0]
    assert (s.position, s.key, s.name, s.status, s.attempts, s.value) == (
        0, "s0#0", "s0", StepStatus.SUCCEEDED, 2, '{"a": [1, 2]}')
    assert s.error is None
    assert (s.started_at, s.finished_at) == (1000.0, 1000.5)


def test_finish_failed_keeps_error_failed_step_and_checkpoints(store: CheckpointStore) -> None:
    """A FAILED run keeps its error, traceback, failed step and checkpoints."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, succeeded(0))
    assert store.save_step(run_id, b.token, failed(1))
    err = ErrorInfo("celery_durable.errors.StepFailedError", "step s1#0 failed", "Traceback\n")
    assert store.finish(run_id, b.token, status=RunStatus.FAILED, error=err, failed_step="s1#0")
    run = store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.FAILED and run.error == err and run.failed_step == "s1#0"
    assert [(s.key, s.status) for s in run.steps] == [("s0#0", StepStatus.SUCCEEDED),
                                                      ("s1#0", StepStatus.FAILED)]
    assert run.owner == "" and run.finished_at is not None
    assert run_id not in store.due_runs()


# -- leases: renew and loss ------------------------------------------------------------------


def test_renew_keeps_a_short_lease_alive(store: CheckpointStore) -> None:
    """Renewing a lease faster than its TTL keeps other deliveries out."""
    run_id = new_id()
    b = begin(store, run_id, "host:1:1", ttl=TTL)
    deadline = time.monotonic() + 3 * TTL
    while time.monotonic() < deadline:
        assert store.renew({run_id: b.token}, TTL) == set()
        time.sleep(TTL / 4)
    assert begin(store, run_id, "host:2:2").outcome == "busy"
    assert run_id not in store.due_runs()
    assert store.claim_due(run_id, grace=60, max_recoveries=5).action == "later"


def test_renew_reports_lost_leases(store: CheckpointStore) -> None:
    """Renew returns the runs whose lease the caller no longer holds, and renews the others."""
    lost_id, kept_id, finished_id, missing_id = new_id(), new_id(), new_id(), new_id()
    lost = begin(store, lost_id, "host:1:1", ttl=TTL)
    kept = begin(store, kept_id, "host:1:1", ttl=TTL)
    done = begin(store, finished_id, "host:1:1")
    assert store.finish(finished_id, done.token, status=RunStatus.SUCCEEDED, result='"x"')
    time.sleep(EXPIRED)
    assert begin(store, lost_id, "host:2:2").outcome == "acquired"
    assert store.renew({}, TTL) == set()
    gone = store.renew({lost_id: lost.token, kept_id: kept.token,
                        finished_id: done.token, missing_id: 1}, 30)
    assert gone == {lost_id, finished_id, missing_id}
    assert begin(store, kept_id, "host:3:3").outcome == "busy"  # renewed though expired


# -- the sweeper's side: due_runs and claim_due ----------------------------------------------


def test_expired_lease_becomes_due_and_is_claimed_for_recovery(store: CheckpointStore) -> None:
    """A RUNNING run whose lease expired is due; claiming it fences the holder and re-queues it."""
    run_id, other = new_id(), new_id()
    b = begin(store, run_id, "host:1:1", ttl=TTL)
    begin(store, other, "host:1:1", ttl=30)
    assert run_id not in store.due_runs()
    time.sleep(EXPIRED)
    assert run_id in store.due_runs()
    assert other not in store.due_runs()
    claim = store.claim_due(run_id, grace=60, max_recoveries=5)
    assert claim.action == "publish"
    assert claim.run is not None and claim.run.id == run_id
    assert claim.run.status is RunStatus.PENDING and claim.run.recoveries == 1
    assert (claim.run.task, claim.run.args) == ("tasks.example", "[1, 2]")
    assert claim.run.options == {"routing_key": "q", "priority": 3}
    assert not store.save_step(run_id, b.token, succeeded(0))  # the old holder is fenced
    assert run_id not in store.due_runs()  # due again only after the grace
    again = begin(store, run_id, "host:2:2")
    assert again.outcome == "acquired" and again.run.recoveries == 1  # not counted twice


def test_claim_due_past_max_recoveries_dead_letters(store: CheckpointStore) -> None:
    """A run whose holder keeps dying is dead-lettered by the sweeper past the cap."""
    run_id = new_id()
    begin(store, run_id, ttl=TTL)
    time.sleep(EXPIRED)
    claim = store.claim_due(run_id, grace=60, max_recoveries=0)
    assert claim.action == "dead"
    assert claim.run is not None and claim.run.status is RunStatus.FAILED
    assert claim.run.error is not None and claim.run.error.type.endswith("WorkerLostError")
    assert run_id not in store.due_runs()
    assert begin(store, run_id, "host:2:2").outcome == "finished"


def test_claim_due_republishes_a_parked_run_when_due(store: CheckpointStore) -> None:
    """A run parked for a retry whose message never came is published again once due."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=30, due_in=TTL)
    assert store.claim_due(run_id, grace=60, max_recoveries=5).action == "later"
    time.sleep(EXPIRED)
    assert run_id in store.due_runs()
    claim = store.claim_due(run_id, grace=60, max_recoveries=5)
    assert claim.action == "publish" and claim.run is not None
    assert claim.run.recoveries == 0
    assert begin(store, run_id, "host:2:2").outcome == "acquired"  # no longer early


def test_claim_due_on_finished_or_missing_runs_is_gone(store: CheckpointStore) -> None:
    """Finished and unknown runs are ``gone`` for the sweeper."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='"x"')
    assert store.claim_due(run_id, grace=1, max_recoveries=5).action == "gone"
    assert store.claim_due(new_id(), grace=1, max_recoveries=5).action == "gone"


def test_claim_due_on_a_live_lease_is_later(store: CheckpointStore) -> None:
    """A run whose lease is live is not claimed; ``later`` says when to look again."""
    run_id = new_id()
    b = begin(store, run_id, ttl=30)
    claim = store.claim_due(run_id, grace=1, max_recoveries=5)
    assert claim.action == "later"
    assert claim.due_at is not None and claim.due_at > time.time() + 20
    assert store.save_step(run_id, b.token, succeeded(0))


def test_two_claimers_publish_a_due_run_only_once(store: CheckpointStore) -> None:
    """Two sweepers claiming the same due runs at the same moment: each run is published once."""
    run_ids = [new_id() for _ in range(6)]
    for run_id in run_ids:
        begin(store, run_id, ttl=TTL)
    time.sleep(EXPIRED)
    results: dict[str, list[str]] = {run_id: [] for run_id in run_ids}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def sweeper() -> None:
        try:
            barrier.wait()
            for run_id in run_ids:
                results[run_id].append(store.claim_due(run_id, grace=60, max_recoveries=5).action)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    for run_id, actions in results.items():
        assert sorted(actions) == ["later", "publish"], (run_id, actions)
        run = store.get_run(run_id)
        assert run is not None and run.recoveries == 1


def test_a_reset_run_whose_message_is_lost_becomes_due(store: CheckpointStore) -> None:
    """A re-triggered run that never starts is due after the grace and published again."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.finish(run_id, b.token, status=RunStatus.FAILED, error=ErrorInfo("E", "m"))
    assert store.reset_run(run_id, from_start=False, grace=TTL) is not None
    assert run_id not in store.due_runs()
    time.sleep(EXPIRED)
    assert run_id in store.due_runs()
    assert store.claim_due(run_id, grace=60, max_recoveries=5).action == "publish"


# -- reading: get_run and list_runs ----------------------------------------------------------


def test_get_run_orders_steps_by_numeric_position(store: CheckpointStore) -> None:
    """Checkpoints come back ordered by position (2 before 10), whatever the write order."""
    run_id = new_id()
    b = begin(store, run_id)
    positions = list(range(12))
    random.Random(4).shuffle(positions)
    for pos in positions:
        assert store.save_step(run_id, b.token, succeeded(pos, key=f"loop#{pos}"))
    run = store.get_run(run_id)
    assert run is not None
    assert [s.position for s in run.steps] == list(range(12))
    assert [s.key for s in run.steps] == [f"loop#{i}" for i in range(12)]


def test_get_run_of_an_unknown_run_is_none(store: CheckpointStore) -> None:
    """``get_run`` returns None for an id the store has never seen."""
    assert store.get_run(new_id()) is None


def test_list_runs_filters_by_status_and_task_newest_first(store: CheckpointStore) -> None:
    """``list_runs`` lists newest first, filters by status and task, honours the limit."""
    made: list[tuple[str, str, RunStatus]] = []
    plan = [("tasks.a", RunStatus.SUCCEEDED), ("tasks.b", RunStatus.FAILED),
            ("tasks.a", RunStatus.RUNNING), ("tasks.a", RunStatus.FAILED),
            ("tasks.b", RunStatus.RETRYING)]
    for task, status in plan:
        run_id = new_id()
        b = begin(store, run_id, task=task)
        assert store.save_step(run_id, b.token, succeeded(0))
        if status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            assert store.finish(run_id, b.token, status=status, result='"r"')
        elif status is RunStatus.RETRYING:
            assert store.park(run_id, b.token, status=status, delay=60, due_in=60)
        made.append((run_id, task, status))
        time.sleep(0.01)
    newest_first = [run_id for run_id, _, _ in reversed(made)]
    every = store.list_runs()
    assert [r.id for r in every] == newest_first
    assert all(r.steps == [] for r in every)
    assert [(r.task, r.status) for r in every] == [(t, s) for _, t, s in reversed(made)]
    assert [r.id for r in store.list_runs(status=RunStatus.FAILED)] == [made[3][0], made[1][0]]
    assert [r.id for r in store.list_runs(task="tasks.a")] == [made[3][0], made[2][0], made[0][0]]
    assert [r.id for r in store.list_runs(status=RunStatus.FAILED, task="tasks.b")] == [made[1][0]]
    assert store.list_runs(status=RunStatus.CANCELLED) == []
    assert store.list_runs(task="tasks.none") == []
    assert [r.id for r in store.list_runs(limit=2)] == newest_first[:2]
    assert [r.id for r in store.list_runs(task="tasks.a", limit=1)] == [made[3][0]]


# -- re-triggering: reset_run ----------------------------------------------------------------


def _dead_lettered(store: CheckpointStore, run_id: str) -> int:
    """A FAILED run with two good steps and a failed third; returns the last token."""
    b = begin(store, run_id, args="[1]", kwargs='{"x": 1}')
    assert store.save_step(run_id, b.token, succeeded(0))
    assert store.save_step(run_id, b.token, succeeded(1))
    assert store.save_step(run_id, b.token, failed(2))
    assert store.finish(run_id, b.token, status=RunStatus.FAILED,
                        error=ErrorInfo("builtins.ValueError", "boom", "tb"),
                        failed_step="s2#0")
    return int(b.token)


def test_reset_from_the_failed_step_keeps_completed_checkpoints(store: CheckpointStore) -> None:
    """Resetting from the failed step drops only failed checkpoints and makes the run PENDING."""
    run_id = new_id()
    token = _dead_lettered(store, run_id)
    run = store.reset_run(run_id, from_start=False)
    assert run is not None
    assert run.status is RunStatus.PENDING
    assert run.error is None and run.failed_step is None and run.result is None
    assert run.recoveries == 0
    assert [s.key for s in run.steps] == ["s0#0", "s1#0"]
    assert (run.args, run.kwargs) == ("[1]", '{"x": 1}')
    again = begin(store, run_id, "host:2:2")
    assert again.outcome == "acquired" and again.token > token
    assert [s.key for s in again.steps] == ["s0#0", "s1#0"]
    assert not store.save_step(run_id, token, succeeded(2))


def test_reset_under_another_version_moves_the_run_to_it(store: CheckpointStore) -> None:
    """A retry with the current code records the new code version: the run is listed under
    it (and no longer under the old one), its history says so, its steps are kept."""
    run_id = new_id()
    b = store.begin(run_id, task="tasks.versioned", args="[]", kwargs="{}", options={},
                    owner="host:1:1", lease_ttl=30.0, version="v1")
    assert store.save_step(run_id, b.token, succeeded(0))
    assert store.finish(run_id, b.token, status=RunStatus.FAILED,
                        error=ErrorInfo("NonDeterministicStepError", "diverged"))
    run = store.reset_run(run_id, from_start=False, version="v2")
    assert run is not None and run.version == "v2" and [s.key for s in run.steps] == ["s0#0"]
    assert [r.id for r in store.list_runs(version="v2", task="tasks.versioned")] == [run_id]
    assert run_id not in [r.id for r in store.list_runs(version="v1", task="tasks.versioned")]
    if store.supports(RunHistory):
        notes = [e.detail for e in run_history_of(store).history(run_id) if e.kind == "retry"]
        assert notes and notes[-1].endswith("under code version v2")
    kept = store.reset_run(run_id, from_start=False) if store.finish(
        run_id, begin(store, run_id).token, status=RunStatus.FAILED) else None
    assert kept is not None and kept.version == "v2"  # no version given: it stays


def test_reset_from_start_drops_every_checkpoint(store: CheckpointStore) -> None:
    """Resetting from the start drops every checkpoint."""
    run_id = new_id()
    _dead_lettered(store, run_id)
    run = store.reset_run(run_id, from_start=True)
    assert run is not None and run.status is RunStatus.PENDING and run.steps == []
    stored = store.get_run(run_id)
    assert stored is not None and stored.steps == []
    assert begin(store, run_id, "host:2:2").steps == []


def test_reset_with_edited_arguments_replaces_them(store: CheckpointStore) -> None:
    """Edited args/kwargs given to reset_run replace the stored ones; omitted ones are kept."""
    run_id = new_id()
    _dead_lettered(store, run_id)
    run = store.reset_run(run_id, from_start=False, args="[2]")
    assert run is not None and (run.args, run.kwargs) == ("[2]", '{"x": 1}')
    b = begin(store, run_id, args="[1]")
    assert b.run.args == "[2]"
    assert store.finish(run_id, b.token, status=RunStatus.FAILED, error=ErrorInfo("E", "m"))
    run = store.reset_run(run_id, from_start=True, kwargs='{"x": 2}')
    assert run is not None and (run.args, run.kwargs) == ("[2]", '{"x": 2}')
    stored = store.get_run(run_id)
    assert stored is not None and (stored.args, stored.kwargs) == ("[2]", '{"x": 2}')


def test_reset_a_dead_lettered_run_restores_its_recovery_budget(store: CheckpointStore) -> None:
    """A run dead-lettered for losing its worker can be reset and run again."""
    run_id = new_id()
    begin(store, run_id, ttl=TTL, max_recoveries=0)
    time.sleep(EXPIRED)
    assert begin(store, run_id, "host:2:2", max_recoveries=0).outcome == "dead"
    run = store.reset_run(run_id, from_start=False)
    assert run is not None and run.recoveries == 0 and run.error is None
    assert begin(store, run_id, "host:3:3", max_recoveries=0).outcome == "acquired"


def test_reset_a_cancelled_run(store: CheckpointStore) -> None:
    """A CANCELLED run can be re-triggered too."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.finish(run_id, b.token, status=RunStatus.CANCELLED)
    run = store.reset_run(run_id, from_start=True)
    assert run is not None and run.status is RunStatus.PENDING


@pytest.mark.parametrize("state", ["running", "succeeded", "retrying"])
def test_reset_in_an_invalid_state_raises(store: CheckpointStore, state: str) -> None:
    """Only FAILED or CANCELLED runs can be reset; others raise InvalidRunStateError."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, succeeded(0))
    if state == "succeeded":
        assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='"r"')
    elif state == "retrying":
        assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=60, due_in=60)
    with pytest.raises(InvalidRunStateError) as info:
        store.reset_run(run_id, from_start=True)
    assert run_id in str(info.value)
    run = store.get_run(run_id)
    assert run is not None and len(run.steps) == 1  # nothing dropped


def test_reset_of_an_unknown_run_is_none(store: CheckpointStore) -> None:
    """``reset_run`` returns None when the run does not exist."""
    assert store.reset_run(new_id(), from_start=True) is None


def test_ping_succeeds_on_a_reachable_store(store: CheckpointStore) -> None:
    """``ping`` returns quietly when the store is reachable."""
    store.ping()


def test_park_can_replace_the_arguments_and_message_options(store: CheckpointStore) -> None:
    """``self.retry(args=...)``: parking with new arguments and options stores them for the
    next delivery and every re-send; parking without them keeps what was stored."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60)
    kept = store.get_run(run_id)
    assert kept is not None and (kept.args, kept.kwargs) == ("[1, 2]", '{"k": "v"}')
    again = begin(store, run_id, "host:2:2")
    options = {"queue": "q2", "chain": [{"task": "next", "args": [], "kwargs": {}}],
               "retries": 1}
    assert store.park(run_id, again.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      args="[9]", kwargs='{"k": "w"}', options=options)
    run = store.get_run(run_id)
    assert run is not None and (run.args, run.kwargs, run.options) == ("[9]", '{"k": "w"}',
                                                                       options)
    assert begin(store, run_id, "host:3:3").run.args == "[9]"
