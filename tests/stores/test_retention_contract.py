"""``purge_runs`` and step logs in the CheckpointStore contract, on every store."""

from __future__ import annotations

import time
import uuid
from typing import Any

from celery_durable.records import ErrorInfo, RunStatus, StepRecord, StepStatus
from celery_durable.stores.base import CheckpointStore


def _finished(store: CheckpointStore, status: RunStatus, *, retention: float = 0) -> str:
    run_id = f"purge-{uuid.uuid4().hex}"
    begin = store.begin(run_id, task="tasks.purge", args="[]", kwargs="{}", options={},
                        owner="host:1:1", lease_ttl=30.0)
    store.save_step(run_id, begin.token, StepRecord(0, "a#0", "a", StepStatus.SUCCEEDED,
                                                    value='"v"'))
    error = ErrorInfo("x.Boom", "boom") if status is RunStatus.FAILED else None
    assert store.finish(run_id, begin.token, status=status, error=error, retention=retention,
                        result=None if error else '"ok"')
    return run_id


def _running(store: CheckpointStore) -> Any:
    run_id = f"purge-{uuid.uuid4().hex}"
    store.begin(run_id, task="tasks.purge", args="[]", kwargs="{}", options={},
                owner="host:1:1", lease_ttl=30.0)
    return run_id


def test_purge_runs_deletes_only_the_statuses_asked_for_before_the_cutoff(
        store: CheckpointStore) -> None:
    """Finished runs of the given statuses that finished before the cutoff go; others stay."""
    ok = _finished(store, RunStatus.SUCCEEDED)
    cancelled = _finished(store, RunStatus.CANCELLED)
    dead = _finished(store, RunStatus.FAILED)
    running = _running(store)
    time.sleep(0.05)
    cutoff = time.time()
    late = _finished(store, RunStatus.SUCCEEDED)
    deleted = store.purge_runs(finished_before=cutoff,
                               statuses=[RunStatus.SUCCEEDED, RunStatus.CANCELLED])
    assert sorted(deleted) == sorted([ok, cancelled])
    assert store.get_run(ok) is None and store.get_run(cancelled) is None
    assert store.get_run(dead) is not None  # dead letters only when asked for
    assert store.get_run(running) is not None and store.get_run(late) is not None
    assert store.purge_runs(finished_before=cutoff, statuses=[RunStatus.FAILED]) == [dead]
    assert store.get_run(dead) is None
    listed = {r.id for r in store.list_runs(limit=1000)}
    assert not listed & {ok, cancelled, dead} and {running, late} <= listed


def test_purge_runs_honours_the_limit(store: CheckpointStore) -> None:
    """At most ``limit`` runs are deleted per call; the next call takes the rest."""
    ids = [_finished(store, RunStatus.SUCCEEDED) for _ in range(3)]
    time.sleep(0.05)
    first = store.purge_runs(finished_before=time.time(), statuses=[RunStatus.SUCCEEDED],
                             limit=2)
    rest = store.purge_runs(finished_before=time.time(), statuses=[RunStatus.SUCCEEDED])
    assert len(first) == 2 and sorted(first + rest) == sorted(ids)


def test_a_retried_dead_letter_is_not_purged(store: CheckpointStore) -> None:
    """A FAILED run re-triggered with reset_run is no longer finished, so purge keeps it."""
    dead = _finished(store, RunStatus.FAILED)
    assert store.reset_run(dead, from_start=False) is not None
    time.sleep(0.05)
    assert store.purge_runs(finished_before=time.time(), statuses=[RunStatus.FAILED]) == []
    assert store.get_run(dead) is not None


def test_step_error_logs_round_trip(store: CheckpointStore) -> None:
    """A failed step's log lines come back with its error, in order."""
    run_id = _running(store)
    token = store.get_run(run_id).token  # type: ignore[union-attr]
    lines = [f"2026-01-01 INFO app: line {i} <b>" for i in range(5)] + ["multi\nline"]
    error = ErrorInfo("x.Boom", "boom", "Traceback ...", logs=lines)
    assert store.save_step(run_id, token, StepRecord(0, "a#0", "a", StepStatus.FAILED,
                                                     error=error))
    run = store.get_run(run_id)
    assert run is not None and run.steps[0].error is not None
    assert run.steps[0].error.logs == lines


def test_purging_a_run_drops_its_wait_tokens(store: CheckpointStore) -> None:
    """A purged run's tokens go with it (listed nowhere, unknown to a completion); another
    run's tokens stay."""
    from celery_durable.stores.base import wait_tokens_of

    tokens = wait_tokens_of(store)
    ok, kept = _finished(store, RunStatus.SUCCEEDED), _running(store)
    tokens.create_wait_token(f"t-{ok}", ok, timeout=60.0)
    tokens.create_wait_token(f"t-{kept}", kept, timeout=60.0)
    time.sleep(0.05)
    assert store.purge_runs(finished_before=time.time(), statuses=[RunStatus.SUCCEEDED],
                            limit=1000).count(ok) == 1
    assert tokens.get_wait_token(f"t-{ok}") is None
    assert tokens.list_wait_tokens(run_id=ok) == []
    assert tokens.complete_wait_token(f"t-{ok}", "1") == ("unknown", None)
    assert f"t-{ok}" not in {t.id for t in tokens.list_wait_tokens(limit=1000)}
    assert tokens.get_wait_token(f"t-{kept}") is not None
