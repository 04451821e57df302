"""Resume cost after a failure at step N, through the engine's real resume path.

A run does N successful steps through :func:`celery_durable.engine.steps.run_step`
(every checkpoint written by the store), then step N+1 raises a retryable
error, which parks the run (``RETRYING``) exactly as in a worker. Each trial
then is one resumed delivery: ``store.begin()`` (takes the lease and loads all
N+1 checkpoints) plus the replay of the N completed steps through
``run_step``; the failed step is then attempted again (untimed) and parks the
run for the next trial. Round trips to the store during begin + replay are
counted (Redis: packets sent by redis-py, a pipeline is one; Django: SQL
statements executed).

Run as ``python -m bench.resume --store redis|django --counts 10,100,1000``
in its own process (Django is configured per process); prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery_durable.config import DurableSettings
from celery_durable.engine._flow import Reenqueue
from celery_durable.engine.context import RunContext
from celery_durable.engine.leases import owner_id
from celery_durable.engine.steps import run_step
from celery_durable.retry import RetryPolicy, fixed
from celery_durable.serialization import get_serializer
from celery_durable.stores.base import CheckpointStore

from .measure import interleaved

ROUND_TRIPS = [0]


def work(x: int) -> int:
    """The trivial step body (same as the workers')."""
    return x + 1


def boom() -> None:
    """The step that fails at position N."""
    raise ConnectionError("injected failure")


def _redis_store(prefix: str) -> tuple[CheckpointStore, Callable[[], None]]:
    import redis
    from redis.connection import Connection

    from celery_durable.stores.redis import RedisStore

    class CountingConnection(Connection):  # type: ignore[misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            ROUND_TRIPS[0] += 1
            super().send_packed_command(command, check_health)

    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    return RedisStore(client, prefix=f"{prefix}resume:"), client.close


def _django_store() -> tuple[CheckpointStore, Callable[[], None]]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_settings")
    import django

    django.setup()
    from django.db import connection

    from celery_durable_django.store import DjangoStore

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        ROUND_TRIPS[0] += 1
        return execute(sql, params, many, context)

    wrapper = connection.execute_wrapper(count)
    wrapper.__enter__()
    return DjangoStore(), lambda: wrapper.__exit__(None, None, None)


def _context(store: CheckpointStore, run_id: str, begin: Any) -> RunContext:
    settings = DurableSettings()
    policy = RetryPolicy(max_attempts=1_000_000, backoff=fixed(0.0))
    return RunContext(task=None, run_id=run_id, token=begin.token, store=store,  # type: ignore[arg-type]
                      settings=settings, serializer=get_serializer("json"), policy=policy,
                      eager=True, checkpoints=begin.checkpoints)


def _begin(store: CheckpointStore, run_id: str) -> Any:
    begin = store.begin(run_id, task="bench.resume", args="[]", kwargs="{}", options={},
                        owner=owner_id(), lease_ttl=60.0, max_recoveries=5)
    if begin.outcome != "acquired":
        raise RuntimeError(f"resume benchmark: begin() returned {begin.outcome}")
    return begin


def _fail_at_end(ctx: RunContext) -> None:
    try:
        run_step(ctx, "boom", boom, (), {}, {})
    except Reenqueue:
        return
    raise RuntimeError("the injected failure did not park the run")


def _prepared(store: CheckpointStore, n: int) -> str:
    """A run that did ``n`` steps and then failed at step n + 1 (parked for a retry)."""
    run_id = f"resume-{n}-{uuid.uuid4().hex[:8]}"
    ctx = _context(store, run_id, _begin(store, run_id))
    for i in range(n):
        run_step(ctx, "work", work, (i,), {}, {})
    _fail_at_end(ctx)
    return run_id


def _trial(store: CheckpointStore, run_id: str, n: int) -> tuple[float, float, int]:
    """One resumed delivery: (load seconds, replay seconds, round trips); parks the run again."""
    ROUND_TRIPS[0] = 0
    t0 = time.perf_counter()
    begin = _begin(store, run_id)
    ctx = _context(store, run_id, begin)
    t1 = time.perf_counter()
    for i in range(n):
        run_step(ctx, "work", work, (i,), {}, {})
    t2 = time.perf_counter()
    trips = ROUND_TRIPS[0]
    if len(begin.checkpoints) != n + 1:
        raise RuntimeError(f"begin() loaded {len(begin.checkpoints)} checkpoints, "
                           f"expected {n + 1}")
    _fail_at_end(ctx)
    return t1 - t0, t2 - t1, trips


def measure(store: CheckpointStore, counts: list[int], trials: int) -> dict[int, Any]:
    """Trials of (begin + replay of n steps) for runs that failed at step n + 1.

    The step counts' trials are interleaved (:func:`~bench.measure.interleaved`).
    (A full garbage collection before each trial was tried: freeing arenas made
    every trial pay for fresh memory, ~0.2 ms at N = 10.)
    """
    runs = {n: _prepared(store, n) for n in counts}
    out: dict[int, dict[str, Any]] = {
        n: {"load": [], "replay": [], "total": [], "round_trips": 0} for n in counts}
    for n, kept in interleaved(counts, trials):
        load, replay, trips = _trial(store, runs[n], n)
        if kept:
            figures = out[n]
            figures["load"].append(load)
            figures["replay"].append(replay)
            figures["total"].append(load + replay)
            figures["round_trips"] = max(figures["round_trips"], trips)
    return out


def main() -> None:
    """Measure and print JSON: ``{N: {"load": [...], "replay": [...], ...}}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["redis", "django"], required=True)
    parser.add_argument("--counts", default="10,100,1000")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--prefix", default=os.environ.get("BENCH_PREFIX", "bench-local:"))
    ns = parser.parse_args()
    store, close = _redis_store(ns.prefix) if ns.store == "redis" else _django_store()
    try:
        out = measure(store, [int(n) for n in ns.counts.split(",")], ns.trials)
    finally:
        close()
    print("BENCH-JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
