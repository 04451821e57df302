"""CPU cost of the Redis store's hot paths, in-process (for before/after comparisons).

On a shared machine wall-clock round trips swing by 2x from one second to
the next, so this measures *CPU time of this process* (``process_time``)
per operation, best of several rounds:

* ``hset``      — a bare redis-py ``HSET`` (the raw ideal's step);
* ``evalsha``   — a bare ``EVALSHA`` of the SAVE_STEP script;
* ``save_step`` — ``RedisStore.save_step`` (record → args → EVALSHA);
* ``run_step``  — ``celery_durable.engine.steps.run_step`` (a whole checkpointed step);
* ``parse_run`` — building the RunRecord of a run with 1,000 checkpoints.

    .venv/bin/python -m bench.hotpath [--redis URL] [--ops 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable

import redis

from celery_durable.engine.steps import run_step
from celery_durable.records import StepRecord, StepStatus
from celery_durable.stores.redis import RedisStore
from celery_durable.stores.redis._codec import checkpoint_args, parse_run

from .resume import _begin, _context, work


def _cpu_per_op(fn: Callable[[int], object], ops: int) -> float:
    t0 = time.process_time()
    for i in range(ops):
        fn(i)
    return (time.process_time() - t0) / ops


def main() -> None:
    """Print the best-of-rounds CPU µs per operation of each hot path."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    ns = parser.parse_args()
    prefix = f"bench-hotpath-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(ns.redis)
    store = RedisStore(client, prefix=prefix)
    try:
        run_id = uuid.uuid4().hex
        begin = _begin(store, run_id)
        ctx = _context(store, run_id, begin)
        key = store.run_key(run_id)
        sha = store._scripts["SAVE_STEP"].sha
        rec = StepRecord(5, "work#5", "work", StepStatus.SUCCEEDED, 1, value="6",
                         started_at=time.time(), finished_at=time.time())
        args = checkpoint_args(rec)
        paths: dict[str, Callable[[int], object]] = {
            "hset": lambda i: client.hset(f"{prefix}raw", f"v:{i}", json.dumps(i)),
            "evalsha": lambda i: client.evalsha(sha, 1, key, begin.token, 10**6 + i, args[1],
                                                args[2]),
            "save_step": lambda i: store.save_step(run_id, begin.token, rec),
            "run_step": lambda i: run_step(ctx, "work", work, (i,), {}, {}),
        }
        best = {name: min(_cpu_per_op(fn, ns.ops) for _ in range(ns.rounds))
                for name, fn in paths.items()}
        other = uuid.uuid4().hex
        octx = _context(store, other, _begin(store, other))
        for i in range(1000):
            run_step(octx, "work", work, (i,), {}, {})
        flat = client.execute_command("HGETALL", store.run_key(other))
        if isinstance(flat, dict):
            flat = [x for kv in flat.items() for x in kv]
        best["parse_run(1000)"] = min(_cpu_per_op(lambda i: parse_run(other, flat), 20)
                                      for _ in range(ns.rounds))
        for name, seconds in best.items():
            print(f"{name:16s} {seconds * 1e6:8.1f} µs CPU")
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main()
