"""Run controls through real worker subprocesses and real Redis.

Priorities, cancellation, idempotent triggering, child runs and concurrency
limits. Every side effect is counted outside the worker, in Redis, by the
tasks of ``tests/apps/controls_app.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from typing import Any

import pytest
from celery.result import AsyncResult
from harness import wait_for

from celery_durable import RunStatus, cancel_run, get_run, send_event, wake_run

pytestmark = pytest.mark.worker

APP = "apps.controls_app"


def count(redis_client: Any, tag: str, name: str) -> int:
    return int(redis_client.get(f"{tag}:{name}") or 0)


def until_status(run_id: str, status: str, timeout: float = 15.0) -> None:
    """Wait until the store says the run is ``status``."""
    from apps.controls_app import app

    def reached() -> bool:
        try:
            return get_run(run_id, app=app).status == status
        except Exception:
            return False

    wait_for(reached, timeout, 0.02, f"{run_id} to be {status}")


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- priorities -------------------------------------------------------------------------------


def test_priority_survives_a_step_retry_and_a_recovery(start_worker, tag, redis_client):
    """Every delivery of a priority-7 run (first, step retry, crash recovery) has priority 7."""
    from apps.controls_app import app, prioritized

    first = start_worker(APP, concurrency=1)
    result = prioritized.apply_async((tag,), priority=7)
    wait_for(lambda: count(redis_client, tag, "long_first_time") == 1, 20, 0.05,
             "the step after the retry")
    first.kill()  # recovered by the sweeper once the lease expires
    start_worker(APP, concurrency=1)
    assert result.get(timeout=30) == "done"
    seen = [json.loads(p) for p in redis_client.lrange(f"{tag}:priorities", 0, -1)]
    assert len(seen) == 3, seen  # first delivery, step retry, recovery
    assert seen == [7, 7, 7]
    run = get_run(result.id, app=app)
    assert run.recoveries == 1 and run.status is RunStatus.SUCCEEDED


# -- cancellation -----------------------------------------------------------------------------


def test_cancel_a_sleeping_run(start_worker, tag, redis_client):
    """A SLEEPING run is CANCELLED at once, REVOKED for Celery, and never runs its next step."""
    from apps.controls_app import app, sleeper

    start_worker(APP)
    result = sleeper.delay(tag, 2)
    until_status(result.id, "SLEEPING")
    assert cancel_run(result.id, app=app) is True
    assert get_run(result.id, app=app).status is RunStatus.CANCELLED
    assert AsyncResult(result.id, app=app).state == "REVOKED"
    assert wake_run(result.id, app=app) is False
    time.sleep(3.0)  # past the wake time
    assert count(redis_client, tag, "before") == 1
    assert count(redis_client, tag, "after") == 0
    assert get_run(result.id, app=app).status is RunStatus.CANCELLED
    assert cancel_run(result.id, app=app) is False  # already cancelled


def test_cancel_a_waiting_run(start_worker, tag, redis_client):
    """A WAITING run is CANCELLED at once; a later event resumes nothing."""
    from apps.controls_app import app, waiter

    start_worker(APP)
    name = f"approval-{uuid.uuid4().hex[:8]}"
    result = waiter.delay(tag, name)
    until_status(result.id, "WAITING")
    assert cancel_run(result.id, app=app) is True
    assert send_event(name, tag, "too late", app=app) == 0
    time.sleep(1.0)
    assert count(redis_client, tag, "after") == 0
    assert get_run(result.id, app=app).status is RunStatus.CANCELLED
    assert AsyncResult(result.id, app=app).state == "REVOKED"


def test_cancel_a_running_run_stops_at_the_next_step_boundary(start_worker, tag, redis_client):
    """A run cancelled during a step finishes that step but runs no further step."""
    from apps.controls_app import app, runner

    worker = start_worker(APP)
    result = runner.delay(tag, 1.5)
    wait_for(lambda: count(redis_client, tag, "slow:started") == 1, 15, 0.02, "the slow step")
    assert cancel_run(result.id, app=app) is True
    assert get_run(result.id, app=app).status is RunStatus.CANCELLED  # at once
    wait_for(lambda: count(redis_client, tag, "slow:ended") == 1, 10, 0.05, "the step's end")
    wait_for(lambda: "cancelled; stopping" in worker.log(), 10, 0.05, "the delivery to stop")
    time.sleep(0.5)
    assert count(redis_client, tag, "first") == 1
    assert count(redis_client, tag, "third") == 0
    assert count(redis_client, tag, "fourth") == 0
    run = get_run(result.id, app=app)
    assert run.status is RunStatus.CANCELLED
    assert [s.key for s in run.steps] == ["mark#0"]  # the cut-off step was not checkpointed
    assert AsyncResult(result.id, app=app).state == "REVOKED"


def test_cancel_with_terminate_kills_the_step_in_flight(start_worker, tag, redis_client):
    """``terminate=True`` revokes like Celery: the pool process running the step is killed."""
    from apps.controls_app import app, runner

    worker = start_worker(APP)
    result = runner.delay(tag, 30)
    wait_for(lambda: redis_client.get(f"{tag}:slow:pid"), 15, 0.02, "the slow step")
    pid = int(redis_client.get(f"{tag}:slow:pid"))
    assert cancel_run(result.id, terminate=True, app=app) is True
    wait_for(lambda: pid_gone(pid), 10, 0.05, "the pool process to be terminated")
    time.sleep(1.0)
    assert worker.proc.poll() is None
    assert count(redis_client, tag, "slow:ended") == 0
    assert count(redis_client, tag, "third") == 0
    assert get_run(result.id, app=app).status is RunStatus.CANCELLED


def test_cancel_a_run_whose_message_is_still_queued(start_worker, tag, redis_client):
    """A run cancelled before any worker took its message never runs a step."""
    from apps.controls_app import app, runner

    result = runner.delay(tag, 0.1)
    assert cancel_run(result.id, app=app) is True
    start_worker(APP)
    probe = runner.delay(f"{tag}-probe", 0.1)  # queued behind it: once it ran, ours was seen
    assert probe.get(timeout=20) == "done"
    assert count(redis_client, tag, "first") == 0
    assert get_run(result.id, app=app).status is RunStatus.CANCELLED


# -- idempotent triggering --------------------------------------------------------------------

_TRIGGER = """
import json, sys, threading, time
from apps.controls_app import charge_order

start, key, tag = float(sys.argv[1]), sys.argv[2], sys.argv[3]
threads, each = int(sys.argv[4]), int(sys.argv[5])
ids, lock = [], threading.Lock()

def go():
    while time.time() < start:
        time.sleep(0.0005)
    for _ in range(each):
        result = charge_order.apply_async((tag, "42"), idempotency_key=key)
        with lock:
            ids.append(result.id)

workers = [threading.Thread(target=go) for _ in range(threads)]
for t in workers:
    t.start()
for t in workers:
    t.join()
print(json.dumps(ids))
"""


def test_fifty_concurrent_triggers_with_one_key_start_one_run(start_worker, tag, redis_client):
    """50 triggers with one key, from 10 threads in 2 processes at once, make exactly one run."""
    import subprocess
    import sys

    from apps.controls_app import app, charge_order
    from harness import ROOT

    from celery_durable import list_runs

    key = f"order-{uuid.uuid4().hex[:8]}"
    start = time.time() + 2.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    procs = [subprocess.Popen([sys.executable, "-c", _TRIGGER, str(start), key, tag, "5", "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
             for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err.decode()[-2000:] for _, err in outputs]
    ids = [i for out, _ in outputs for i in json.loads(out)]
    assert len(ids) == 50 and len(set(ids)) == 1, set(ids)
    run_id = ids[0]
    assert get_run(run_id, app=app).idempotency_key == key
    keyed = [r for r in list_runs(task=charge_order.name, limit=1000, app=app)
             if r.idempotency_key == key]
    assert [r.id for r in keyed] == [run_id]
    start_worker(APP)
    assert AsyncResult(run_id, app=app).get(timeout=20) == "charged 42"
    again = charge_order.apply_async((tag, "42"), idempotency_key=key)
    assert again.id == run_id and again.get(timeout=5) == "charged 42"
    time.sleep(0.5)  # duplicate messages, if any, were ignored
    assert count(redis_client, tag, "charged") == 1


def test_an_idempotency_key_expires_after_its_ttl(start_worker, tag, redis_client):
    """After ``idempotency_ttl`` the same key starts a new run; keys are per task name."""
    from apps.controls_app import app, charge_order, runner

    start_worker(APP)
    key = f"order-{uuid.uuid4().hex[:8]}"
    first = charge_order.apply_async((tag, "1"), idempotency_key=key, idempotency_ttl=1)
    assert charge_order.apply_async((tag, "1"), idempotency_key=key).id == first.id
    other_task = runner.apply_async((f"{tag}-r", 0.0), idempotency_key=key)
    assert other_task.id != first.id
    assert first.get(timeout=15) == "charged 1" and other_task.get(timeout=15) == "done"
    time.sleep(1.2)
    second = charge_order.apply_async((tag, "2"), idempotency_key=key)
    assert second.id != first.id and second.get(timeout=15) == "charged 2"
    assert count(redis_client, tag, "charged") == 2
    assert get_run(second.id, app=app).idempotency_key == key


# -- child runs -------------------------------------------------------------------------------


def child_runs(app: Any, parent_id: str) -> list[Any]:
    from celery_durable import list_runs

    return [r for r in list_runs(limit=5000, app=app) if r.id.startswith(f"{parent_id}~")]


def test_fan_out_survives_a_sigkill_with_exactly_one_run_per_child(start_worker, tag,
                                                                     redis_client):
    """A parent fanning out to 10 children, its worker SIGKILLed mid fan-out, starts each once."""
    from apps.controls_app import app, fan_out

    env = {"TEST_GRACE": "3"}  # queued messages lost with the worker are re-sent after 3 s
    first = start_worker(APP, concurrency=2, env=env)
    result = fan_out.delay(tag, 10, 1.0)
    wait_for(lambda: count(redis_client, tag, "square-0:started") >= 1, 20, 0.02,
             "the first map child to start")
    first.kill()
    start_worker(APP, concurrency=2, env=env)
    squares = [x * x for x in range(10)]
    assert result.get(timeout=60) == {"first": 10000, "sum": sum(squares), "squares": squares,
                                      "pair": [40000, 90000]}
    children = child_runs(app, result.id)
    map_children = sorted(r.id for r in children if r.task.endswith("square_item"))
    assert map_children == sorted(f"{result.id}~1.{i}" for i in range(10))
    assert len(children) == 13  # 1 call + 10 map + 2 gather
    assert all(r.status is RunStatus.SUCCEEDED and r.id.startswith(result.id)
               for r in children)
    for x in range(10):
        assert count(redis_client, tag, f"square-{x}:ended") == 1, x  # no step ran twice
    assert count(redis_client, tag, "square:100") == 1
    assert count(redis_client, tag, "after_fan_out") == 1
    run = get_run(result.id, app=app)
    assert [s.key for s in run.steps] == ["call:apps.controls_app.square#0",
                                          "map:apps.controls_app.square_item#0", "gather#0",
                                          "mark#0"]


def test_a_parent_is_resumed_once_for_a_whole_map(start_worker, tag, redis_client):
    """Six children finishing one at a time (0.3 s apart) resume their parent once, not six
    times: the store counts the children's notices and wakes the parent when every child it
    waits for has reported. Its deliveries are counted from outside the worker."""
    from apps.controls_app import staggered_map

    start_worker(APP, concurrency=4)
    result = staggered_map.delay(tag, 6, 0.3)
    assert result.get(timeout=60) == [x * x for x in range(6)]
    assert all(count(redis_client, tag, f"square:{x}") == 1 for x in range(6))
    deliveries = count(redis_client, tag, "staggered_map:delivery")
    # 2 = the first delivery and the one wake; 3 allows one early look (a child whose
    # notice raced the parent's read); one wake per child would be 7.
    assert 2 <= deliveries <= 3, deliveries


def test_a_failed_child_is_retried_under_the_parents_policy(start_worker, tag, redis_client):
    """A child failing for good fails the parent's step; the parent's retry re-triggers it."""
    from apps.controls_app import app, parent_retrying

    start_worker(APP, concurrency=2)
    result = parent_retrying.delay(tag)
    assert result.get(timeout=30) == [0, 2, 4, 6, 8]
    assert count(redis_client, tag, "fragile:3") == 2  # failed once, re-triggered once
    assert count(redis_client, tag, "maybe_fail:3") == 2
    assert all(count(redis_client, tag, f"fragile:{x}") == 1 for x in (0, 1, 2, 4))
    step = get_run(result.id, app=app).steps[0]
    assert step.key == "gather#0" and step.attempts == 2


def test_a_finished_child_deleted_while_its_parent_waits_is_not_run_again(
        start_worker, tag, redis_client):
    """A child that finished and was then deleted (retention, purge) before its parent
    resumed fails the parent's step as vanished; the child's steps never run again."""
    from apps.controls_app import app, quick_and_slow

    from celery_durable.stores import get_store

    start_worker(APP, concurrency=2)
    result = quick_and_slow.delay(tag)
    quick = f"{result.id}~0.0"
    until_status(quick, "SUCCEEDED")
    until_status(result.id, "WAITING")
    store = get_store(app)
    assert store.client.delete(store.run_key(quick)) == 1  # as its retention expiring would
    with pytest.raises(Exception, match="vanished"):
        result.get(timeout=30)
    assert count(redis_client, tag, "square:3") == 1  # the slow child finished
    assert count(redis_client, tag, "square:2") == 1  # the quick one was not run again
    assert get_run(result.id, app=app).status is RunStatus.FAILED


def test_cancelling_a_parent_cancels_its_children(start_worker, tag, redis_client):
    """Cancelling a parent waiting for two sleeping children cancels them too."""
    from apps.controls_app import app, parent_of_sleepers

    start_worker(APP, concurrency=2)
    result = parent_of_sleepers.delay(tag)
    until_status(result.id, "WAITING")
    for child in (f"{result.id}~0.0", f"{result.id}~0.1"):
        until_status(child, "SLEEPING")
    assert cancel_run(result.id, app=app) is True
    statuses = {r.id: r.status for r in child_runs(app, result.id)}
    assert statuses == {f"{result.id}~0.0": RunStatus.CANCELLED,
                        f"{result.id}~0.1": RunStatus.CANCELLED}
    assert AsyncResult(f"{result.id}~0.0", app=app).state == "REVOKED"
    # Waking a cancelled child is refused, so its step after the sleep never runs.
    assert wake_run(f"{result.id}~0.0", app=app) is False
    time.sleep(1.0)
    assert count(redis_client, f"{tag}-a", "before") == 1
    assert count(redis_client, f"{tag}-a", "after") == 0


# -- concurrency limits -----------------------------------------------------------------------


def max_overlap(intervals: list[list[float]]) -> int:
    """The most recorded executions in progress at one moment."""
    edges = sorted([(iv[1], 1) for iv in intervals] + [(iv[2], -1) for iv in intervals])
    most = now = 0
    for _, delta in edges:
        now += delta
        most = max(most, now)
    return most


def overlapping(intervals: list[list[float]], after: float) -> bool:
    """True if two executions of different runs other than run 0 overlap after ``after``."""
    late = [iv for iv in intervals if iv[0] != 0 and iv[1] > after]
    return any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2]
               for n, a in enumerate(late) for b in late[n + 1:])


def test_concurrency_two_across_three_workers(start_worker, tag, redis_client, monkeypatch):
    """concurrency=2 over 3 workers x 2 slots: never 3 at once, all 20 finish, a killed run's
    slot frees itself."""
    from apps.controls_app import app, limited

    from celery_durable.config import settings_for
    from celery_durable.stores import get_store

    env = {"TEST_GRACE": "3"}
    # Runs are registered in the store when published (here, by this process): with the
    # workers' short grace, a message the killed worker had prefetched is re-published
    # after 3 s instead of the default 300 s.
    monkeypatch.setattr(app, "_durable_settings",
                        dataclasses.replace(settings_for(app), requeue_grace=3.0))
    workers = [start_worker(APP, concurrency=2, env=env) for _ in range(3)]
    victim = limited.delay(tag, 0, 60)
    wait_for(lambda: redis_client.get(f"{tag}:work:0:pid"), 15, 0.02, "run 0 to execute")
    others = [limited.delay(tag, i, 0.5) for i in range(1, 20)]
    store = get_store(app)
    wait_for(lambda: all(store.get_runs([r.id for r in others])), 15, 0.05,
             "every run to reach the store")
    pid = int(redis_client.get(f"{tag}:work:0:pid"))
    holder = next(w for w in workers if pid in w.pool_pids())
    dead = set(holder.pool_pids())
    holder.kill()
    killed_at = time.time()
    # Runs that died inside the step (run 0, maybe one more) leave the executing set.
    # Their slots stay taken until their leases expire, so nobody joins meanwhile.
    for i in range(20):
        if int(redis_client.get(f"{tag}:work:{i}:pid") or 0) in dead:
            redis_client.srem(f"{tag}:executing", str(i))
    assert [r.get(timeout=90) for r in others] == list(range(1, 20))
    assert victim.get(timeout=30) == 0
    assert int(redis_client.get(f"{tag}:high")) == 2  # never more than 2 executing at once
    intervals = [json.loads(x) for x in redis_client.lrange(f"{tag}:intervals", 0, -1)]
    assert sorted({iv[0] for iv in intervals}) == list(range(20))
    assert max_overlap(intervals) == 2
    # After the kill two other runs executed at once: the dead run's slot was freed.
    assert overlapping(intervals, killed_at), intervals
    assert get_run(victim.id, app=app).recoveries == 1


def test_concurrency_key_limits_per_key(start_worker, tag, redis_client):
    """concurrency=1 per customer: each customer's runs execute one at a time, all finish."""
    from apps.controls_app import per_customer

    start_worker(APP, concurrency=3)
    results = [per_customer.delay(tag, c, i) for i in range(3) for c in ("ann", "bob")]
    assert sorted(r.get(timeout=30) for r in results) == [0, 0, 1, 1, 2, 2]
    for customer in ("ann", "bob"):
        assert int(redis_client.get(f"{tag}:{customer}:high")) == 1
