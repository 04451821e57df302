"""``async def`` durable tasks for the real-worker tests. Every step counts its executions
in Redis (from outside the worker); steps meet at barriers kept in Redis, so a test sees
that they executed at the same time without timing them."""

from __future__ import annotations

import asyncio
import json
import os

from apps.common import counters, make_app
from celery_durable import durable_task, sleep, step, wait_for_event

app = make_app("async_app", **json.loads(os.environ.get("TEST_APP_CONF", "{}")))
r = counters()


def hit(tag: str, name: str) -> int:
    """Record one execution of ``name`` for the test ``tag``; return the count so far."""
    return int(r.incr(f"{tag}:{name}"))


async def until(predicate: object, what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate()`` (a Redis read) every 20 ms until it is true; TimeoutError after
    ``timeout`` seconds (a barrier that can never be met fails the step, it never hangs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.02)


@step
async def double(tag: str, x: int) -> int:
    hit(tag, "double")
    await asyncio.sleep(0)
    return 2 * x


@step
async def meet(tag: str, name: str, everyone: int) -> str:
    """Runs once per name; returns only once ``everyone`` meet steps have started."""
    hit(tag, name)
    started = int(r.incr(f"{tag}:met"))
    await until(lambda: int(r.get(f"{tag}:met") or 0) >= everyone, "the others to start")
    return f"{name}:{started > 0}"


@step
def join(tag: str, parts: list[str]) -> str:
    hit(tag, "join")
    return ",".join(parts)


@durable_task(app=app, name="async_app.fan_out")
async def fan_out(tag: str) -> dict[str, object]:
    """A sequential async step, three gathered ones that must execute at once, a sync step."""
    n = await double(tag, 21)
    a, b, c = await asyncio.gather(meet(tag, "a", 3), meet(tag, "b", 3), meet(tag, "c", 3))
    return {"n": n, "joined": join(tag, [a, b, c])}


@step
async def quick(tag: str) -> str:
    hit(tag, "quick")
    return "quick"


@step
async def blocked(tag: str, name: str) -> str:
    """Waits until the test sets ``<tag>:release``."""
    hit(tag, name)
    await until(lambda: r.exists(f"{tag}:release"), "the test's release", timeout=60)
    return name


@durable_task(app=app, name="async_app.crash_in_gather")
async def crash_in_gather(tag: str) -> list[str]:
    """Three gathered steps: one finishes at once, two wait for the test's release."""
    return list(await asyncio.gather(quick(tag), blocked(tag, "slow_a"),
                                     blocked(tag, "slow_b")))


@step(max_attempts=3, backoff=0.2)
async def flaky(tag: str) -> str:
    if hit(tag, "flaky") <= 2:
        raise ConnectionError(f"flaky failure for {tag}")
    return "flaky"


@durable_task(app=app, name="async_app.retry_in_gather")
async def retry_in_gather(tag: str) -> list[str]:
    """A gathered step fails twice then succeeds; its siblings must run once."""
    return list(await asyncio.gather(double(tag, 1), flaky(tag), quick(tag)))


@durable_task(app=app, name="async_app.sleeper")
async def sleeper(tag: str) -> list[int]:
    """An async step, a durable sleep called, another awaited, another async step."""
    before = await double(tag, 1)
    sleep(0.5)
    await sleep(0.5)
    return [before, await double(tag, 2)]


@step
async def twice(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@step
async def plus(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


async def grow(x: int, y: int) -> int:
    """A branch of two steps."""
    return await twice(await plus(x, y))


@durable_task(app=app, name="async_app.resumable")
async def resumable(x: int) -> list[int]:
    """No side effects: for assert_resumable (a crash after each of its five checkpoints:
    one before a gather of two branches of two steps each)."""
    first = await twice(x)
    a, b = await asyncio.gather(grow(first, 1), grow(first, 2))
    return [first, a, b]


@durable_task(app=app, name="async_app.approval")
async def approval(tag: str, event: str) -> list[object]:
    """An async step, wait_for_event (awaited), a gather of two async steps."""
    before = await double(tag, 1)
    payload = await wait_for_event(event, key=tag)
    after = await asyncio.gather(double(tag, 2), double(tag, 3))
    return [before, payload, *after]


@step(max_attempts=2, backoff=0)
async def slow_once(tag: str) -> str:
    """Its first attempt outlasts the task's soft time limit (a step awaiting I/O)."""
    if hit(tag, "slow_once") == 1:
        await asyncio.sleep(30)
    return "slow_once"


@durable_task(app=app, name="async_app.soft_limited", soft_time_limit=2)
async def soft_limited(tag: str) -> list[str]:
    """A quick step and a slow one gathered, under a 2 s soft time limit."""
    return list(await asyncio.gather(quick(tag), slow_once(tag)))
