"""Per-step overhead of a durable step versus a plain function call, on real Redis.

Runs one durable run of N steps in this process (``task.apply``: the real
runner and the real RedisStore, one checkpoint write per step), times every
step call, and compares with the same loop of plain calls. The last step
fails once, so the run is re-executed and the N completed steps are replayed
from their checkpoints: that pass is timed too.

    .venv/bin/python bench/step_overhead.py [--steps 2000] [--redis redis://127.0.0.1:6379/0]

Prints median / min / max / p99 in microseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

from celery import Celery

from celery_durable import RetryAfter, durable_task, step

timings: dict[str, list[float]] = {"plain": [], "durable": [], "replay": []}
_phase = ["durable"]
_run_id = [""]
_failed_once: set[str] = set()


def work(i: int) -> int:
    return i + 1


durable_work = step(name="work")(work)


@step(max_attempts=2)
def last(run_id: str) -> str:
    if run_id not in _failed_once:
        _failed_once.add(run_id)
        raise RetryAfter(0)
    return "done"


def body(n: int) -> str:
    clock = time.perf_counter
    samples = timings[_phase[0]]
    for i in range(n):
        t0 = clock()
        durable_work(i)
        samples.append(clock() - t0)
    _phase[0] = "replay"  # the next execution of the body replays every step
    return last(_run_id[0])


def plain_loop(n: int) -> None:
    clock = time.perf_counter
    samples = timings["plain"]
    for i in range(n):
        t0 = clock()
        work(i)
        samples.append(clock() - t0)


def stats(samples: list[float]) -> str:
    us = sorted(s * 1e6 for s in samples)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return (f"median {statistics.median(us):8.1f}  min {us[0]:8.1f}  max {us[-1]:9.1f}  "
            f"p99 {p99:8.1f}  (n={len(us)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL",
                                                          "redis://127.0.0.1:6379") + "/0")
    args = parser.parse_args()

    prefix = f"bench-overhead-{uuid.uuid4().hex[:8]}:"
    app = Celery("step_overhead", broker="memory://", backend=args.redis,
                 set_as_current=False)
    app.conf.update(durable_key_prefix=prefix, durable_result_retention=60)
    task = durable_task(app=app, name="bench.step_overhead")(body)

    plain_loop(args.steps)
    _run_id[0] = run_id = f"bench-{uuid.uuid4().hex}"
    started = time.perf_counter()
    result = task.apply(args=(args.steps,), task_id=run_id)
    elapsed = time.perf_counter() - started
    assert result.get() == "done", result.traceback

    client = app.backend.client
    pings = []
    for _ in range(2000):
        t0 = time.perf_counter()
        client.ping()
        pings.append(time.perf_counter() - t0)
    client.delete(f"{prefix}run:{{{run_id}}}", f"{prefix}due", f"{prefix}runs",
                  f"celery-task-meta-{run_id}")

    n = args.steps
    plain = statistics.median(timings["plain"]) * 1e6
    durable = statistics.median(timings["durable"]) * 1e6
    replay = statistics.median(timings["replay"]) * 1e6
    print(f"{n} steps in one run on {args.redis} (durable_key_prefix {prefix!r})")
    print(f"plain call      {stats(timings['plain'])}")
    print(f"durable step    {stats(timings['durable'])}")
    print(f"Redis PING RTT  {stats(pings)}")
    print(f"replayed step   {stats(timings['replay'])}")
    print(f"overhead per durable step (median): {durable - plain:.1f} us; "
          f"per replayed step: {replay - plain:.1f} us")
    print(f"whole run incl. replay of {n} steps: {elapsed * 1000:.0f} ms")


if __name__ == "__main__":
    main()
