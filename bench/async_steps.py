"""Async durable tasks: the event loop's cost per delivery, and parallel steps.

In one process, on real Redis (the RedisStore, one checkpoint write per step), each run
going through the real runner (``task.apply``):

* ``sync 10 steps``: a sync body calling 10 sync steps;
* ``async 10 steps``: an ``async def`` body awaiting 10 async steps one after another
  (the difference is the event loop a delivery starts, and the coroutines);
* ``gather 10 x 50 ms``: an async body gathering 10 async steps that each wait 50 ms
  (``asyncio.sleep``): run one after another they would take 500 ms.

    .venv/bin/python -m bench.async_steps [--runs 50] [--redis redis://127.0.0.1:6379/0]

Prints the median and p90 wall time per run in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import Celery

from celery_durable import durable_task, step


@step(name="work")
def work(i: int) -> int:
    """A sync step."""
    return i + 1


@step(name="work")
async def awork(i: int) -> int:
    """The same step, async."""
    return i + 1


@step(name="call")
async def call(i: int, seconds: float) -> int:
    """An async step waiting ``seconds`` (a stand-in for an HTTP call)."""
    await asyncio.sleep(seconds)
    return i


def sync_body(n: int) -> int:
    """``n`` sync steps."""
    return sum(work(i) for i in range(n))


async def async_body(n: int) -> int:
    """``n`` async steps, one after another."""
    total = 0
    for i in range(n):
        total += await awork(i)
    return total


async def gather_body(n: int, seconds: float) -> int:
    """``n`` async steps at once."""
    return sum(await asyncio.gather(*(call(i, seconds) for i in range(n))))


def _timed(run: Callable[[], Any], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return samples


def main() -> None:
    """Run each kind ``--runs`` times, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", os.environ.get(
        "REDIS_URL", "redis://127.0.0.1:6379")).rstrip("/") + "/0")
    args = parser.parse_args()
    prefix = f"bench-async-{uuid.uuid4().hex[:8]}:"
    app = Celery("async_steps", broker="memory://", backend=args.redis, set_as_current=False)
    app.conf.update(durable_key_prefix=prefix, durable_result_retention=60)
    tasks = {"sync 10 steps": (durable_task(app=app, name="bench.sync10")(sync_body), (10,), 55),
             "async 10 steps": (durable_task(app=app, name="bench.async10")(async_body), (10,),
                                55),
             "gather 10 x 50 ms": (durable_task(app=app, name="bench.gather10")(gather_body),
                                   (10, 0.05), 45)}
    samples: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(args.runs):  # interleaved: the machine's load is shared alike
        for name, (task, task_args, expected) in tasks.items():
            def one(task: Any = task, task_args: tuple[Any, ...] = task_args,
                    expected: int = expected) -> None:
                result = task.apply(args=task_args)
                assert result.get() == expected, result.traceback
            samples[name] += _timed(one, 1)
    client = app.backend.client
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    print(f"{args.runs} runs of each, in process (task.apply, RedisStore on {args.redis}); "
          "wall time per run")
    print(f"{'run':<20} {'median':>9} {'p90':>9}")
    for name, values in samples.items():
        ms = sorted(v * 1000 for v in values)
        print(f"{name:<20} {statistics.median(ms):7.2f}ms {ms[int(len(ms) * 0.9)]:7.2f}ms")
    sync, asyn = (statistics.median(samples[k]) * 1000 for k in ("sync 10 steps",
                                                                  "async 10 steps"))
    print(f"event loop and coroutines per delivery (async - sync, median): {asyn - sync:.2f} ms")
    print("gather of 10 steps of 50 ms: "
          f"{statistics.median(samples['gather 10 x 50 ms']) * 1000:.1f} ms "
          "(one after another: 500 ms)")


if __name__ == "__main__":
    main()
