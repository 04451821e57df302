"""Durable tasks for the core tests. Every step counts its executions in Redis."""

from __future__ import annotations

import json
import os
import signal
import time

import celery_durable
from apps.common import counters, make_app
from celery_durable import DurableTask, PermanentError, RetryAfter, durable_task, step

# TEST_APP_CONF (JSON) adds settings for one worker, e.g. a low durable_max_recoveries.
app = make_app("core_app", **json.loads(os.environ.get("TEST_APP_CONF", "{}")))
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


def stamp(tag: str, name: str) -> int:
    """Count one execution of ``name`` and append its start time to ``<tag>:<name>:times``."""
    r.rpush(f"{tag}:{name}:times", time.time())
    return hit(tag, name)


# -- (a) retries free the worker -------------------------------------------------------------


@step(max_attempts=5, backoff=1.0)
def flaky_slow_backoff(tag: str, x: int, failures: int) -> int:
    if stamp(tag, "flaky") <= failures:
        raise ConnectionError(f"flaky failure for {tag}")
    return x * 10


@durable_task(app=app)
def four_steps_backoff(tag: str, x: int, failures: int = 2) -> dict[str, int]:
    a = add_one(tag, x)
    b = add_one(tag, a)
    c = flaky_slow_backoff(tag, b, failures)
    d = add_one(tag, c)
    return {"a": a, "b": b, "c": c, "d": d}


@durable_task(app=app)
def quick(tag: str) -> float:
    return stamp_step(tag)


@step
def stamp_step(tag: str) -> float:
    stamp(tag, "quick")
    return time.time()


# -- (b), (g) crashes --------------------------------------------------------------------------


@step
def crash_point(tag: str, seconds: float) -> int:
    """Blocks ``seconds`` on its first execution (to be killed there); quick afterwards."""
    n = stamp(tag, "crash_point")
    r.set(f"{tag}:crash_point:pid", os.getpid())
    if n == 1:
        time.sleep(seconds)
    return n


@durable_task(app=app)
def five_with_crash_point(tag: str, seconds: float = 60.0) -> list[int]:
    out = [add_one(tag, 0), add_one(tag, 1), crash_point(tag, seconds)]
    out.append(add_one(tag, 2))
    out.append(add_one(tag, 3))
    return out


@step
def kill_own_process(tag: str) -> None:
    stamp(tag, "kill_own_process")
    os.kill(os.getpid(), signal.SIGKILL)


@durable_task(app=app)
def poison(tag: str) -> int:
    a = add_one(tag, 0)
    kill_own_process(tag)
    return a


# -- (c) duplicate deliveries ------------------------------------------------------------------


@step
def slow_first(tag: str, seconds: float) -> str:
    stamp(tag, "slow_first")
    time.sleep(seconds)
    return "slow"


@durable_task(app=app)
def duplicated(tag: str, seconds: float) -> list[object]:
    return [slow_first(tag, seconds), add_one(tag, 1), add_one(tag, 2)]


# -- (d) one row per kind of error ---------------------------------------------------------


class UnknownError(Exception):
    """An error no policy mentions."""


def fail_with(tag: str, kind: str, failures: int) -> str:
    n = stamp(tag, "attempt")
    if n > failures:
        return f"ok after {n}"
    if kind == "timeout":
        raise TimeoutError("upstream timed out")
    if kind == "retry_after":
        raise RetryAfter(2)
    if kind == "permanent":
        raise PermanentError("invalid credentials")
    raise UnknownError("something odd")


@durable_task(app=app, autoretry_for=(TimeoutError,), retry_backoff=True, retry_jitter=False,
              max_retries=2)
def timeout_task(tag: str, failures: int) -> str:
    return step.run("call_api", fail_with, tag, "timeout", failures)


@durable_task(app=app)
def default_task(tag: str, kind: str, failures: int) -> str:
    return step.run("call_api", fail_with, tag, kind, failures)


# -- (e) determinism and serialization ---------------------------------------------------------


@step
def step_a(tag: str) -> str:
    hit(tag, "step_a")
    return "a"


@step
def step_b(tag: str) -> str:
    hit(tag, "step_b")
    return "b"


@step(backoff=1.0)
def fails_once(tag: str) -> str:
    if stamp(tag, "fails_once") == 1:
        raise ConnectionError("first attempt fails")
    return "c"


@durable_task(app=app)
def reorderable(tag: str) -> list[str]:
    """Calls a then b, or b then a once the test sets ``<tag>:swap``: a code change."""
    if r.get(f"{tag}:swap"):
        first, second = step_b(tag), step_a(tag)
    else:
        first, second = step_a(tag), step_b(tag)
    return [first, second, fails_once(tag)]


class Opaque:
    """Not serializable as JSON."""


@step
def returns_opaque(tag: str) -> Opaque:
    hit(tag, "returns_opaque")
    return Opaque()


@durable_task(app=app)
def unserializable(tag: str) -> object:
    add_one(tag, 0)
    return returns_opaque(tag)


# -- (f) retry_run -----------------------------------------------------------------------------


@step
def gate(tag: str, x: int) -> int:
    """Fails permanently until the test sets ``<tag>:open``."""
    hit(tag, "gate")
    if not r.get(f"{tag}:open"):
        raise PermanentError("gate closed")
    return x


@durable_task(app=app)
def gated(tag: str, x: int) -> int:
    a = add_one(tag, x)
    b = gate(tag, a)
    return add_one(tag, b)


# -- (h) what is stored where ------------------------------------------------------------------


@step
def park_here(tag: str) -> str:
    """Holds the run open until the test sets ``<tag>:go``."""
    hit(tag, "park_here")
    deadline = time.time() + 30
    while not r.get(f"{tag}:go") and time.time() < deadline:
        time.sleep(0.05)
    return "released"


@durable_task(app=app)
def holds_open(tag: str) -> list[object]:
    return [add_one(tag, 41), park_here(tag)]


# -- leases: long steps and stale holders ------------------------------------------------------


@step
def long_step(tag: str, seconds: float) -> str:
    stamp(tag, "long_step")
    time.sleep(seconds)
    return "done"


@durable_task(app=app, bind=True)
def outlives_its_lease(self: DurableTask, tag: str, seconds: float) -> list[object]:
    """``bind=True`` works as with ``@app.task``: ``self`` is the task, its request the run."""
    return [self.request.id, long_step(tag, seconds), add_one(tag, 0)]


@step
def kill_whole_worker(tag: str) -> None:
    """SIGKILL this worker's whole process group: the host is lost."""
    stamp(tag, "kill_whole_worker")
    os.killpg(os.getpgid(0), signal.SIGKILL)


@durable_task(app=app)
def kills_host(tag: str) -> None:
    kill_whole_worker(tag)


@durable_task(app=app)
def uses_deterministic_helpers(tag: str) -> list[object]:
    """Records what the body saw from now(), uuid4() and random() on every execution."""
    when, ident, dice = celery_durable.now(), celery_durable.uuid4(), celery_durable.random()
    seen = [when.isoformat(), type(when).__name__, str(ident), type(ident).__name__, dice]
    r.rpush(f"{tag}:seen", json.dumps(seen))
    fails_once(tag)
    return seen


@durable_task(app=app, bind=True)
def retries_itself(self: DurableTask, tag: str) -> list[int]:
    """Calls Celery's own ``self.retry()`` once, as existing Celery code does."""
    first = add_one(tag, 0)
    if hit(tag, "body") == 1:
        raise self.retry(countdown=0.5, exc=ConnectionError("try again"))
    return [first, add_one(tag, 1)]


def crash_and_retry_body(tag: str, seconds: float) -> list[object]:
    """Two steps, a slow one (a test kills the worker there), a flaky one, one more: the
    body the broker and store variants (rabbit_app, mariadb_app) share."""
    a = add_one(tag, 0)
    b = add_one(tag, a)
    s = slow(tag, seconds)
    c = flaky(tag, b, 2)
    return [a, b, s, c, add_one(tag, c)]
