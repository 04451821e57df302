"""Contender 6: DBOS with ``@DBOS.step()`` steps on the same PostgreSQL, in-process.

DBOS runs inside the application process (no broker, no worker): a workflow
is started with ``DBOS.start_workflow`` (many in flight, on DBOS's executor
threads) or called directly (one at a time). Run as ``python -m
bench.dbos_bench --url URL --trials T --jobs J --latency-jobs K --counts
10,100,1000`` in its own process; prints JSON in the shape of
:func:`bench.measure.measure_contender`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import uuid
from typing import Any

from dbos import DBOS, SetWorkflowID

from .measure import jobs_for, summary


def _sqlalchemy_url(url: str) -> str:
    """A SQLAlchemy URL for a libpq URL or conninfo (socket directories included)."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    p = conninfo_to_dict(url)
    query = {"host": str(p["host"])} if str(p.get("host", "")).startswith("/") else {}
    return URL.create("postgresql+psycopg", username=p.get("user") or None,
                      password=p.get("password") or None,
                      host=None if query else p.get("host"),
                      port=int(p["port"]) if p.get("port") else None,
                      database=p.get("dbname"), query=query).render_as_string(
                          hide_password=False)


@DBOS.step()
def work(x: int) -> int:
    """The trivial step (same as the Celery contenders')."""
    return x + 1


@DBOS.workflow()
def job(n: int) -> dict[str, Any]:
    """n DBOS steps; returns the body time measured inside the workflow."""
    t0 = time.perf_counter()
    x = 0
    for _ in range(n):
        x = work(x)
    return {"n": n, "body": time.perf_counter() - t0, "x": x}


def _throughput(jobs: int) -> float:
    t0 = time.perf_counter()
    handles = [DBOS.start_workflow(job, 10) for _ in range(jobs)]
    for handle in handles:
        handle.get_result()
    return jobs / (time.perf_counter() - t0)


def _latency(k: int) -> float:
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        job(10)
        times.append(time.perf_counter() - t0)
    return statistics.fmean(times)


def _per_step(steps: int, jobs: int) -> float:
    return sum(float(job(steps)["body"]) for _ in range(jobs)) / (steps * jobs)


def _recovery(url: str, n: int, trials: int) -> dict[str, Any]:
    """DBOS's recovery of an interrupted ``n``-step workflow whose steps all completed.

    The workflow runs once under a fixed id; each trial flips it back to PENDING (what a
    crash leaves) and times ``DBOS._recover_pending_workflows()`` until the result is
    back: DBOS re-enqueues the workflow, one of its executors dequeues it and replays the
    ``n`` recorded steps. ``body`` is the replay alone, timed inside the workflow.
    """
    import psycopg

    workflow_id = str(uuid.uuid4())
    with SetWorkflowID(workflow_id):
        job(n)
    total, body = [], []
    for _ in range(trials):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE dbos.workflow_status SET status = 'PENDING' "
                         "WHERE workflow_uuid = %s", (workflow_id,))
        t0 = time.perf_counter()
        results = [h.get_result() for h in DBOS._recover_pending_workflows()]
        total.append(time.perf_counter() - t0)
        body.extend(float(r["body"]) for r in results if r.get("n") == n)
    return {"total": summary(total), "body": summary(body)}


def main() -> None:
    """Launch DBOS on the given database, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--latency-jobs", type=int, default=10)
    parser.add_argument("--counts", default="10,100,1000")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--recover", type=int, default=1000,
                        help="also time DBOS's recovery of a workflow with this many completed "
                             "steps (0: skip)")
    ns = parser.parse_args()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "celery-durable-bench", "system_database_url": _sqlalchemy_url(ns.url),
                 "log_level": "WARNING"})
    DBOS.launch()
    try:
        for _ in range(10):
            job(10)                                                  # warm-up
        out: dict[str, Any] = {"label": "DBOS", "throughput_jobs": ns.jobs}
        out["throughput"] = summary([_throughput(ns.jobs) for _ in range(ns.trials)])
        out["latency"] = summary([_latency(ns.latency_jobs) for _ in range(ns.trials)])
        out["per_step"] = {}
        for n in (int(c) for c in ns.counts.split(",")):
            jobs = jobs_for(n, ns.quick)
            out["per_step"][str(n)] = summary([_per_step(n, jobs) for _ in range(ns.trials)])
        if ns.recover:
            out["recovery"] = {str(ns.recover): _recovery(ns.url, ns.recover,
                                                          2 if ns.quick else ns.trials)}
    finally:
        DBOS.destroy()
    print("BENCH-JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
