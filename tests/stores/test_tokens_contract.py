"""Wait tokens on every store (``WaitTokens``): created once, completed once by the store's
clock, the first payload kept; expiry; concurrent completions; listing."""

from __future__ import annotations

import threading
import time
import uuid

from celery_durable.stores.base import CheckpointStore, wait_tokens_of


def _token_id() -> str:
    return f"tok-{uuid.uuid4().hex}"


def test_a_token_is_created_once_and_completed_once_keeping_the_first_payload(
        store: CheckpointStore) -> None:
    tokens = wait_tokens_of(store)
    token_id, run_id = _token_id(), f"run-{uuid.uuid4().hex[:8]}"
    made = tokens.create_wait_token(token_id, run_id, timeout=3600.0, tags=["approval"])
    assert (made.id, made.run_id, made.tags, made.status) == (token_id, run_id,
                                                              ["approval"], "pending")
    assert made.expires_at is not None
    assert abs(made.expires_at - made.created_at - 3600.0) < 1.0
    again = tokens.create_wait_token(token_id, "another-run", timeout=1.0)
    assert (again.run_id, again.created_at, again.expires_at) == (run_id, made.created_at,
                                                                   made.expires_at)
    outcome, done = tokens.complete_wait_token(token_id, '{"approved": true}')
    assert outcome == "completed" and done is not None and done.status == "completed"
    assert done.completed_at is not None and done.payload == '{"approved": true}'
    outcome, second = tokens.complete_wait_token(token_id, '{"approved": false}')
    assert outcome == "already" and second is not None
    assert (second.payload, second.completed_at) == ('{"approved": true}', done.completed_at)
    stored = tokens.get_wait_token(token_id)
    assert stored is not None and stored.payload == '{"approved": true}'
    assert stored.status == "completed"


def test_an_unknown_or_expired_token_is_not_completed(store: CheckpointStore) -> None:
    tokens = wait_tokens_of(store)
    assert tokens.complete_wait_token(_token_id(), "1") == ("unknown", None)
    assert tokens.get_wait_token(_token_id()) is None
    token_id = _token_id()
    tokens.create_wait_token(token_id, "run-x", timeout=0.05)
    time.sleep(0.3)
    assert tokens.get_wait_token(token_id).status == "expired"  # type: ignore[union-attr]
    outcome, record = tokens.complete_wait_token(token_id, "1")
    assert outcome == "expired" and record is not None and record.completed_at is None
    forever = _token_id()
    assert tokens.create_wait_token(forever, "run-x", timeout=None).expires_at is None
    assert tokens.complete_wait_token(forever, "2")[0] == "completed"


def test_concurrent_completions_leave_exactly_one(store: CheckpointStore) -> None:
    tokens = wait_tokens_of(store)
    token_id = _token_id()
    tokens.create_wait_token(token_id, "run-race", timeout=600.0)
    barrier, outcomes, lock = threading.Barrier(20), [], threading.Lock()

    def complete(n: int) -> None:
        barrier.wait()
        outcome, _ = tokens.complete_wait_token(token_id, str(n))
        with lock:
            outcomes.append((outcome, n))

    threads = [threading.Thread(target=complete, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [n for outcome, n in outcomes if outcome == "completed"]
    assert len(outcomes) == 20 and len(winners) == 1
    assert sorted(o for o, _ in outcomes).count("already") == 19
    assert tokens.get_wait_token(token_id).payload == str(winners[0])  # type: ignore[union-attr]


def test_tokens_are_listed_newest_first_and_by_run(store: CheckpointStore) -> None:
    tokens = wait_tokens_of(store)
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    ids = []
    for _ in range(3):
        ids.append(_token_id())
        tokens.create_wait_token(ids[-1], run_id, timeout=60.0)
        time.sleep(0.01)
    tokens.create_wait_token(_token_id(), "someone-else", timeout=60.0)
    assert [t.id for t in tokens.list_wait_tokens(run_id=run_id)] == ids[::-1]
    assert [t.id for t in tokens.list_wait_tokens(run_id=run_id, limit=2)] == ids[:0:-1]
    newest = tokens.list_wait_tokens(limit=1)
    assert len(newest) == 1 and newest[0].run_id == "someone-else"
