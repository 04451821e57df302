"""Every store decides ``begin``, ``claim_due`` and ``reset_run`` as ``stores.transitions`` does.

One table of cases, run against every store (memory, Redis, Django on SQLite
and PostgreSQL). Each case builds a run's state through the store's own
methods, reads it back, asks :mod:`celery_durable.stores.transitions` what
should happen to that state, then makes the store decide and compares. The
memory and Django stores call the module; Redis decides in Lua, so this is
what holds the scripts to the same rules.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from test_contract import EXPIRED, TTL, begin, failed, succeeded

from celery_durable import InvalidRunStateError
from celery_durable.records import RunRecord, RunStatus, StepStatus, WaitInfo
from celery_durable.stores import transitions
from celery_durable.stores.base import CheckpointStore, waits_of

Setup = Callable[[CheckpointStore, str], None]


def _control(run: RunRecord | None) -> transitions.Control | None:
    if run is None:
        return None
    return transitions.Control(run.status, run.owner, run.lease_expires, run.not_before,
                               run.due_at, run.recoveries, run.token, run.started_at is not None)


def nothing(store: CheckpointStore, run_id: str) -> None:
    """No run at all."""


def parked_ready(store: CheckpointStore, run_id: str) -> None:
    """Parked for a retry that may start now."""
    b = begin(store, run_id)
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=0, due_in=60)


def parked_early(store: CheckpointStore, run_id: str) -> None:
    """Parked for a retry a minute from now."""
    b = begin(store, run_id)
    assert store.park(run_id, b.token, status=RunStatus.RETRYING, delay=60, due_in=60)


def leased(store: CheckpointStore, run_id: str) -> None:
    """RUNNING under a live lease of ``host:1:1``."""
    begin(store, run_id, "host:1:1")


def lease_expired(store: CheckpointStore, run_id: str) -> None:
    """RUNNING, but its holder's lease expired (a lost worker)."""
    begin(store, run_id, "host:1:1", ttl=TTL)
    time.sleep(EXPIRED)


def succeeded_run(store: CheckpointStore, run_id: str) -> None:
    """Finished: SUCCEEDED."""
    b = begin(store, run_id)
    assert store.finish(run_id, b.token, status=RunStatus.SUCCEEDED, result="1")


def failed_run(store: CheckpointStore, run_id: str) -> None:
    """Dead-lettered after one success and one failed step."""
    b = begin(store, run_id)
    assert store.save_step(run_id, b.token, succeeded(0))
    assert store.save_step(run_id, b.token, failed(1))
    assert store.finish(run_id, b.token, status=RunStatus.FAILED, failed_step="s1#0")


def cancelled_run(store: CheckpointStore, run_id: str) -> None:
    """CANCELLED while queued."""
    assert store.cancel(run_id, create_missing=True) is not None


def sleeping_due(store: CheckpointStore, run_id: str) -> None:
    """SLEEPING with a wake time that has passed."""
    b = begin(store, run_id)
    wait = WaitInfo("sleep", "sleep#0", 0, b.token, until=time.time() + TTL)
    assert waits_of(store).suspend(run_id, b.token, status=RunStatus.SLEEPING, wait=wait)
    time.sleep(EXPIRED)


def waiting_forever(store: CheckpointStore, run_id: str) -> None:
    """WAITING for an event, with no timeout: not due at all."""
    b = begin(store, run_id)
    wait = WaitInfo("event", "wait_for_event:e#0", 0, b.token, event="e", key="k")
    assert waits_of(store).suspend(run_id, b.token, status=RunStatus.WAITING, wait=wait)


BEGIN_CASES: list[tuple[Setup, dict[str, object], str]] = [
    (nothing, {}, "acquired"),
    (parked_ready, {}, "acquired"),
    (parked_early, {}, "early"),
    (leased, {}, "busy"),
    (leased, {"steal_from": "host:1:1"}, "acquired"),
    (lease_expired, {}, "acquired"),
    (lease_expired, {"max_recoveries": 0}, "dead"),
    (succeeded_run, {}, "finished"),
    (cancelled_run, {}, "finished"),
    (failed_run, {}, "finished"),
]


@pytest.mark.parametrize(("setup", "options", "expected"), BEGIN_CASES,
                         ids=[f"{s.__name__}-{'-'.join(o) or 'plain'}" for s, o, _ in BEGIN_CASES])
def test_begin_decides_as_the_transitions_module(store: CheckpointStore, setup: Setup,
                                                 options: dict[str, object],
                                                 expected: str) -> None:
    """``begin`` on each state: the outcome, status, recoveries and token the module decides."""
    run_id = f"run-{uuid.uuid4().hex}"
    setup(store, run_id)
    before = store.get_run(run_id)
    max_recoveries = int(options.get("max_recoveries", 5))  # type: ignore[call-overload]
    steal_from = options.get("steal_from")
    oracle, changes = ("acquired", {}) if before is None else transitions.begin(
        _control(before), now=time.time(), owner="host:2:2", lease_ttl=30.0,  # type: ignore[arg-type]
        max_recoveries=max_recoveries, steal_from=steal_from)  # type: ignore[arg-type]
    result = begin(store, run_id, "host:2:2", max_recoveries=max_recoveries,
                   steal_from=steal_from)  # type: ignore[arg-type]
    assert oracle == expected  # the table and the module agree ...
    assert result.outcome == expected  # ... and so does the store
    after = store.get_run(run_id)
    assert after is not None
    if before is not None and "status" in changes:
        assert after.status is changes["status"]
        assert after.recoveries == changes["recoveries"]
        assert after.token > before.token
    if expected == "dead":
        assert after.error is not None and after.error.type == transitions.WORKER_LOST
        assert "worker lost 1 times (durable_max_recoveries=0)" in after.error.message
    if expected in ("busy", "early", "finished") and before is not None:
        assert (after.status, after.token, after.owner) == (before.status, before.token,
                                                            before.owner)


CLAIM_CASES: list[tuple[Setup, int, str, RunStatus | None]] = [
    (nothing, 5, "gone", None),
    (succeeded_run, 5, "gone", RunStatus.SUCCEEDED),
    (parked_early, 5, "later", RunStatus.RETRYING),
    (lease_expired, 5, "publish", RunStatus.PENDING),
    (lease_expired, 0, "dead", RunStatus.FAILED),
    (sleeping_due, 5, "publish", RunStatus.PENDING),
    (waiting_forever, 5, "later", RunStatus.WAITING),
]


@pytest.mark.parametrize(("setup", "max_recoveries", "expected", "status"), CLAIM_CASES,
                         ids=[f"{s.__name__}-{m}" for s, m, _, _ in CLAIM_CASES])
def test_claim_due_decides_as_the_transitions_module(store: CheckpointStore, setup: Setup,
                                                     max_recoveries: int, expected: str,
                                                     status: RunStatus | None) -> None:
    """``claim_due`` on each state: the action, the run's new status and its next due time."""
    run_id = f"run-{uuid.uuid4().hex}"
    setup(store, run_id)
    before = store.get_run(run_id)
    now = time.time()
    oracle, changes = transitions.claim_due(_control(before), now=now, grace=60.0,
                                            max_recoveries=max_recoveries)
    claim = store.claim_due(run_id, grace=60.0, max_recoveries=max_recoveries)
    assert oracle == expected
    assert claim.action == expected
    after = store.get_run(run_id)
    assert (after.status if after else None) is status
    if expected == "later":
        assert claim.due_at == changes["due_at"] == (before.due_at if before else None)
    if expected == "publish":
        assert claim.run is not None and claim.run.status is RunStatus.PENDING
        assert after is not None and after.due_at == pytest.approx(now + 60.0, abs=5)
        assert run_id not in store.due_runs(1000)  # not due again before the grace


@pytest.mark.parametrize(("setup", "from_start", "kept"), [
    (failed_run, False, [0]), (failed_run, True, []), (cancelled_run, False, [])])
def test_reset_run_decides_as_the_transitions_module(store: CheckpointStore, setup: Setup,
                                                     from_start: bool, kept: list[int]) -> None:
    """A dead letter or a cancelled run becomes PENDING, keeping only what ``keeps_step`` keeps."""
    run_id = f"run-{uuid.uuid4().hex}"
    setup(store, run_id)
    before = store.get_run(run_id)
    assert before is not None
    expected_kept = [s.position for s in before.steps
                     if transitions.keeps_step(s.status, from_start=from_start)]
    assert expected_kept == kept
    run = store.reset_run(run_id, from_start=from_start, args="[7]", grace=60.0)
    assert run is not None and run.status is RunStatus.PENDING and run.args == "[7]"
    assert (run.error, run.failed_step, run.recoveries) == (None, None, 0)
    assert run.token > before.token
    assert [s.position for s in run.steps] == kept
    assert all(s.status is StepStatus.SUCCEEDED for s in run.steps)


@pytest.mark.parametrize("setup", [leased, parked_ready, sleeping_due, succeeded_run])
def test_reset_run_refuses_every_other_state(store: CheckpointStore, setup: Setup) -> None:
    """Only FAILED and CANCELLED runs can be reset: the module and every store refuse the rest."""
    run_id = f"run-{uuid.uuid4().hex}"
    setup(store, run_id)
    before = store.get_run(run_id)
    assert before is not None
    with pytest.raises(InvalidRunStateError):
        transitions.reset(run_id, _control(before), now=time.time(), grace=60.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidRunStateError):
        store.reset_run(run_id, from_start=False)
    after = store.get_run(run_id)
    assert after is not None and after.status is before.status
