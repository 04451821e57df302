"""Celery's own behaviour in eager mode (users' test suites run eagerly): retries, autoretry,
results, replace, Ignore — the same with ``@durable_task`` as with ``@app.task``.

Each test runs the same body under ``@app.task`` and ``@durable_task`` and compares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery, Task
from celery.exceptions import Ignore

from celery_durable import durable_task, get_run


@pytest.fixture
def app() -> Celery:
    app = Celery("semantics-eager", set_as_current=False)
    app.conf.update(task_always_eager=True, broker_url="memory://",
                    result_backend="cache+memory://")
    return app


Declare = Callable[..., Any]


def _both(app: Celery) -> list[tuple[str, Declare]]:
    return [("plain", app.task), ("durable", lambda **o: durable_task(app=app, **o))]


@pytest.mark.parametrize("kind", ["plain", "durable"])
def test_self_retry_stops_after_max_retries(app: Celery, kind: str) -> None:
    """``self.retry`` in eager mode runs max_retries + 1 times, then re-raises the cause
    (it recursed forever under durable tasks: ``request.retries`` never grew)."""
    declare = dict(_both(app))[kind]
    calls: list[int] = []

    @declare(name=f"eager.retry.{kind}", bind=True, max_retries=2)
    def flaky(self: Task) -> None:
        calls.append(self.request.retries)
        raise self.retry(exc=ValueError("still down"), countdown=0)

    with pytest.raises(ValueError, match="still down"):
        flaky.delay().get()
    assert calls == [0, 1, 2]


@pytest.mark.parametrize("kind", ["plain", "durable"])
def test_retry_with_new_arguments_runs_with_them(app: Celery, kind: str) -> None:
    """``self.retry(args=...)``: the next attempt receives the new arguments."""
    declare = dict(_both(app))[kind]
    seen: list[int] = []

    @declare(name=f"eager.retry_args.{kind}", bind=True, max_retries=3)
    def counted(self: Task, n: int) -> int:
        seen.append(n)
        if n < 3:
            raise self.retry(args=(n + 1,), countdown=0)
        return n

    assert counted.delay(1).get() == 3
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("kind", ["plain", "durable"])
def test_autoretry_for_retries_an_error_raised_by_the_body(app: Celery, kind: str) -> None:
    """An exception in ``autoretry_for`` raised by the body itself is retried as Celery
    retries it (it failed at once under durable tasks)."""
    declare = dict(_both(app))[kind]
    calls: list[int] = []

    @declare(name=f"eager.autoretry.{kind}", bind=True, autoretry_for=(ValueError,),
             max_retries=3, default_retry_delay=0)
    def shaky(self: Task) -> str:
        calls.append(self.request.retries)
        if len(calls) < 3:
            raise ValueError("not yet")
        return "ok"

    assert shaky.delay().get() == "ok"
    assert calls == [0, 1, 2]


@pytest.mark.parametrize("kind", ["plain", "durable"])
def test_an_eager_result_is_the_body_s_own_value(app: Celery, kind: str) -> None:
    """A tuple stays a tuple, as Celery returns it in eager mode (it became a list)."""
    declare = dict(_both(app))[kind]

    @declare(name=f"eager.tuple.{kind}")
    def pair() -> tuple[int, str]:
        return (1, "a")

    assert pair.delay().get() == (1, "a")


def test_a_durable_autoretry_resumes_after_the_last_completed_step(app: Celery) -> None:
    """A body-level retry resumes the run: its completed steps are not run again."""
    from celery_durable import step

    runs: list[str] = []

    @step
    def charge() -> str:
        runs.append("charge")
        return "ch_1"

    attempts: list[int] = []

    @durable_task(app=app, name="eager.resume", autoretry_for=(ConnectionError,),
                  max_retries=2, default_retry_delay=0)
    def order() -> str:
        payment = charge()
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("carrier down")
        return payment

    result = order.delay()
    assert result.get() == "ch_1"
    assert runs == ["charge"] and len(attempts) == 2
    assert get_run(result.id, app=app).status == "SUCCEEDED"


def test_ignore_ends_a_durable_run_without_failing_it(app: Celery) -> None:
    """``raise Ignore()`` is not a failure: no dead letter, the run ends (cancelled by itself)."""
    @durable_task(app=app, name="eager.ignore")
    def skip() -> None:
        raise Ignore("nothing to do")

    result = skip.apply()
    run = get_run(result.id, app=app)
    assert run.status == "CANCELLED"
    assert run.error is not None and "Ignore" in run.error.message


def test_apply_runs_again_under_the_id_of_a_finished_run() -> None:
    """``task.apply(task_id=X)`` after the run X finished runs the task again, as Celery
    does (a frozen chain applied after it ran returned None)."""
    from celery_durable.stores import MemoryStore

    app = Celery("apply-again", set_as_current=False)
    app.conf.update(broker_url="memory://", result_backend="cache+memory://",
                    durable_store=MemoryStore())
    calls: list[int] = []

    @durable_task(app=app, name="again.echo")
    def echo(x: int) -> int:
        calls.append(x)
        return x

    assert echo.apply((1,), task_id="same-id").get() == 1
    assert echo.apply((2,), task_id="same-id").get() == 2
    assert calls == [1, 2]
