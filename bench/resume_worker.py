"""Resume cost as a user sees it: from a step's failure to its retry in a real worker.

A ``bench.resumer`` run does N checkpointed steps, then its ``flaky`` step
fails once with a retryable error (retry delay 0). The engine parks the run,
publishes it again, and a new delivery takes the lease, loads the N
checkpoints, replays the N steps and runs ``flaky`` again. The step notes the
wall-clock time just before it raises and again as its second attempt
starts, in a Redis hash outside the store (same machine, same clock); the
difference is the resume cost: park + publish + broker delivery + ``begin``
+ replay of N steps. Runs go one at a time, so nothing else is in flight.

:mod:`bench.resume` measures the store part of the same path in-process.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis
from celery import Celery

from .measure import interleaved, summary


def _one(app: Celery, client: redis.Redis, queue: str, n: int,
         prefix: str) -> tuple[float, float]:
    probe = f"{prefix}resume-probe:{uuid.uuid4().hex}"
    result = app.send_task("bench.resumer", args=(n, probe), queue=queue)
    if result.get(timeout=120) != n:
        raise RuntimeError(f"bench.resumer({n}) returned a wrong value")
    times = client.hgetall(probe)
    client.delete(probe)
    if set(times) != {b"fail", b"delivered", b"resumed"} or not float(times[b"delivered"]):
        raise RuntimeError(f"bench.resumer({n}) left probe fields {times}")
    failed, delivered = float(times[b"fail"]), float(times[b"delivered"])
    return float(times[b"resumed"]) - failed, delivered - failed


def measure(app: Celery, queue: str, counts: tuple[int, ...], trials: int, redis_url: str,
            prefix: str) -> dict[str, Any]:
    """Resume cost per N, trials interleaved over the counts (:func:`.measure.interleaved`).

    ``{N: {"total": summary, "delivery": summary}}`` in seconds: ``total``
    from the failure to the step's second attempt, ``delivery`` the part up to
    the redelivered message reaching a pool process (before ``begin``). The
    first round warms the worker's pool processes up and is dropped.
    """
    client = redis.Redis.from_url(redis_url)
    total: dict[int, list[float]] = {n: [] for n in counts}
    delivery: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for n, kept in interleaved(counts, trials):
            whole, part = _one(app, client, queue, n, prefix)
            if kept:
                total[n].append(whole)
                delivery[n].append(part)
    finally:
        client.close()
    return {str(n): {"total": summary(total[n]), "delivery": summary(delivery[n])}
            for n in counts}
