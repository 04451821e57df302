"""Durable tasks for the core tests. Every step counts its executions in Redis."""

from __future__ import annotations

import json
import time

from apps.common import counters, make_app
from celery_durable import DurableTask, PermanentError, durable_task, step

app = make_app("core_app")
r = counters()


def hit(tag: str, name: str) -> int:
    """Record one execution of ``name`` for the test ``tag``; return the count so far."""
    return int(r.incr(f"{tag}:{name}"))


@step
def add_one(tag: str, x: int) -> int:
    hit(tag, "add_one")
    return x + 1


@step(max_attempts=5, backoff=0.2)
def flaky(tag: str, x: int, failures: int) -> int:
    if hit(tag, "flaky") <= failures:
        raise ConnectionError(f"flaky failure for {tag}")
    return x * 10


@step
def slow(tag: str, seconds: float) -> str:
    hit(tag, "slow")
    r.set(f"{tag}:slow-started", time.time())
    time.sleep(seconds)
    return "slept"


@step
def must_be_positive(tag: str, x: int) -> int:
    hit(tag, "must_be_positive")
    if x <= 0:
        raise PermanentError(f"x must be positive, got {x}")
    return x


@durable_task(app=app)
def four_steps(tag: str, x: int, failures: int = 2) -> dict[str, int]:
    a = add_one(tag, x)
    b = add_one(tag, a)
    c = flaky(tag, b, failures)
    d = add_one(tag, c)
    return {"a": a, "b": b, "c": c, "d": d}


@durable_task(app=app)
def five_with_slow(tag: str, seconds: float) -> list[object]:
    out: list[object] = [add_one(tag, 0), add_one(tag, 1), slow(tag, seconds)]
    out.append(add_one(tag, 2))
    out.append(add_one(tag, 3))
    return out


@durable_task(app=app)
def validated(tag: str, x: int) -> int:
    a = add_one(tag, 0)
    return a + must_be_positive(tag, x)


@step
def record_context(tag: str) -> dict[str, object]:
    ctx = step.context()
    hit(tag, "record_context")
    info = {"run_id": ctx.run_id, "key": ctx.key, "attempt": ctx.attempt,
            "idempotency_key": ctx.idempotency_key}
    r.rpush(f"{tag}:contexts", json.dumps(info))
    if hit(tag, "record_context_calls") == 1:
        raise ConnectionError("fail the first attempt so the context of a retry is seen")
    return info


@app.task(base=DurableTask)
def via_base(tag: str) -> list[object]:
    """Declared with ``@app.task(base=DurableTask)`` instead of ``@durable_task``."""
    first = add_one(tag, 1)
    return [first, add_one(tag, first), record_context(tag)]


@durable_task(app=app)
def via_decorator(tag: str) -> list[object]:
    """The same body as ``via_base``, declared with ``@durable_task(app=app)``."""
    first = add_one(tag, 1)
    return [first, add_one(tag, first), record_context(tag)]
