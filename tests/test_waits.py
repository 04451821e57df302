"""Durable waits through real worker subprocesses and real Redis."""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult
from harness import child_pids, wait_for
from test_flower import flower  # noqa: F401 - a real Flower process (fixture)

pytestmark = pytest.mark.worker


def count(redis_client: Any, tag: str, name: str) -> int:
    return int(redis_client.get(f"{tag}:{name}") or 0)


def until_state(result: AsyncResult, state: str, timeout: float = 15.0) -> None:
    """Wait until the run is parked in ``state``, in the store and as its Celery state.

    (The Celery state is written first, so it alone does not mean the run is parked.)
    """
    from apps.waits_app import app

    from celery_durable import get_run

    def parked() -> bool:
        return result.state == state and get_run(result.id, app=app).status == state

    wait_for(parked, timeout, 0.02, f"{result.id} to be {state}")


def event_name() -> str:
    return f"approval-{uuid.uuid4().hex[:8]}"


def test_sleep_survives_sigkill_of_every_worker(start_worker, tag, redis_client):
    """A run sleeping 3 s while its only worker is SIGKILLed wakes once, on time, on a new one."""
    from apps.waits_app import app, nap

    from celery_durable import get_run

    worker = start_worker("apps.waits_app")
    result = nap.delay(tag, 3)
    until_state(result, "SLEEPING")
    run = get_run(result.id, app=app)
    assert run.status == "SLEEPING" and run.wait is not None and run.wait.kind == "sleep"
    wake_at = run.wait.until
    assert wake_at is not None
    worker.kill()
    start_worker("apps.waits_app")
    assert result.get(timeout=20) == "woke"
    assert count(redis_client, tag, "before") == 1
    assert count(redis_client, tag, "after") == 1
    assert count(redis_client, tag, "passed") == 1
    woke = float(redis_client.get(f"{tag}:after:at"))
    assert abs(woke - wake_at) <= 2.0, f"woke {woke - wake_at:+.2f}s off its wake time"
    steps = {s.key: s.value for s in get_run(result.id, app=app).steps}
    assert steps["sleep#0"]["outcome"] == "elapsed"


def test_ten_day_sleep_resumes_at_once_on_wake_run(start_worker, tag, redis_client):
    """A run sleeping 10 days resumes within seconds of wake_run; waking it again is refused."""
    from apps.waits_app import app, nap

    from celery_durable import get_run, wake_run

    start_worker("apps.waits_app")
    result = nap.delay(tag, 10 * 86400)
    until_state(result, "SLEEPING")
    run = get_run(result.id, app=app)
    assert run.wait is not None and run.wait.until is not None
    assert run.wait.until > time.time() + 9 * 86400
    started = time.monotonic()
    assert wake_run(result.id, app=app) is True
    assert result.get(timeout=10) == "woke"
    assert time.monotonic() - started < 3.0
    assert count(redis_client, tag, "after") == 1
    assert wake_run(result.id, app=app) is False
    steps = {s.key: s.value for s in get_run(result.id, app=app).steps}
    assert steps["sleep#0"]["outcome"] == "woken"


def test_event_after_the_wait_resumes_with_its_payload(start_worker, tag, redis_client):
    """A WAITING run resumes with the payload of the event sent to its name and key."""
    from apps.waits_app import app, approval

    from celery_durable import get_run, send_event

    start_worker("apps.waits_app")
    name = event_name()
    result = approval.delay(tag, name, 42)
    until_state(result, "WAITING")
    run = get_run(result.id, app=app)
    assert run.wait is not None and (run.wait.event, run.wait.key) == (name, "42")
    assert result.info["awaited_event"] == name and result.info["event_key"] == "42"
    assert send_event(name, 42, {"by": "ann"}, app=app) == 1
    assert result.get(timeout=15) == {"by": "ann"}
    assert count(redis_client, tag, "before") == 1
    assert count(redis_client, tag, "passed") == 1


def test_event_sent_before_the_wait_is_delivered(start_worker, tag, redis_client):
    """An event sent before any run waits is kept and received when the run reaches its wait."""
    from apps.waits_app import app, approval

    from celery_durable import send_event

    name = event_name()
    assert send_event(name, "order-7", "early", app=app) == 0
    start_worker("apps.waits_app")
    result = approval.delay(tag, name, "order-7")
    assert result.get(timeout=15) == "early"
    assert count(redis_client, tag, "entered") == 1  # received inline, never suspended


def test_timeout_returns_none(start_worker, tag, redis_client):
    """A wait whose timeout passes returns None and the run goes on."""
    from apps.waits_app import approval

    start_worker("apps.waits_app")
    started = time.monotonic()
    result = approval.delay(tag, event_name(), "k", 1.0)
    assert result.get(timeout=15) is None
    assert time.monotonic() - started >= 1.0
    assert count(redis_client, tag, "passed") == 1


def test_event_nobody_waits_for_resumes_nothing(start_worker, tag, redis_client):
    """An event for a key nobody waits on returns 0 and leaves a run waiting on another key."""
    from apps.waits_app import app, approval

    from celery_durable import get_run, send_event, wake_run

    start_worker("apps.waits_app")
    name = event_name()
    result = approval.delay(tag, name, "a")
    until_state(result, "WAITING")
    assert send_event(name, "b", "for b", app=app) == 0
    assert send_event(event_name(), "a", "other name", app=app) == 0
    time.sleep(0.5)
    assert get_run(result.id, app=app).status == "WAITING"
    assert count(redis_client, tag, "entered") == 1
    assert wake_run(result.id, app=app) is True  # a woken wait returns None
    assert result.get(timeout=15) is None


def test_every_waiting_run_gets_the_event(start_worker, tag, redis_client):
    """Three runs waiting on the same name and key are all resumed by one event."""
    from apps.waits_app import app, approval

    from celery_durable import send_event

    start_worker("apps.waits_app")
    name = event_name()
    results = [approval.delay(f"{tag}-{i}", name, "shared") for i in range(3)]
    for result in results:
        until_state(result, "WAITING")
    assert send_event(name, "shared", [1, 2], app=app) == 3
    assert [r.get(timeout=15) for r in results] == [[1, 2]] * 3


def test_waiting_twice_does_not_get_the_same_event_twice(start_worker, tag, redis_client):
    """A run waiting twice on one name and key gets a buffered event once, then times out."""
    from apps.waits_app import app, approval_twice

    from celery_durable import send_event

    start_worker("apps.waits_app")
    name = event_name()
    assert send_event(name, 5, "only one", app=app) == 0
    result = approval_twice.delay(tag, name, 5, 1.0)
    assert result.get(timeout=15) == ["only one", None]


def test_one_event_wakes_a_run_once_with_two_workers(start_worker, tag, redis_client):
    """With two workers, events racing runs reaching their wait wake each run exactly once."""
    from apps.waits_app import app, approval

    from celery_durable import send_event

    start_worker("apps.waits_app")
    start_worker("apps.waits_app")
    name, rng = event_name(), random.Random(4)
    tags = [f"{tag}-{i}" for i in range(12)]
    results = [approval.delay(t, name, t, None, 0.3) for t in tags]
    for t in tags:  # each run needs ~0.3 s to reach its wait: send around that moment
        wait_for(lambda t=t: count(redis_client, t, "before"), 15, 0.005, f"{t} started")
        time.sleep(rng.uniform(0.0, 0.5))
        send_event(name, t, {"tag": t}, app=app)
    for t, result in zip(tags, results, strict=True):
        assert result.get(timeout=20) == {"tag": t}
        assert count(redis_client, t, "passed") == 1
        assert count(redis_client, t, "after") == 1
        assert count(redis_client, t, "entered") in (1, 2)


def test_concurrent_senders_and_a_waker_resume_a_run_once(start_worker, tag, redis_client):
    """Several senders and wake_run racing on one waiting run resume it exactly once."""
    from apps.waits_app import app, approval

    from celery_durable import send_event, wake_run

    start_worker("apps.waits_app")
    start_worker("apps.waits_app")
    name = event_name()
    result = approval.delay(tag, name, "k")
    until_state(result, "WAITING")
    resumed: list[int] = []
    barrier = threading.Barrier(5)

    def race(i: int) -> None:
        barrier.wait()
        resumed.append(int(wake_run(result.id, app=app)) if i == 4
                       else send_event(name, "k", i, app=app))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(resumed) == 1
    value = result.get(timeout=15)
    assert value in (None, 0, 1, 2, 3)
    assert count(redis_client, tag, "passed") == 1


def test_beat_task_wakes_runs_without_the_worker_sweeper(start_worker, tag, redis_client):
    """With the worker sweeper off, the sweep_due task (as beat sends it) wakes a sleep."""
    from apps.waits_app import app, nap

    start_worker("apps.waits_app", env={"WAITS_SWEEPER": "0"})
    result = nap.delay(tag, 1)
    until_state(result, "SLEEPING")
    time.sleep(2.0)
    assert result.state == "SLEEPING"  # nobody sweeps
    app.send_task("celery_durable.sweep_due")
    assert result.get(timeout=15) == "woke"


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its children, in KiB."""
    total = 0
    for p in [pid, *child_pids(pid)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


@pytest.mark.slow
def test_two_thousand_sleeping_runs_hold_no_worker_memory(start_worker, tag, redis_client,
                                                          capsys):
    """2,000 sleeping runs do not grow the worker's RSS, hold no ETA message, and all wake."""
    from apps.waits_app import app, nap_until

    from celery_durable.stores import get_store

    worker = start_worker("apps.waits_app", concurrency=4)
    # Warm up every code path (sleep, timer, wake) before the baseline.
    warm = time.time() + 3
    warmup = [nap_until.delay(f"{tag}-warm", warm) for _ in range(200)]
    for r in warmup:
        r.get(timeout=60)
    time.sleep(1.0)
    before = rss_kib(worker.pid)
    n, wake_at = 2000, time.time() + 30
    results = [nap_until.delay(tag, wake_at) for _ in range(n)]
    store = get_store(app)

    def all_sleeping() -> bool:
        pipe = redis_client.pipeline(transaction=False)
        for r in results:
            pipe.hget(store.run_key(r.id), "status")  # type: ignore[attr-defined]
        return all(s == b"SLEEPING" for s in pipe.execute())

    wait_for(all_sleeping, wake_at - time.time() - 2, 0.5, f"{n} runs to sleep")
    time.sleep(0.5)
    during = rss_kib(worker.pid)
    parked_in = time.time() - (wake_at - 30)
    inspect = app.control.inspect(destination=[f"{worker.name}@{socket.gethostname()}"],
                                  timeout=2)
    scheduled, reserved = inspect.scheduled() or {}, inspect.reserved() or {}
    assert scheduled and all(v == [] for v in scheduled.values()), scheduled
    assert all(v == [] for v in reserved.values()), reserved
    with capsys.disabled():
        print(f"\n2000 sleeping runs: worker RSS (main + {len(worker.pool_pids())} pool) "
              f"before {before / 1024:.1f} MiB, with them asleep {during / 1024:.1f} MiB "
              f"({(during - before) / 1024:+.1f} MiB); all asleep after {parked_in:.1f} s")
    assert during - before < 8 * 1024, f"RSS grew by {(during - before) / 1024:.1f} MiB"
    assert time.time() < wake_at, "parking 2000 runs took longer than their sleep"
    wait_for(lambda: count(redis_client, tag, "woke") >= n, 90, 0.5, f"{n} runs to wake")
    assert count(redis_client, tag, "woke") == n
    assert all(r.get(timeout=30) >= 1 for r in results[:50])



def test_flower_shows_sleeping_then_success(start_worker, flower, tag):  # noqa: F811
    """Flower lists a sleeping run as SLEEPING, then SUCCESS once it woke."""
    from apps.waits_app import nap
    from test_flower import states_until_success

    start_worker("apps.waits_app", extra_args=["-E"])
    time.sleep(1.0)  # let Flower's event consumer attach before the run starts
    result = nap.delay(tag, 2)
    seen = states_until_success(flower, result.id)
    assert "SLEEPING" in seen, seen


def test_flower_stops_showing_a_cancelled_run_as_sleeping(start_worker, flower, tag):  # noqa: F811
    """A run parked in a sleep has no worker to report its cancel: cancel_run itself sends
    Celery's task-revoked event, and (REVOKED cannot replace a custom state in Celery's event
    state) task-cancelled, so Flower shows it CANCELLED, with its revoked time, not SLEEPING.
    A running run's cancel shows REVOKED, as with plain Celery."""
    from apps.waits_app import nap
    from test_flower import _get, _task_state

    from celery_durable import cancel_run

    start_worker("apps.waits_app", extra_args=["-E"])
    time.sleep(1.0)  # let Flower's event consumer attach before the run starts
    result = nap.delay(tag, 3600)
    wait_for(lambda: _task_state(flower, result.id) == "SLEEPING", 30, 0.1,
             "Flower to show the run SLEEPING")
    assert cancel_run(result.id, app=nap.app)
    wait_for(lambda: _task_state(flower, result.id) == "CANCELLED", 30, 0.1,
             "Flower to show the cancelled run CANCELLED")
    info = _get(f"{flower}/api/task/info/{result.id}")
    assert isinstance(info, dict) and info["revoked"] is not None
    assert result.state == "REVOKED"

    queued = nap.apply_async((f"{tag}-q", 1), countdown=3600)  # PENDING in Flower, no worker
    wait_for(lambda: _task_state(flower, queued.id) is not None, 30, 0.1,
             "Flower to see the queued run")
    assert cancel_run(queued.id, app=nap.app)
    wait_for(lambda: _task_state(flower, queued.id) == "REVOKED", 30, 0.1,
             "Flower to show the queued run REVOKED")
