"""Durable tasks of the test project. Steps count their executions in the test Redis."""

from __future__ import annotations

import logging
import os
import time

import redis

from celery_durable import (
    PermanentError,
    create_wait_token,
    durable_task,
    gather,
    patched,
    sleep,
    step,
    wait_for_event,
    wait_for_token,
)

from .celery import app

_counters = redis.Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))


def hit(tag: str, name: str) -> int:
    """Count one execution of ``name`` for the test ``tag`` (outside the worker)."""
    return int(_counters.incr(f"{tag}:{name}"))


@step
def reserve(tag: str, sku: str) -> dict[str, object]:
    """Reserve stock: always succeeds."""
    hit(tag, "reserve")
    return {"sku": sku, "reserved": True}


@step
def charge(tag: str, amount: int) -> int:
    """Charge ``amount``: a non-positive amount fails for good."""
    hit(tag, "charge")
    if amount <= 0:
        raise PermanentError(f"amount must be positive, got {amount}")
    return amount * 100


@step
def note(tag: str, text: str) -> str:
    """Return ``text`` unchanged (its output is shown in the admin)."""
    hit(tag, "note")
    return text


@durable_task(app=app)
def order(tag: str, amount: int, text: str = "ok") -> dict[str, object]:
    """Reserve, note and charge: fails permanently while ``amount`` is not positive."""
    reservation = reserve(tag, "sku-1")
    remark = note(tag, text)
    cents = charge(tag, amount)
    return {"reservation": reservation, "note": remark, "cents": cents}


@durable_task(app=app)
def approval(tag: str, doc_id: int) -> dict[str, object]:
    """Draft, then wait for the ``approval`` event of ``doc_id`` (a day at most)."""
    draft = note(tag, f"draft {doc_id}")
    decision = wait_for_event("approval", key=doc_id, timeout=86400)
    return {"draft": draft, "decision": decision}


@durable_task(app=app)
def long_nap(tag: str) -> str:
    """Note, sleep ten days, note again: only a "wake now" makes it finish in a test."""
    note(tag, "before")
    sleep(10 * 86400)
    return note(tag, "after")


@step
def noisy_charge(tag: str, lines: int) -> int:
    """Log ``lines`` numbered lines, then fail for good (a failed step's logs)."""
    import logging

    log = logging.getLogger("django_project.tasks")
    for i in range(lines):
        log.info("gateway said <%d> for %s", i, tag)
    raise PermanentError(f"gateway refused {tag}")


@durable_task(app=app)
def noisy_order(tag: str, lines: int = 3) -> int:
    """Note, then a step that logs and fails: a dead letter with log lines."""
    note(tag, "noisy")
    return noisy_charge(tag, lines)


@durable_task(app=app)
def slow_square(tag: str, x: int, seconds: float) -> int:
    """A child: takes ``seconds``, counts its runs, returns x * x."""
    hit(tag, f"square:{x}")
    time.sleep(seconds)
    return x * x


@durable_task(app=app)
def fan_out(tag: str, n: int, gap: float) -> list[int]:
    """A parent gathering n children that finish ``gap`` s apart (counts its deliveries)."""
    hit(tag, "fan_out:delivery")
    return gather(*(slow_square.s(tag, x, gap * (x + 1)) for x in range(n)))


def _store_time() -> float:
    """The Redis server's clock (the tests compare times by one clock, never a worker's)."""
    seconds, micros = _counters.time()
    return seconds + micros / 1_000_000


@durable_task(app=app)
def clocked_sleep(tag: str, seconds: float) -> float:
    """Record when it starts sleeping and when it wakes (Redis's clock), sleep in between."""
    note(tag, "before-sleep")
    _counters.setnx(f"{tag}:slept-at", _store_time())
    sleep(seconds)
    _counters.setnx(f"{tag}:woke-at", _store_time())
    return seconds


@step
def slow_step(tag: str, seconds: float) -> str:
    """Count a start, then take ``seconds``."""
    hit(tag, "slow-start")
    time.sleep(seconds)
    return "slow"


@durable_task(app=app)
def slow_run(tag: str, seconds: float) -> str:
    """One slow step: it must start once, however the workers' clocks disagree."""
    return slow_step(tag, seconds)


@step(max_attempts=3, backoff=0.2)
def flaky_fetch(tag: str) -> str:
    """Fail the first attempt (logging a line), succeed on the second."""
    if hit(tag, "flaky-fetch") == 1:
        logging.getLogger("django_project.tasks").warning("gateway timed out for %s", tag)
        raise TimeoutError(f"gateway slow for {tag}")
    return "fetched"


@durable_task(app=app)
def fetch_then_nap(tag: str, seconds: float) -> str:
    """A step retried once, a sleep of ``seconds``, then a note: the waterfall's material."""
    flaky_fetch(tag)
    sleep(seconds)
    return note(tag, "after the nap")


@durable_task(app=app)
def dispatch(tag: str) -> list[str]:
    """Pack, wait for ``shipped``, label. Which code is "deployed" is the Redis key
    ``{tag}:code`` (read by the worker and the admin alike, as a deploy would change both):
    ``v2-unsafe`` inserts a fraud check before the wait, ``v2-patched`` behind patched()."""
    code = (_counters.get(f"{tag}:code") or b"v1").decode()
    done = [note(tag, "packed")]
    if code == "v2-unsafe" or (code == "v2-patched" and patched("fraud-check")):
        done.append(note(tag, "fraud checked"))
    wait_for_event("shipped", key=tag)
    return [*done, note(tag, "labelled")]


@step
def hand_out(tag: str, url: str) -> str:
    """Give the token's URL to "the outside world" (the test reads it from Redis)."""
    _counters.set(f"{tag}:token_url", url)
    return url


@durable_task(app=app)
def token_approval(tag: str, timeout: float = 86400.0) -> dict[str, object]:
    """Create a wait token, hand its URL out, wait for it; a note after."""
    token = create_wait_token(timeout=timeout)
    hand_out(tag, token.url)
    decision = wait_for_token(token)
    return {"decision": decision, "note": note(tag, "after the token")}


def _insert_row(tag: str, kill_inside: bool) -> int:
    """Insert one row for ``tag`` (an auth group); with ``kill_inside``, SIGKILL this pool
    process right after the insert, the first time only (a lost host mid-step)."""
    import signal
    import uuid as _uuid

    from django.contrib.auth.models import Group

    group = Group.objects.create(name=f"{tag}-{_uuid.uuid4().hex}")
    if kill_inside and _counters.incr(f"{tag}:killed") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return int(group.pk)


@step(atomic=True)
def insert_atomically(tag: str, kill_inside: bool) -> int:
    """The row and the checkpoint commit together (``@step(atomic=True)``)."""
    return _insert_row(tag, kill_inside)


@step
def insert_plainly(tag: str, kill_inside: bool) -> int:
    """A plain step: the row commits at once, the checkpoint after it."""
    return _insert_row(tag, kill_inside)


@durable_task(app=app)
def insert_row(tag: str, atomic: bool, kill_inside: bool = False) -> int:
    """One row-inserting step (transactional or plain), then a note."""
    pk = (insert_atomically if atomic else insert_plainly)(tag, kill_inside)
    note(tag, "after the insert")
    return int(pk)


@step(atomic=True)
def insert_then_pause(tag: str, pause: float) -> int:
    """Insert one row; the first execution then pauses ``pause`` seconds before its commit
    (where a test freezes the worker past its lease)."""
    import uuid as _uuid

    from django.contrib.auth.models import Group

    group = Group.objects.create(name=f"{tag}-{_uuid.uuid4().hex}")
    if hit(tag, "inserted") == 1:
        time.sleep(pause)
    return int(group.pk)


@durable_task(app=app)
def insert_row_and_pause(tag: str, pause: float) -> int:
    """One transactional step that may pause before its commit."""
    return int(insert_then_pause(tag, pause))


@step
async def async_tool(tag: str, name: str) -> str:
    """An async step: counts itself, then waits for its siblings to start (so a gather of
    them only finishes if they execute at the same time)."""
    import asyncio

    hit(tag, f"tool-{name}")
    started = hit(tag, "tools-started")
    for _ in range(200):
        if int(_counters.get(f"{tag}:tools-started") or 0) >= 3:
            break
        await asyncio.sleep(0.02)
    return f"{name}:{started > 0}"


@durable_task(app=app)
async def async_agent(tag: str) -> list[str]:
    """Three async tools gathered, then a sync step."""
    import asyncio

    found = await asyncio.gather(async_tool(tag, "search"), async_tool(tag, "weather"),
                                 async_tool(tag, "stock"))
    note(tag, "summarised")
    return list(found)
