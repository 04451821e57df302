"""Durable tasks for the run-control tests. Side effects are counted in Redis.

``{tag}:<name>`` counts executions of a step or of a body delivery; lists
record what a delivery saw (its priority) and sets record which runs are
executing at once.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from apps.common import counters, make_app
from celery_durable import (
    PermanentError,
    call,
    durable_task,
    gather,
    map,
    sleep,
    step,
    wait_for_event,
)

app = make_app("controls_app", durable_requeue_grace=float(os.environ.get("TEST_GRACE", "300")),
               broker_transport_options={"visibility_timeout": 3600,
                                         "priority_steps": list(range(10)),
                                         "queue_order_strategy": "priority"})
r = counters()


def hit(tag: str, name: str) -> int:
    """Count one execution of ``name`` for test ``tag``."""
    return int(r.incr(f"{tag}:{name}"))


@step
def mark(tag: str, name: str) -> int:
    """A step that counts itself."""
    return hit(tag, name)


@step
def slow(tag: str, name: str, seconds: float) -> str:
    """A step that records its start, runs ``seconds``, then records its end."""
    hit(tag, f"{name}:started")
    r.set(f"{tag}:{name}:pid", os.getpid())
    time.sleep(seconds)
    hit(tag, f"{name}:ended")
    return name


# -- priorities -------------------------------------------------------------------------------


@step(max_attempts=3, backoff=0.2)
def fails_once(tag: str) -> str:
    """Fails its first attempt (a step retry re-enqueues the run)."""
    if hit(tag, "fails_once") == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


@step
def long_first_time(tag: str) -> str:
    """Runs 60 s the first time (the test kills the worker meanwhile), at once after."""
    if hit(tag, "long_first_time") == 1:
        time.sleep(60)
    return "ok"


@durable_task(app=app, bind=True)
def prioritized(self: Any, tag: str) -> str:
    """Records the priority of every delivery, then retries a step and survives a crash."""
    r.rpush(f"{tag}:priorities", json.dumps((self.request.delivery_info or {}).get("priority")))
    fails_once(tag)
    long_first_time(tag)
    return "done"


# -- cancellation -----------------------------------------------------------------------------


@durable_task(app=app)
def sleeper(tag: str, seconds: float) -> str:
    """A step, a sleep, a step."""
    mark(tag, "before")
    sleep(seconds)
    mark(tag, "after")
    return "woke"


@durable_task(app=app)
def waiter(tag: str, name: str) -> Any:
    """A step, a wait for an event, a step."""
    mark(tag, "before")
    payload = wait_for_event(name, key=tag, timeout=60)
    mark(tag, "after")
    return payload


@durable_task(app=app)
def runner(tag: str, seconds: float) -> str:
    """A step, a slow step, two more steps."""
    mark(tag, "first")
    slow(tag, "slow", seconds)
    mark(tag, "third")
    mark(tag, "fourth")
    return "done"


# -- child runs -------------------------------------------------------------------------------


@durable_task(app=app)
def square(tag: str, x: int, seconds: float = 0.0) -> int:
    """A child: counts its executions, optionally takes a while, returns x * x."""
    hit(tag, f"square:{x}")
    if seconds:
        slow(tag, f"square-{x}", seconds)
    return x * x


@durable_task(app=app)
def quick_and_slow(tag: str) -> list[int]:
    """A parent: a quick child (x=2) and one that takes 2 s (x=3)."""
    return gather(square.s(tag, 2), square.s(tag, 3, 2.0))


@durable_task(app=app)
def square_item(item: dict[str, Any]) -> int:
    """A child for ``map``: one argument, ``{"tag", "x", "seconds"}``."""
    return int(square(item["tag"], item["x"], item.get("seconds", 0.0)))


@durable_task(app=app)
def fan_out(tag: str, n: int, seconds: float) -> dict[str, Any]:
    """A parent: one call, a map over n children, a gather of two."""
    first = call(square, tag, 100)
    squares = map(square_item, [{"tag": tag, "x": x, "seconds": seconds} for x in range(n)])
    pair = gather(square.s(tag, 200), square.s(tag, 300))
    mark(tag, "after_fan_out")
    return {"first": first, "sum": sum(squares), "squares": squares, "pair": pair}


@durable_task(app=app)
def staggered_map(tag: str, n: int, gap: float) -> list[int]:
    """A parent mapping over n children that finish one at a time, ``gap`` s apart.

    ``hit`` is not a step, so it counts every delivery of the parent.
    """
    hit(tag, "staggered_map:delivery")
    return map(square_item, [{"tag": tag, "x": x, "seconds": gap * (x + 1)} for x in range(n)])


@step
def maybe_fail(tag: str, x: int) -> int:
    """Fails permanently the first time for x == 3 (the parent's retry re-triggers it)."""
    if x == 3 and hit(tag, "maybe_fail:3") == 1:
        raise PermanentError("three fails once")
    return x


@durable_task(app=app)
def fragile(tag: str, x: int) -> int:
    """A child whose x == 3 run fails the first time."""
    hit(tag, f"fragile:{x}")
    return maybe_fail(tag, x) * 2


@durable_task(app=app, max_retries=2, default_retry_delay=0.2)
def parent_retrying(tag: str) -> list[int]:
    """gather over fragile children; the parent's retry policy re-triggers the failed one."""
    return gather(*[fragile.s(tag, x) for x in range(5)])


@durable_task(app=app)
def parent_of_sleepers(tag: str) -> list[str]:
    """Two sleeping children (for cancelling a parent with its children)."""
    return gather(sleeper.s(f"{tag}-a", 60), sleeper.s(f"{tag}-b", 60))


# -- concurrency ------------------------------------------------------------------------------

_ENTER = """
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


@step
def limited_work(tag: str, i: int, seconds: float) -> int:
    """Joins the set of executing runs, records the high-water mark, works, leaves.

    Only the first execution of run ``i`` takes ``seconds``; a re-execution
    (after a crash) takes 0.3 s. Each execution's interval is recorded.
    """
    run_key = f"{tag}:executing"
    started = time.time()
    r.eval(_ENTER, 2, run_key, f"{tag}:high", str(i))
    r.set(f"{tag}:work:{i}:pid", os.getpid())
    if hit(tag, f"work:{i}") > 1:
        seconds = min(seconds, 0.3)
    time.sleep(seconds)
    r.srem(run_key, str(i))
    r.rpush(f"{tag}:intervals", json.dumps([i, started, time.time()]))
    return i


@durable_task(app=app, concurrency=2)
def limited(tag: str, i: int, seconds: float) -> int:
    """At most two of these execute at once, across all workers."""
    return int(limited_work(tag, i, seconds))


@durable_task(app=app, concurrency=1, concurrency_key=lambda tag, customer, i: customer)
def per_customer(tag: str, customer: str, i: int) -> int:
    """One run per customer at a time."""
    return int(limited_work(f"{tag}:{customer}", i, 0.3))


# -- idempotency ------------------------------------------------------------------------------


@durable_task(app=app)
def charge_order(tag: str, order: str) -> str:
    """Counts its executions: an idempotent trigger must run it once."""
    mark(tag, "charged")
    return f"charged {order}"
