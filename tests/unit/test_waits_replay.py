"""Durable waits in one process: suspension, replay, resolution, with a MemoryStore.

Each "delivery" runs the task body the way a worker would (a pushed request,
not eager), so the replay logic is tested without worker subprocesses; the
worker tests in ``tests/test_waits.py`` cover the real thing.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore

from celery_durable import (
    NonDeterministicStepError,
    RunNotFoundError,
    RunStatus,
    durable_task,
    get_run,
    send_event,
    sleep,
    sleep_until,
    step,
    wait_for_event,
    wake_run,
)
from celery_durable.stores import get_store
from celery_durable.stores.memory import MemoryStore

app = Celery("waits-unit", broker="memory://", backend="cache+memory://", set_as_current=False)
app.conf.durable_store = "memory://"
calls: dict[str, int] = {}


def count(name: str) -> int:
    calls[name] = calls.get(name, 0) + 1
    return calls[name]


@step
def before(tag: str) -> int:
    return count(f"{tag}:before")


@durable_task(app=app)
def napper(tag: str, seconds: float) -> str:
    before(tag)
    sleep(seconds)
    count(f"{tag}:passed")
    return "woke"


@durable_task(app=app)
def waiter(tag: str, name: str, key: Any, timeout: float | None = None) -> Any:
    before(tag)
    return wait_for_event(name, key=key, timeout=timeout)


current_key = {"value": "a"}


@durable_task(app=app)
def waiter_on_global_key(tag: str, name: str) -> Any:
    return wait_for_event(name, key=current_key["value"])  # not deterministic: a global


def deliver(task: Any, run_id: str, *args: Any) -> tuple[str, Any]:
    """One worker-style delivery of ``run_id``: ``("done", value)`` or ``("ignored", None)``."""
    task.push_request(id=run_id, is_eager=False, called_directly=False, delivery_info={},
                      retries=0, hostname="unit@test")
    try:
        return "done", task(*args)
    except Ignore:
        return "ignored", None
    finally:
        task.pop_request()


def status(run_id: str) -> RunStatus:
    return get_run(run_id, app=app).status


def new_run() -> tuple[str, str]:
    return str(uuid.uuid4()), uuid.uuid4().hex[:8]


def test_sleep_suspends_and_wake_run_resumes_without_rerunning_steps() -> None:
    """A sleeping run ignores early deliveries; after wake_run it resumes past the sleep once."""
    run_id, tag = new_run()
    assert deliver(napper, run_id, tag, 3600) == ("ignored", None)
    assert status(run_id) is RunStatus.SLEEPING
    assert app.AsyncResult(run_id).state == "SLEEPING"
    assert deliver(napper, run_id, tag, 3600) == ("ignored", None)  # early: not before wake
    assert wake_run(run_id, app=app) is True
    assert deliver(napper, run_id, tag, 3600) == ("done", "woke")
    assert (calls[f"{tag}:before"], calls[f"{tag}:passed"]) == (1, 1)
    sleep_step = get_run(run_id, app=app).steps[1]
    assert sleep_step.key == "sleep#0" and sleep_step.value["outcome"] == "woken"
    assert wake_run(run_id, app=app) is False


def test_an_elapsed_sleep_returns_at_once_on_replay() -> None:
    """Once the wake time passed, the sweeper's claim republishes and replay goes on."""
    run_id, tag = new_run()
    assert deliver(napper, run_id, tag, 0.2)[0] == "ignored"
    time.sleep(0.3)
    store = get_store(app)
    assert run_id in store.due_runs(1000)
    assert store.claim_due(run_id, grace=60, max_recoveries=5).action == "publish"
    assert deliver(napper, run_id, tag, 0.2) == ("done", "woke")
    assert get_run(run_id, app=app).steps[1].value["outcome"] == "elapsed"


def test_a_zero_sleep_is_checkpointed_but_does_not_suspend() -> None:
    """sleep(0) keeps its position in the replay but never suspends the run."""
    run_id, tag = new_run()
    assert deliver(napper, run_id, tag, 0) == ("done", "woke")
    assert [s.key for s in get_run(run_id, app=app).steps] == ["before#0", "sleep#0"]


def test_event_resolves_a_waiting_run() -> None:
    """An event sent to a WAITING run is its wait's return value on the next delivery."""
    run_id, tag = new_run()
    name = f"ev-{tag}"
    assert deliver(waiter, run_id, tag, name, 7)[0] == "ignored"
    assert status(run_id) is RunStatus.WAITING
    wait = get_run(run_id, app=app).wait
    assert wait is not None and (wait.event, wait.key, wait.until) == (name, "7", None)
    assert send_event(name, "7", {"ok": True}, app=app) == 1  # keys compare as text
    assert status(run_id) is RunStatus.PENDING
    assert deliver(waiter, run_id, tag, name, 7) == ("done", {"ok": True})
    value = get_run(run_id, app=app).steps[1].value
    assert value["outcome"] == "event" and value["payload"] == {"ok": True}


def test_an_event_landing_while_the_run_parks_is_not_lost(monkeypatch) -> None:
    """An event sent after the waiter's first mailbox look but before it parks is delivered."""
    run_id, tag = new_run()
    name = f"ev-{tag}"
    store = get_store(app)
    assert isinstance(store, MemoryStore)
    real_suspend = store.suspend
    sent: list[int] = []

    def suspend_after_an_event(*args: Any, **kwargs: Any) -> bool:
        sent.append(send_event(name, "k", "raced", app=app))  # run is still RUNNING
        return real_suspend(*args, **kwargs)

    monkeypatch.setattr(store, "suspend", suspend_after_an_event)
    published: list[str] = []
    monkeypatch.setattr("celery_durable.engine.runner.publish_run",
                        lambda _app, run: published.append(run.id))
    assert deliver(waiter, run_id, tag, name, "k")[0] == "ignored"
    assert sent == [0] and published == [run_id]
    assert status(run_id) is RunStatus.PENDING
    monkeypatch.setattr(store, "suspend", real_suspend)
    assert deliver(waiter, run_id, tag, name, "k") == ("done", "raced")


def test_timeout_returns_none_after_the_deadline() -> None:
    """A wait with a timeout returns None on the delivery after its deadline."""
    run_id, tag = new_run()
    assert deliver(waiter, run_id, tag, f"ev-{tag}", "k", 0.2)[0] == "ignored"
    time.sleep(0.3)
    assert get_store(app).claim_due(run_id, grace=60, max_recoveries=5).action == "publish"
    assert deliver(waiter, run_id, tag, f"ev-{tag}", "k", 0.2) == ("done", None)
    assert get_run(run_id, app=app).steps[1].value["outcome"] == "timeout"


def test_woken_wait_returns_none() -> None:
    """wake_run on a WAITING run ends its wait as if it timed out."""
    run_id, tag = new_run()
    assert deliver(waiter, run_id, tag, f"ev-{tag}", "k")[0] == "ignored"
    assert wake_run(run_id, app=app) is True
    assert deliver(waiter, run_id, tag, f"ev-{tag}", "k") == ("done", None)
    assert get_run(run_id, app=app).steps[1].value["outcome"] == "woken"


def test_a_changed_event_key_on_replay_fails_the_run() -> None:
    """Replay meeting a wait for another key than recorded fails as non-deterministic."""
    run_id, tag = new_run()
    current_key["value"] = "a"
    assert deliver(waiter_on_global_key, run_id, tag, f"ev-{tag}")[0] == "ignored"
    wake_run(run_id, app=app)
    current_key["value"] = "b"
    with pytest.raises(NonDeterministicStepError, match="waited for key 'a'"):
        deliver(waiter_on_global_key, run_id, tag, f"ev-{tag}")
    assert status(run_id) is RunStatus.FAILED


def test_wake_run_of_an_unknown_run_raises() -> None:
    """wake_run names a run that does not exist: RunNotFoundError."""
    with pytest.raises(RunNotFoundError):
        wake_run("no-such-run", app=app)


def test_misuse_is_reported() -> None:
    """Bad arguments and waits outside a run or inside a step raise clear errors."""
    with pytest.raises(TypeError):
        sleep("soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        sleep_until(dt.datetime.now())
    with pytest.raises(RuntimeError, match="inside a durable run"):
        wait_for_event("x", key=1)
    sleep(0)  # outside a run: a plain sleep

    @durable_task(app=app)
    def sleeps_in_a_step() -> None:
        step.run("bad", sleep, 1)

    run_id = str(uuid.uuid4())
    with pytest.raises(Exception, match="inside a step"):
        deliver(sleeps_in_a_step, run_id)


def test_eager_mode_skips_sleeps_and_takes_buffered_events() -> None:
    """In eager mode a sleep returns at once and a wait gets a sent event or None."""
    eager = Celery("waits-eager", set_as_current=False)
    eager.conf.task_always_eager = True

    @durable_task(app=eager)
    def flow(name: str) -> list[Any]:
        sleep(dt.timedelta(hours=2))
        return [wait_for_event(name, key=1), wait_for_event(name, key=1, timeout=60)]

    assert send_event("eager-ev", 1, "hello", app=eager) == 0
    assert flow.delay("eager-ev").get() == ["hello", None]
