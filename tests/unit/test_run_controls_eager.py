"""Run controls without a worker: eager mode and plain calls outside a run (MemoryStore)."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_durable import call, cancel_run, durable_task, gather, get_run, map
from celery_durable.stores import get_store


@pytest.fixture
def app() -> Celery:
    app = Celery("controls-eager", set_as_current=False)
    app.conf.update(task_always_eager=True, broker_url="memory://",
                    result_backend="cache+memory://")
    return app


def test_children_run_inline_in_eager_mode(app: Celery) -> None:
    """In eager mode call/gather/map run their children inline and checkpoint the results."""
    @durable_task(app=app, name="eager.double")
    def double(x: int) -> int:
        return 2 * x

    @durable_task(app=app, name="eager.parent")
    def parent(n: int) -> list[object]:
        return [call(double, 21), gather(double.s(1), double.s(2)), map(double, range(n))]

    result = app.tasks["eager.parent"].delay(3)
    assert result.get() == [42, [2, 4], [0, 2, 4]]
    run = get_run(result.id, app=app)
    assert [s.key for s in run.steps] == ["call:eager.double#0", "gather#0",
                                          "map:eager.double#0"]
    child = get_run(f"{result.id}~1.1", app=app)
    assert child.result == 4


def test_a_retry_delivery_does_not_run_eager_children_again(app: Celery) -> None:
    """A step after the child calls fails once: the retry delivery replays the children's
    results instead of running the children again (they used to run once per delivery)."""
    from collections import Counter

    from celery_durable import step

    ran: Counter[str] = Counter()

    @durable_task(app=app, name="eager.once_child")
    def once_child(x: int) -> int:
        ran[f"child-{x}"] += 1
        return x

    @step(max_attempts=2, backoff=0)
    def flaky() -> int:
        ran["flaky"] += 1
        if ran["flaky"] == 1:
            raise ConnectionError("once")
        return 100

    @durable_task(app=app, name="eager.once_parent")
    def parent() -> int:
        return int(call(once_child, 1)) + sum(gather(once_child.s(2), once_child.s(3))) + flaky()

    assert parent.apply().get() == 106
    assert ran == {"child-1": 1, "child-2": 1, "child-3": 1, "flaky": 2}


def test_outside_a_run_children_are_plain_calls(app: Celery) -> None:
    """Outside a durable run call/gather/map call the task bodies directly."""
    @durable_task(app=app, name="plain.inc")
    def inc(x: int) -> int:
        return x + 1

    assert call(inc, 1) == 2
    assert gather(inc.s(1), inc.s(2)) == [2, 3]
    assert map(inc, [5, 6]) == [6, 7]


def test_a_child_must_be_a_durable_task(app: Celery) -> None:
    """Starting a plain Celery task as a child run is a TypeError naming it."""
    @app.task(name="plain.task")
    def plain() -> None:
        pass

    @durable_task(app=app, name="eager.bad_parent")
    def bad_parent() -> None:
        call(plain)

    with pytest.raises(TypeError, match=r"plain\.task"):
        app.tasks["eager.bad_parent"].delay().get()


def test_idempotency_key_and_cancel_in_eager_mode(app: Celery) -> None:
    """An idempotency key returns the first run; cancelling an unknown run records it."""
    runs: list[int] = []

    @durable_task(app=app, name="eager.charge")
    def charge(order: int) -> int:
        runs.append(order)
        return order

    first = app.tasks["eager.charge"].apply_async((7,), idempotency_key="o-7",
                                                   queue="payments", priority=3)
    again = app.tasks["eager.charge"].apply_async((7,), idempotency_key="o-7")
    assert again.id == first.id and runs == [7]
    # The routing is stored with the run, so a lost first message is re-sent to its queue.
    (stored,) = get_store(app).get_runs([first.id])
    assert stored is not None and stored.options == {"queue": "payments", "priority": 3}
    assert cancel_run("not-started-yet", app=app) is True
    assert get_run("not-started-yet", app=app).status == "CANCELLED"
    assert cancel_run(first.id, app=app) is False  # already succeeded


def test_concurrency_options_are_checked() -> None:
    """concurrency must be a positive int; concurrency_key needs concurrency; rate_limit stays."""
    app = Celery("controls-options", set_as_current=False)
    with pytest.raises(ValueError, match="positive int"):
        durable_task(app=app, concurrency=0)
    with pytest.raises(ValueError, match="needs concurrency"):
        durable_task(app=app, concurrency_key=lambda x: x)

    @durable_task(app=app, name="opts.limited", concurrency=3, rate_limit="10/s",
                  concurrency_key=lambda customer: customer)
    def limited(customer: str) -> None:
        pass

    task = app.tasks["opts.limited"]
    assert (task.concurrency, task.rate_limit) == (3, "10/s")
    from celery_durable.controls.concurrency import group_of

    assert group_of(task, ("ann",), {}) == "opts.limited:ann"


def test_the_periodic_purge_drops_expired_keys_and_old_runs(app: Celery) -> None:
    """``purge_expired`` (the worker's periodic purge) drops expired idempotency keys and
    runs past ``durable_result_retention``; a key past its TTL then starts a new run."""
    import time

    from celery_durable.ops.retention import purge_expired

    app.conf.durable_result_retention = 0.05

    @durable_task(app=app, name="eager.once")
    def once(order: int) -> int:
        return order

    first = app.tasks["eager.once"].apply_async((1,), idempotency_key="k", idempotency_ttl=0.05)
    store = get_store(app)
    time.sleep(0.1)
    assert purge_expired(app) == 1
    assert store.get_runs([first.id]) == [None]
    assert store.purge_idempotency_keys(expired_before=time.time()) == 0  # already gone
    second = app.tasks["eager.once"].apply_async((1,), idempotency_key="k")
    assert second.id != first.id
