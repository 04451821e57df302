"""Durable tasks that sleep and wait for events. Side effects are counted in Redis.

``{tag}:entered`` counts deliveries that ran the body, ``{tag}:passed``
counts deliveries that got past the wait (not a step: it would count a
second wake-up), and each step counts its own executions.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

from apps.common import counters, make_app
from celery_durable import durable_task, sleep, sleep_until, step, wait_for_event

app = make_app("waits_app", durable_sweeper=os.environ.get("WAITS_SWEEPER", "1") == "1",
               include=["celery_durable.ops.periodic"])
r = counters()


def hit(tag: str, name: str) -> int:
    """Count one execution of ``name`` for test ``tag``."""
    return int(r.incr(f"{tag}:{name}"))


@step
def mark(tag: str, name: str) -> float:
    """A step that counts itself and records when it ran."""
    hit(tag, name)
    now = time.time()
    r.set(f"{tag}:{name}:at", now)
    return now


@step
def pause(seconds: float) -> None:
    """A step that takes a while (to race an event against the wait)."""
    time.sleep(seconds)


@durable_task(app=app)
def nap(tag: str, seconds: float) -> str:
    """One step, a sleep, one step."""
    hit(tag, "entered")
    mark(tag, "before")
    sleep(seconds)
    hit(tag, "passed")
    mark(tag, "after")
    return "woke"


@durable_task(app=app)
def nap_until(tag: str, when: float) -> int:
    """Sleep until the epoch time ``when``; many of these run at once."""
    sleep_until(dt.datetime.fromtimestamp(when, tz=dt.timezone.utc))
    return int(step.run("woke", hit, tag, "woke"))


@durable_task(app=app)
def approval(tag: str, name: str, key: Any, timeout: float | None = None,
             delay: float = 0.0) -> Any:
    """One step, (optionally a slow step,) a wait for an event, one step."""
    hit(tag, "entered")
    mark(tag, "before")
    if delay:
        pause(delay)
    payload = wait_for_event(name, key=key, timeout=timeout)
    hit(tag, "passed")
    mark(tag, "after")
    return payload


@durable_task(app=app)
def approval_twice(tag: str, name: str, key: Any, timeout: float) -> list[Any]:
    """Wait twice on the same name and key."""
    first = wait_for_event(name, key=key, timeout=timeout)
    second = wait_for_event(name, key=key, timeout=timeout)
    mark(tag, "after")
    return [first, second]
