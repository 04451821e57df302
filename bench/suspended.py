"""Worker memory with many suspended runs (``sleep()`` from ``celery_durable.controls.waits``).

Sends ``count`` runs of ``bench.sleeper`` (one step, then a one-day durable
sleep) to a running RedisStore worker, waits until the store reports them
all ``SLEEPING``, and compares the worker's resident memory (main process +
pool) before and after. A suspended run must hold no worker memory: its
timer lives in the store, not in a broker ETA message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from celery_durable.records import RunStatus

from .worker import BenchWorker


def available() -> str | None:
    """None if ``celery_durable.controls.waits.sleep`` exists, else why not."""
    try:
        from celery_durable.controls.waits import sleep  # noqa: F401
    except ImportError as exc:
        return f"celery_durable.controls.waits.sleep is not available yet ({exc})"
    return None


def _sleeping(redis_url: str, prefix: str, limit: int) -> int:
    from celery_durable.stores.redis import RedisStore

    store = RedisStore.from_url(redis_url, prefix=f"{prefix}durable:")
    try:
        return len(store.list_runs(status=RunStatus.SLEEPING, limit=limit))
    finally:
        store.close()


def measure(app: Celery, worker: BenchWorker, *, count: int, redis_url: str, prefix: str,
            log: Callable[[str], None], timeout: float = 600.0) -> dict[str, Any]:
    """RSS before/after ``count`` runs are suspended in the store."""
    for r in [app.send_task("bench.durable", args=(10,), queue=worker.queue)
              for _ in range(50)]:
        r.get(timeout=60)                                  # warm the pool up first
    before = worker.rss_kib()
    t0 = time.perf_counter()
    for i in range(count):
        app.send_task("bench.sleeper", args=(i,), queue=worker.queue)
    deadline = time.monotonic() + timeout
    suspended = 0
    samples: list[tuple[int, int]] = [(0, before["total"])]
    while time.monotonic() < deadline:
        suspended = _sleeping(redis_url, prefix, count + 10)
        samples.append((suspended, worker.rss_kib()["total"]))
        if suspended >= count:
            break
        time.sleep(2.0)
    elapsed = time.perf_counter() - t0
    time.sleep(1.0)
    after = worker.rss_kib()
    log(f"  {suspended} runs suspended in {elapsed:.1f}s; worker RSS "
        f"{before['total'] / 1024:.1f} -> {after['total'] / 1024:.1f} MiB")
    return {"count": count, "suspended": suspended, "seconds": elapsed,
            "rss_before_kib": before, "rss_after_kib": after,
            "delta_kib": after["total"] - before["total"],
            "samples": samples[:: max(1, len(samples) // 8)] + samples[-1:],
            "bytes_per_run": (after["total"] - before["total"]) * 1024 / max(suspended, 1)}
