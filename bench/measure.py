"""Measurements against a running worker: throughput, latency and per-step cost.

* **throughput** — ``jobs`` 10-step jobs sent at once, jobs/s from the first
  send to the last result;
* **latency** — one 10-step job at a time, send → result, mean of ``k`` jobs;
* **per step** — the body time the task reports (``perf_counter`` inside the
  worker) divided by its step count, for 10-, 100- and 1,000-step jobs.

Every figure is repeated ``trials`` times; :func:`summary` gives the median,
min and max over the trials.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, chain
from celery.result import AsyncResult, ResultSet


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min and max of repeated trials (and the trials themselves)."""
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": list(values)}


@dataclass
class Contender:
    """One way of running the 10-step job on a Celery worker."""

    key: str
    label: str
    task: str | None                  # task name; None for the chain
    env: dict[str, str] = field(default_factory=dict)
    per_step: bool = True             # does its job report a body time?
    throughput_jobs: int = 400


def send_job(app: Celery, contender: Contender, steps: int, queue: str) -> AsyncResult:
    """Start one job of ``steps`` steps; the chain is ``steps`` linked tasks."""
    if contender.task is None:
        links = [app.signature("bench.link", args=(0,), queue=queue)]
        links += [app.signature("bench.link", queue=queue) for _ in range(steps - 1)]
        return chain(*links).apply_async()
    return app.send_task(contender.task, args=(steps,), queue=queue)


def _wait_all(results: list[AsyncResult], timeout: float) -> list[Any]:
    return list(ResultSet(results).join_native(timeout=timeout, propagate=True))


def throughput(app: Celery, contender: Contender, queue: str, jobs: int,
               steps: int = 10) -> float:
    """Jobs per second with ``jobs`` jobs in flight at once."""
    t0 = time.perf_counter()
    results = [send_job(app, contender, steps, queue) for _ in range(jobs)]
    _wait_all(results, timeout=300)
    return jobs / (time.perf_counter() - t0)


def latency(app: Celery, contender: Contender, queue: str, k: int, steps: int = 10) -> float:
    """Mean seconds from send to result of one job at a time."""
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        send_job(app, contender, steps, queue).get(timeout=120)
        times.append(time.perf_counter() - t0)
    return statistics.fmean(times)


def per_step(app: Celery, contender: Contender, queue: str, steps: int, jobs: int) -> float:
    """Seconds per step measured inside the task body, over ``jobs`` sequential jobs."""
    body = 0.0
    for _ in range(jobs):
        result = send_job(app, contender, steps, queue).get(timeout=600)
        body += float(result["body"])
    return body / (steps * jobs)


def jobs_for(steps: int, quick: bool) -> int:
    """How many sequential jobs one per-step trial averages over."""
    n = max(1, 200 // steps)
    return max(1, n // 4) if quick else n


def trials(fn: Callable[[], float], count: int) -> dict[str, Any]:
    """Run ``fn`` ``count`` times and summarize."""
    return summary([fn() for _ in range(count)])


def measure_contender(app: Celery, contender: Contender, queue: str, *, n_trials: int,
                      latency_jobs: int, step_counts: tuple[int, ...], quick: bool,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """All worker-side figures of one contender (its worker must be running)."""
    out: dict[str, Any] = {"label": contender.label}
    _wait_all([send_job(app, contender, 10, queue) for _ in range(20)], timeout=120)  # warm-up
    jobs = max(20, contender.throughput_jobs // (4 if quick else 1))
    out["throughput"] = trials(lambda: throughput(app, contender, queue, jobs), n_trials)
    out["throughput_jobs"] = jobs
    log(f"  throughput {out['throughput']['median']:.1f} jobs/s ({jobs} in flight)")
    out["latency"] = trials(lambda: latency(app, contender, queue, latency_jobs), n_trials)
    log(f"  latency {out['latency']['median'] * 1e3:.2f} ms")
    out["per_step"] = {}
    if contender.per_step:
        for steps in step_counts:
            n_jobs = jobs_for(steps, quick)
            res = trials(lambda s=steps, j=n_jobs: per_step(app, contender, queue, s, j),
                         n_trials)
            out["per_step"][str(steps)] = res
            log(f"  per step @{steps}: {res['median'] * 1e6:.1f} us")
    return out
