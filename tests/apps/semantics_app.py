"""Durable tasks that use Celery's own features: canvas, retry, revoke, expiry, time limits,
replace, Ignore and Reject. Every execution is counted in Redis, outside the worker.

``durable_max_countdown`` is 1 s here, so a retry of 2 s already waits in the store
(the path a bare ``self.retry()``, 180 s by default, takes in production).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Task, signals
from celery.exceptions import Ignore, Reject

from apps.common import counters, make_app
from celery_durable import durable_task, step

app = make_app("semantics_app", durable_max_countdown=1,
               **json.loads(os.environ.get("TEST_APP_CONF", "{}")))
r = counters()


def hit(tag: str, name: str) -> int:
    """Count one execution of ``name`` for the test ``tag``; return the count so far."""
    return int(r.incr(f"{tag}:{name}"))


@signals.task_prerun.connect(weak=False)
def _count_prerun(task_id: str | None = None, **kwargs: Any) -> None:
    r.incr(f"prerun:{task_id}")


@step
def noted(tag: str, name: str, value: Any) -> Any:
    hit(tag, name)
    return value


@app.task(name="semantics.plain_add")
def plain_add(x: int, y: int) -> int:
    return x + y


@app.task(name="semantics.plain_record")
def plain_record(value: Any, tag: str) -> Any:
    r.rpush(f"{tag}:recorded", json.dumps(value))
    return value


@durable_task(app=app, name="semantics.add")
def add(x: int, y: int) -> int:
    return int(noted(f"add-{x}-{y}", "add", x + y))


@durable_task(app=app, name="semantics.retry_once", bind=True, max_retries=3)
def retry_once(self: Task, tag: str, x: int, countdown: float) -> int:
    """Retries itself once with ``countdown``, then returns ``x``."""
    noted(tag, "before", 1)
    if hit(tag, "body") == 1:
        raise self.retry(countdown=countdown)
    return x


@durable_task(app=app, name="semantics.retry_with_args", bind=True, max_retries=5)
def retry_with_args(self: Task, tag: str, n: int) -> int:
    hit(tag, f"n={n}")
    if n < 3:
        raise self.retry(args=(tag, n + 1), countdown=0.2)
    return n


@durable_task(app=app, name="semantics.slow", bind=True)
def slow(self: Task, tag: str, seconds: float) -> str:
    noted(tag, "first", 1)
    r.set(f"{tag}:slow-started", time.time())
    step.run("nap", _nap, tag, seconds)
    return "done"


def _nap(tag: str, seconds: float) -> None:
    hit(tag, "nap")
    time.sleep(seconds)


@durable_task(app=app, name="semantics.limited", time_limit=1, max_retries=0)
def limited(tag: str) -> str:
    step.run("nap", _nap, tag, 5.0)
    return "never"


@durable_task(app=app, name="semantics.limited_retried", time_limit=1, max_retries=2,
              default_retry_delay=0)
def limited_retried(tag: str) -> str:
    step.run("nap", _nap, tag, 5.0)
    return "never"


@durable_task(app=app, name="semantics.replaced", bind=True)
def replaced(self: Task, tag: str, x: int) -> Any:
    noted(tag, "before-replace", 1)
    raise self.replace(plain_add.s(x, 100))


@durable_task(app=app, name="semantics.replaced_by_durable", bind=True)
def replaced_by_durable(self: Task, tag: str, x: int) -> Any:
    noted(tag, "before-replace", 1)
    raise self.replace(add.s(x, 1000))


@durable_task(app=app, name="semantics.ignored")
def ignored(tag: str) -> None:
    noted(tag, "before-ignore", 1)
    raise Ignore()


@durable_task(app=app, name="semantics.rejected_once", bind=True)
def rejected_once(self: Task, tag: str) -> str:
    noted(tag, "before-reject", 1)
    if hit(tag, "body") == 1:
        raise Reject("try again", requeue=True)
    return "accepted"


@durable_task(app=app, name="semantics.echo")
def echo(tag: str, value: Any) -> Any:
    return noted(tag, "echo", value)


@durable_task(app=app, name="semantics.fails")
def fails(tag: str) -> None:
    noted(tag, "before-fail", 1)
    raise ValueError("boom")


@durable_task(app=app, name="semantics.body_autoretry", autoretry_for=(ConnectionError,),
              max_retries=3, default_retry_delay=0.2)
def body_autoretry(tag: str) -> str:
    noted(tag, "step", 1)
    if hit(tag, "body") < 3:
        raise ConnectionError("carrier down")
    return "shipped"


@app.task(name="semantics.errback")
def errback(*args: Any, tag: str = "") -> None:
    r.incr(f"{tag}:errback")


def _store_time() -> float:
    """The Redis server's clock (the tests compare times by one clock, never a worker's)."""
    seconds, micros = r.time()
    return seconds + micros / 1_000_000


@durable_task(app=app, name="semantics.clocked_sleep")
def clocked_sleep(tag: str, seconds: float) -> float:
    """Record when it starts sleeping and when it wakes (Redis's clock), sleep in between."""
    from celery_durable import sleep

    noted(tag, "before-sleep", 1)
    r.setnx(f"{tag}:slept-at", _store_time())
    sleep(seconds)
    r.setnx(f"{tag}:woke-at", _store_time())
    return seconds


@durable_task(app=app, name="semantics.paused")
def paused(tag: str, pause: float) -> str:
    """Step 0, a plain pause between steps (the test freezes the process there), step 1."""
    noted(tag, "step0", 0)
    r.set(f"{tag}:pausing", 1)
    time.sleep(pause)
    return str(noted(tag, "step1", "done"))


@step
def exits(tag: str) -> None:
    """Step code that calls ``sys.exit``: the pool process ends."""
    import sys

    hit(tag, "exits")
    sys.exit(3)


@durable_task(app=app, name="semantics.exiting")
def exiting(tag: str) -> None:
    noted(tag, "before-exit", 1)
    exits(tag)


@app.task(name="semantics.plain_returns_result")
def plain_returns_result() -> Any:
    return plain_add.delay(1, 2)


@durable_task(app=app, name="semantics.returns_result")
def returns_result() -> Any:
    return plain_add.delay(1, 2)
