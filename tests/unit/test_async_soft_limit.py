"""Celery's soft time limit (SIGUSR1 and the pool's handler) while an async body's event loop
runs (celery_durable/engine/soft_limit.py), in process: this test installs a handler that
raises as billiard's does and sends the signal itself."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator

import pytest
from celery import Celery

from celery_durable import StepFailedError, StepStatus, durable_task, get_run, step

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 here")


class TimeLimitReached(Exception):
    """What the stand-in soft-limit handler raises (billiard raises SoftTimeLimitExceeded)."""


def raise_limit(signum: int, frame: object) -> None:
    raise TimeLimitReached("soft time limit")


def limit_soon() -> None:
    """Send the signal from another thread in 0.2 s: it arrives while the event loop waits
    in its select(), as the pool's does (not inside the step's own code)."""
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()


@pytest.fixture
def app(eager_app: Celery) -> Iterator[Celery]:
    """The eager app, with the stand-in soft-limit handler installed meanwhile."""
    before = signal.signal(signal.SIGUSR1, raise_limit)
    try:
        yield eager_app
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_step_in_flight_fails_with_the_limit_and_its_sibling_is_kept(app: Celery) -> None:
    """The limit fires while one gathered step awaits and its sibling has finished: the
    waiting step's attempt fails with the handler's exception (the loop took the signal);
    the sibling's checkpoint is kept; the pool's handler is in place again afterwards."""
    @step
    async def done() -> str:
        return "done"

    @step(max_attempts=1)
    async def waiting() -> str:
        await asyncio.sleep(0)  # after done() finished
        limit_soon()
        await asyncio.sleep(30)
        return "never"

    @durable_task(app=app, name="soft.in_step")
    async def body() -> object:
        return await asyncio.gather(done(), waiting())

    result = body.apply()
    with pytest.raises(StepFailedError, match="TimeLimitReached: soft time limit"):
        result.get()
    run = get_run(result.id, app=app)
    assert [(s.key, s.status, s.error.type if s.error else None) for s in run.steps] == [
        ("done#0@0", StepStatus.SUCCEEDED, None),
        ("waiting#0@1", StepStatus.FAILED, f"{__name__}.TimeLimitReached")]
    assert signal.getsignal(signal.SIGUSR1) is raise_limit


def test_between_steps_the_body_raises_the_limit(app: Celery) -> None:
    """No step executes when the limit fires: the body raises it where it awaits, as a
    sync body raises it between steps."""
    @step
    async def first() -> int:
        return 1

    @durable_task(app=app, name="soft.in_body")
    async def body() -> int:
        n = await first()
        limit_soon()
        await asyncio.sleep(30)
        return n

    with pytest.raises(TimeLimitReached):
        body.apply().get()
    assert signal.getsignal(signal.SIGUSR1) is raise_limit
