"""The run record beyond checkpoints (tags, version, retries, history, metadata, replay links).

Every store keeps the same record: what the admin, ``get_run`` and
``list_runs`` show an operator. History and metadata are never part of what
``begin`` loads.
"""

from __future__ import annotations

import json
import time

from test_contract import EXPIRED, TTL, begin, failed, new_id, succeeded

from celery_durable.records import NewRun, RetryInfo, RunStatus, StepStatus
from celery_durable.stores.base import CheckpointStore, RunHistory, run_history_of


def _history(store: CheckpointStore, run_id: str) -> list[tuple[str, str]]:
    return [(e.kind, e.step.key if e.step else e.detail)
            for e in run_history_of(store).history(run_id)]


def test_every_store_keeps_the_run_history(store: CheckpointStore) -> None:
    """The run record is part of the contract: every store declares RunHistory."""
    assert store.supports(RunHistory)


def test_failed_attempts_are_kept_apart_from_the_checkpoints(store: CheckpointStore) -> None:
    """Each RETRYING or FAILED write adds an attempt to the history; begin does not load it."""
    run_id = new_id()
    b = begin(store, run_id)
    first = failed(0, "charge#0", StepStatus.RETRYING, attempts=1)
    first.max_attempts, first.retry_delay = 3, 0.0
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      step=first)
    b = begin(store, run_id)
    second = failed(0, "charge#0", StepStatus.RETRYING, attempts=2)
    second.max_attempts, second.retry_delay = 3, 0.0
    second.error.message = "boom again"  # type: ignore[union-attr]
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60,
                      step=second)
    b = begin(store, run_id)
    assert [s.attempts for s in b.steps] == [2]  # only the checkpoint, not the history
    assert store.save_step(run_id, b.token, succeeded(0, "charge#0", attempts=3))
    last = failed(1, "ship#0", StepStatus.FAILED, attempts=1)
    assert store.save_step(run_id, b.token, last)
    entries = run_history_of(store).history(run_id)
    assert [(e.kind, e.step.key, e.step.attempts, e.step.status) for e in entries
            if e.step] == [("attempt", "charge#0", 1, StepStatus.RETRYING),
                           ("attempt", "charge#0", 2, StepStatus.RETRYING),
                           ("attempt", "ship#0", 1, StepStatus.FAILED)]
    one = entries[0].step
    assert one is not None and one.error is not None
    assert (one.error.type, one.error.message) == ("builtins.ValueError", "boom")
    assert entries[1].step.error.message == "boom again"  # type: ignore[union-attr]
    assert (one.max_attempts, one.retry_delay) == (3, 0.0)
    assert one.value is None  # a failed attempt has no value to keep
    assert all(e.at > 1_000_000_000 for e in entries)  # the store's clock (not a test value)
    assert entries[0].at <= entries[1].at <= entries[2].at
    run = store.get_run(run_id)
    assert run is not None
    assert run.retries == 2
    assert run.retrying == RetryInfo("charge#0", 2, 3)


def test_a_success_adds_nothing_to_the_history(store: CheckpointStore) -> None:
    """The hot path writes the checkpoint only."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, succeeded(0))
    assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result='"ok"')
    assert run_history_of(store).history(run_id) == []
    run = store.get_run(run_id)
    assert run is not None and run.retries == 0 and run.retrying is None


def test_a_lost_worker_is_a_recovery_naming_it(store: CheckpointStore) -> None:
    """A take-over by a delivery and a recovery by the sweeper are both in the history."""
    run_id = new_id()
    begin(store, run_id, "w1@host:1:1", ttl=TTL)
    time.sleep(EXPIRED)
    assert begin(store, run_id, "w2@host:2:2", ttl=TTL).outcome == "acquired"
    time.sleep(EXPIRED)
    assert store.claim_due(run_id, grace=60, max_recoveries=5).action == "publish"
    history = _history(store, run_id)
    assert [kind for kind, _ in history] == ["recovery", "recovery"]
    assert "w1@host:1:1" in history[0][1] and "took the run over" in history[0][1]
    assert "w2@host:2:2" in history[1][1] and "sweeper" in history[1][1]


def test_a_dead_letter_for_lost_workers_is_in_the_history(store: CheckpointStore) -> None:
    run_id = new_id()
    begin(store, run_id, "w1@host:1:1", ttl=TTL, max_recoveries=0)
    time.sleep(EXPIRED)
    assert store.claim_due(run_id, grace=60, max_recoveries=0).action == "dead"
    [(kind, detail)] = _history(store, run_id)
    assert kind == "recovery" and "dead-lettered" in detail and "w1@host:1:1" in detail


def test_operator_actions_are_in_the_history(store: CheckpointStore) -> None:
    """reset_run (retry) and cancel leave an entry; the history survives a retry."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, failed(0))
    assert store.finish(run_id, b.token, status=RunStatus.FAILED, failed_step="s0#0")
    assert store.reset_run(run_id, from_start=False) is not None
    assert store.cancel(run_id) is not None
    history = _history(store, run_id)
    assert [kind for kind, _ in history] == ["attempt", "retry", "cancel"]
    assert "failed step" in history[1][1]


def test_tags_and_version_are_recorded_and_filter_listings(store: CheckpointStore) -> None:
    """Tags and version given at creation (create_runs or begin) filter list_runs."""
    a, b, c = new_id(), new_id(), new_id()
    store.create_runs([NewRun(a, "tasks.t", tags=["customer:42", "beta"], version="v1"),
                       NewRun(b, "tasks.t", tags=["customer:7"], version="v2")], grace=60)
    store.begin(c, task="tasks.u", args="[]", kwargs="{}", options={}, owner="h:1:1",
                lease_ttl=30, tags=["customer:42"], version="v2")
    run = store.get_run(a)
    assert run is not None and run.tags == ["customer:42", "beta"] and run.version == "v1"
    assert {r.id for r in store.list_runs(tag="customer:42")} == {a, c}
    assert {r.id for r in store.list_runs(tag="beta")} == {a}
    assert {r.id for r in store.list_runs(version="v2")} == {b, c}
    assert {r.id for r in store.list_runs(tag="customer:42", version="v2")} == {c}
    assert {r.id for r in store.list_runs(tag="customer:42", status=RunStatus.RUNNING)} == {c}
    assert store.list_runs(tag="nobody") == []
    listed = {r.id: r for r in store.list_runs(limit=1000)}
    assert listed[a].tags == ["customer:42", "beta"] and listed[b].version == "v2"


def test_metadata_is_written_under_the_lease(store: CheckpointStore) -> None:
    """set_metadata merges keys while the token holds, and is refused after."""
    run_id = new_id()
    b = begin(store, run_id)
    history = run_history_of(store)
    assert history.set_metadata(run_id, b.token, {"page": json.dumps("3 of 10"),
                                                  "done": json.dumps([1, 2])})
    assert history.set_metadata(run_id, b.token, {"page": json.dumps("4 of 10")})
    assert not history.set_metadata(run_id, b.token + 1, {"page": json.dumps("x")})
    run = store.get_run(run_id)
    assert run is not None and run.metadata == {"page": "4 of 10", "done": [1, 2]}
    assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED)
    assert not history.set_metadata(run_id, b.token, {"page": json.dumps("late")})


def test_a_replay_starts_with_the_checkpoints_it_keeps_and_is_linked(
        store: CheckpointStore) -> None:
    """create_runs carries the kept checkpoints and replay_of; link_replay adds replayed_as."""
    original = new_id()
    b = begin(store, original)
    assert store.save_step(original, b.token, succeeded(0, "fetch#0", '"order 11"'))
    assert store.save_step(original, b.token, failed(1, "charge#0"))
    assert store.finish(original, b.token, status=RunStatus.FAILED, failed_step="charge#0")
    kept = succeeded(0, "fetch#0", '"order 11"')
    replay = new_id()
    assert store.create_runs([NewRun(replay, "tasks.example", args="[12]", replay_of=original,
                                     steps=[kept])], grace=60) == [True]
    history = run_history_of(store)
    assert history.link_replay(original, replay)
    assert history.link_replay(original, replay)  # once only
    assert not history.link_replay(new_id(), replay)
    again = begin(store, replay)
    assert again.outcome == "acquired"
    assert [(s.key, s.value, s.status) for s in again.steps] == [
        ("fetch#0", '"order 11"', StepStatus.SUCCEEDED)]
    assert again.run.args == "[12]" and again.run.replay_of == original
    first = store.get_run(original)
    assert first is not None and first.replayed_as == [replay]
    assert first.status is RunStatus.FAILED and first.args == "[1, 2]"  # kept as it was
    assert [s.key for s in first.steps] == ["fetch#0", "charge#0"]


def test_a_replaced_run_loses_its_history_and_metadata(store: CheckpointStore) -> None:
    """A task id used again (replace_finished) starts a clean record."""
    run_id = new_id()
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, failed(0))
    assert run_history_of(store).set_metadata(run_id, b.token, {"k": "1"})
    assert store.finish(run_id, b.token, status=RunStatus.FAILED)
    assert store.create_runs([NewRun(run_id, "tasks.example", tags=["again"])], grace=60,
                             replace_finished=True) == [True]
    assert run_history_of(store).history(run_id) == []
    run = store.get_run(run_id)
    assert run is not None and run.metadata == {} and run.retries == 0
    assert run.tags == ["again"]


def test_a_purged_run_loses_its_history(store: CheckpointStore) -> None:
    run_id = new_id()
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, failed(0))
    assert store.finish(run_id, b.token, status=RunStatus.FAILED)
    time.sleep(0.05)
    from celery_durable.stores.base import retention_of
    assert retention_of(store).purge_runs(finished_before=time.time(),
                                          statuses=[RunStatus.FAILED]) == [run_id]
    assert run_history_of(store).history(run_id) == []
