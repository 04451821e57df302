"""Nothing repeats when a holder is frozen or when hosts' clocks disagree.

* A worker process frozen (SIGSTOP) past its lease never starts another step once it
  wakes: another worker took the run over meanwhile.
* Workers whose clocks run 90 s behind or ahead (libfaketime, from PyPI) keep leases and
  timers right on both stores: every time that decides is the store's clock.

Every count and every time is taken outside the workers (Redis counters, Redis's clock).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from harness import skewed, wait_for

from celery_durable import RunStatus, get_run

pytestmark = pytest.mark.worker


def count(redis_client, key: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(key) or 0)


def test_the_skew_is_real(tmp_path: Path) -> None:
    """The fake clock really moves the wall clock of a child process (the tests below rely
    on it): a check of the tool, not of the library."""
    import subprocess
    import sys

    code = "import time; print(time.time())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **skewed("-90s")},
                         capture_output=True, text=True, check=True)
    assert float(out.stdout) < time.time() - 80


def test_a_frozen_holder_never_starts_a_step_after_its_lease(start_worker, tag,
                                                             redis_client) -> None:
    """SIGSTOP the pool process holding a run just after step 0, for three lease TTLs; another
    worker takes the run over and runs step 1. Woken, the frozen process starts nothing:
    step 1 starts once (it ran twice, 3 of 3 tries)."""
    from apps.semantics_app import app, paused

    env = {"TEST_LEASE_TTL": "2"}
    first = start_worker("apps.semantics_app", concurrency=1, env=env)
    result = paused.delay(tag, 3.0)
    wait_for(lambda: redis_client.get(f"{tag}:pausing"), 20, message="step 0 done")
    (pool,) = first.pool_pids()
    os.kill(pool, signal.SIGSTOP)
    try:
        start_worker("apps.semantics_app", concurrency=1, env=env)
        assert result.get(timeout=40) == "done"
        assert count(redis_client, f"{tag}:step1") == 1
    finally:
        os.kill(pool, signal.SIGCONT)
    time.sleep(4)  # the woken process finishes its pause and meets step 1
    assert count(redis_client, f"{tag}:step1") == 1
    assert count(redis_client, f"{tag}:step0") == 1
    assert get_run(result.id, app=app).status is RunStatus.SUCCEEDED


@pytest.mark.parametrize("offset", ["-90s", "+90s"])
def test_a_sleep_wakes_by_the_store_s_clock_on_redis(start_worker, tag, redis_client,
                                                     offset: str) -> None:
    """``sleep(3)`` on a worker 90 s behind (it woke at once) or ahead (it slept 93 s): the
    run wakes about 3 s later by the store's clock."""
    from apps.semantics_app import clocked_sleep

    start_worker("apps.semantics_app", concurrency=1, env=skewed(offset))
    assert clocked_sleep.delay(tag, 3.0).get(timeout=40) == 3.0
    slept = float(redis_client.get(f"{tag}:woke-at")) - float(redis_client.get(
        f"{tag}:slept-at"))
    assert slept >= 2.5, slept
    assert count(redis_client, f"{tag}:before-sleep") == 1
