"""Errors the docs promise by name: the run, the step and the cause, never a loop.

Eager mode on the memory store (the engine's own decisions), and ``apply_async`` on an
in-memory broker for what is checked before anything is sent.
"""

from __future__ import annotations

import pytest
from celery import Celery

from celery_durable import SerializationError, durable_task, get_run, step
from celery_durable.stores import MemoryStore


def _deep(n: int) -> list[object]:
    value: list[object] = []
    for _ in range(n):
        value = [value]
    return value


@pytest.fixture
def app() -> Celery:
    app = Celery("named-errors", set_as_current=False)
    app.conf.update(task_always_eager=True, broker_url="memory://",
                    result_backend="cache+memory://")
    return app


def test_a_step_value_nested_too_deeply_fails_the_step_once_with_its_name(app: Celery) -> None:
    """A 100,000-deep list returned by a step: SerializationError naming the step, one
    attempt (it was a raw RecursionError, retried three times)."""
    calls: list[int] = []

    @step
    def build() -> list[object]:
        calls.append(1)
        return _deep(100_000)

    @durable_task(app=app, name="named.deep")
    def deep() -> object:
        return build()

    result = deep.apply()
    run = get_run(result.id, app=app)
    assert run.status == "FAILED" and run.failed_step == "build#0"
    assert run.error is not None and "nested too deeply" in run.error.message
    assert calls == [1]


def test_an_exception_whose_str_raises_still_names_the_step(app: Celery) -> None:
    """An exception with a broken ``__str__``: the failed step and the type are recorded."""
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    @step(max_attempts=1)
    def odd() -> None:
        raise Unprintable()

    @durable_task(app=app, name="named.unprintable")
    def weird() -> None:
        odd()

    result = weird.apply()
    run = get_run(result.id, app=app)
    assert run.status == "FAILED" and run.failed_step == "odd#0"
    assert run.error is not None and "Unprintable" in run.error.type
    assert "unprintable message" in run.error.message


def test_arguments_nested_too_deeply_are_refused_before_anything_is_stored() -> None:
    """As an argument, the same depth is a SerializationError at the call (a raw
    RecursionError before) and no run is registered."""
    store = MemoryStore()
    app = Celery("named-args", broker="memory://", set_as_current=False)
    app.conf.durable_store = store

    @durable_task(app=app, name="named.takes")
    def takes(value: object) -> None:
        pass

    with pytest.raises(SerializationError, match="nested too deeply"):
        takes.delay(_deep(100_000))
    assert store.list_runs() == []


def test_arguments_the_message_cannot_encode_leave_no_ghost_run() -> None:
    """A set (which the message's JSON cannot encode): kombu's EncodeError at the call, and
    no PENDING run left for the sweeper to publish forever."""
    from kombu.exceptions import EncodeError

    store = MemoryStore()
    app = Celery("named-encode", broker="memory://", set_as_current=False)
    app.conf.durable_store = store

    @durable_task(app=app, name="named.set")
    def takes(value: object) -> None:
        pass

    with pytest.raises(EncodeError):
        takes.delay({1, 2})
    assert store.list_runs() == []
