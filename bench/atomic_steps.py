"""Per-step cost of a transactional step (``@step(atomic=True)``) on the Django store.

Every step inserts one row (an auth group). Three ways, in one process, on one
PostgreSQL (or MariaDB/SQLite) database, interleaved trial by trial:

* ``atomic``: ``@step(atomic=True)``: the insert and the checkpoint in one transaction
  (insert, checkpoint, COMMIT: one commit per step);
* ``plain+tx``: a plain step whose function wraps its insert in ``transaction.atomic()``
  (what a user writes without the option: two commits per step, at-least-once);
* ``plain``: a plain step inserting in autocommit (two commits, at-least-once).

Each run goes through the real runner (``task.apply``) and the real DjangoStore;
every step call is timed; the table gives the median per step.

    BENCH_DB=postgres BENCH_PG_URL=postgresql://postgres@127.0.0.1/test \\
        .venv/bin/python -m bench.atomic_steps [--steps 1000] [--trials 5]

(the database must be migrated: ``python -m bench.djangodb`` with the same variables).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_settings")

import django

django.setup()

from celery import Celery  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from celery_durable import durable_task, step  # noqa: E402

WAYS = ("atomic", "plain+tx", "plain")
timings: dict[str, list[float]] = {way: [] for way in WAYS}


def _insert(name: str) -> int:
    return int(Group.objects.create(name=name).pk)


@step(atomic=True, name="insert")
def insert_atomic(name: str) -> int:
    """The row and the checkpoint in one transaction."""
    return _insert(name)


@step(name="insert")
def insert_in_own_transaction(name: str) -> int:
    """The row in the step's own transaction; the checkpoint after it."""
    with transaction.atomic():
        return _insert(name)


@step(name="insert")
def insert_autocommit(name: str) -> int:
    """The row in autocommit; the checkpoint after it."""
    return _insert(name)


STEPS: dict[str, Callable[[str], int]] = {"atomic": insert_atomic,
                                          "plain+tx": insert_in_own_transaction,
                                          "plain": insert_autocommit}


def body(way: str, prefix: str, n: int) -> int:
    """``n`` steps of one way, each timed."""
    call, samples, clock = STEPS[way], timings[way], time.perf_counter
    for i in range(n):
        t0 = clock()
        call(f"{prefix}-{i}")
        samples.append(clock() - t0)
    return n


def _stats(samples: list[float]) -> dict[str, float]:
    us = sorted(s * 1e6 for s in samples)
    return {"median": statistics.median(us), "p90": us[int(len(us) * 0.9)], "n": len(us)}


def main() -> None:
    """Run the trials and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps per run")
    parser.add_argument("--trials", type=int, default=5, help="runs of each way")
    args = parser.parse_args()
    app = Celery("atomic_steps", broker="memory://", set_as_current=False)
    app.conf.durable_store = "django://"
    task: Any = durable_task(app=app, name="bench.atomic_steps")(body)
    prefix = f"bench-atomic-{uuid.uuid4().hex[:8]}"
    for way in WAYS:  # the connection, the prepared checkpoint statement: not timed
        task.apply(args=(way, f"{prefix}-warm-{way}", 20)).get()
        timings[way].clear()
    for trial in range(args.trials):
        for way in WAYS[trial % 3:] + WAYS[:trial % 3]:  # each way first in turn
            result = task.apply(args=(way, f"{prefix}-{trial}-{way}", args.steps))
            assert result.get() == args.steps, result.traceback
    made = Group.objects.filter(name__startswith=prefix).count()
    assert made == len(WAYS) * (args.trials * args.steps + 20), made
    Group.objects.filter(name__startswith=prefix).delete()
    got = {way: _stats(timings[way]) for way in WAYS}
    print(f"{args.trials} runs x {args.steps} steps of each way, one row inserted per step, "
          f"on {connection.vendor} ({connection.settings_dict['NAME']}); microseconds per step")
    print(f"{'way':<10} {'median':>8} {'p90':>8}")
    for way in WAYS:
        print(f"{way:<10} {got[way]['median']:8.0f} {got[way]['p90']:8.0f}")
    ratio = got["atomic"]["median"] / got["plain+tx"]["median"]
    print(f"atomic / plain+tx (median): {ratio:.2f}")


if __name__ == "__main__":
    main()
