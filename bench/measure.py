"""Measurements against a running worker: throughput, latency and per-step cost.

* **throughput** — a queue pre-filled with ``jobs`` 10-step jobs, jobs/s
  from the moment the worker starts consuming to the last result;
* **latency** — one 10-step job at a time, send → result, mean of ``k`` jobs;
* **per step** — the body time the task reports (``perf_counter`` inside the
  worker) divided by its step count, for 10-, 100- and 1,000-step jobs;
* **paired** — the same per-step figure for a store and its physical
  reference (raw HSET, raw INSERT + COMMIT), interleaved on one worker.

Every figure is repeated ``trials`` times; :func:`summary` gives the median,
min and max over the trials.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
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
    pair_with: str | None = None      # reference task interleaved for the per-step ratio
    pair_throughput: list[Contender] = field(default_factory=list)  # alternated throughput


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
    """Jobs per second draining a queue pre-filled with ``jobs`` jobs.

    The worker stops consuming (remote control ``cancel_consumer``), the jobs
    are sent, and the clock runs from ``add_consumer`` to the last result, so
    the driver's own publishing (which shares the 2 cores) is not counted.
    """
    app.control.cancel_consumer(queue, reply=True, limit=1, timeout=5)
    results = [send_job(app, contender, steps, queue) for _ in range(jobs)]
    time.sleep(0.2)
    t0 = time.perf_counter()
    app.control.add_consumer(queue, reply=True, limit=1, timeout=5)
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


def paired(app: Celery, queue: str, task: str, reference: str, steps: int, jobs: int,
           rounds: int) -> dict[str, Any]:
    """Per-step cost of ``task`` and of ``reference``, interleaved on the same worker.

    Alternating the two in every round cancels the drift of a shared
    machine's load; the ratio is taken per round.
    """
    a = Contender("a", "a", task)
    b = Contender("b", "b", reference)
    mine: list[float] = []
    ref: list[float] = []
    pair = [(b, ref), (a, mine)]
    for i in range(rounds):  # the order flips every round, so a steady drift cancels too
        for contender, values in (pair if i % 2 == 0 else pair[::-1]):
            values.append(per_step(app, contender, queue, steps, jobs))
    return {"self": summary(mine), "reference": summary(ref),
            "ratio": summary([m / r for m, r in zip(mine, ref, strict=True)])}


def paired_throughput(app: Celery, queue: str, contender: Contender,
                      references: dict[str, Contender], rounds: int) -> dict[str, Any]:
    """Throughput of ``contender`` and of each reference, alternated on the same worker.

    Every worker runs the same app (all tasks registered, same pool), so
    alternating the contenders round by round on one worker compares them
    under the same load; the ratios are taken per round.
    """
    mine: list[float] = []
    refs: dict[str, list[float]] = {key: [] for key in references}
    order = [(contender, mine), *((ref, refs[key]) for key, ref in references.items())]
    for i in range(rounds):  # the order flips every round, so a steady drift cancels too
        for job, values in (order if i % 2 == 0 else order[::-1]):
            values.append(throughput(app, job, queue, job.throughput_jobs))
    out: dict[str, Any] = {"self": summary(mine)}
    for key, values in refs.items():
        out[key] = {"throughput": summary(values),
                    "ratio": summary([m / r for m, r in zip(mine, values, strict=True)])}
    return out


def interleaved(counts: Sequence[int], trials: int) -> Iterator[tuple[int, bool]]:
    """``(N, kept)`` for ``trials + 1`` rounds of one trial per N in ``counts``.

    The order rotates every round, so no N always follows the same one and a
    machine's drift lands on every N alike; the first round warms up
    (``kept`` is False).
    """
    for round_ in range(trials + 1):
        turn = round_ % len(counts)
        for n in [*counts[turn:], *counts[:turn]]:
            yield n, round_ > 0


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
    if contender.pair_throughput:
        refs = {c.key: Contender(c.key, c.label, c.task,
                                 throughput_jobs=max(20, c.throughput_jobs // (4 if quick else 1)))
                for c in contender.pair_throughput}
        me = Contender(contender.key, contender.label, contender.task, throughput_jobs=jobs)
        res = paired_throughput(app, queue, me, refs, max(n_trials, 3))
        out["paired_throughput"] = res
        log("  paired throughput: " + ", ".join(
            f"{res['self']['median']:.0f} vs {key} {res[key]['throughput']['median']:.0f} jobs/s "
            f"(ratio {res[key]['ratio']['median']:.2f})" for key in refs))
    if contender.pair_with and contender.task:
        out["paired"] = {"reference": contender.pair_with}
        for steps in step_counts:
            rounds = max(n_trials, 3) if quick or steps >= 1000 else 2 * n_trials - 1
            res = paired(app, queue, contender.task, contender.pair_with, steps,
                         jobs_for(steps, quick), rounds)
            out["paired"][str(steps)] = res
            log(f"  paired with {contender.pair_with} @{steps}: "
                f"{res['self']['median'] * 1e6:.1f} vs {res['reference']['median'] * 1e6:.1f} us"
                f" per step, ratio {res['ratio']['median']:.2f}")
    return out
