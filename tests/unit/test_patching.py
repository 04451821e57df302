"""``patched()`` and ``deprecate_patch()`` in one process, with a MemoryStore: a deploy is
simulated by switching the body a task runs between deliveries of the same runs.

Each "delivery" runs the task body the way a worker would (a pushed request, not eager);
side effects are counted outside the steps.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore, Retry

from celery_durable import (
    NonDeterministicStepError,
    RunStatus,
    deprecate_patch,
    durable_task,
    get_run,
    patched,
    send_event,
    step,
    wait_for_event,
)

app = Celery("patching-unit", broker="memory://", backend="cache+memory://",
             set_as_current=False)
app.conf.durable_store = "memory://"
ran: Counter[str] = Counter()
deployed = {"version": "v1"}


@step
def reserve(tag: str) -> str:
    ran[f"{tag}:reserve"] += 1
    return "reserved"


@step
def fraud_check(tag: str) -> str:
    ran[f"{tag}:fraud"] += 1
    return "clean"


@step
def ship(tag: str) -> str:
    ran[f"{tag}:ship"] += 1
    return "shipped"


@durable_task(app=app, name="patching.order")
def order(tag: str) -> list[str]:
    """v1: reserve, wait for payment, ship. v2 inserts a fraud check behind patched();
    v3 (the second deploy) runs it always, with deprecate_patch() where patched() was."""
    done = [reserve(tag)]
    version = deployed["version"]
    if version == "v2" and patched("fraud-check"):
        done.append(fraud_check(tag))
    if version == "v3":
        deprecate_patch("fraud-check")
        done.append(fraud_check(tag))
    wait_for_event("paid", key=tag, timeout=3600)
    return [*done, ship(tag)]


@step(max_attempts=3, backoff=0)
def item(tag: str, i: int, fail_at: int = -1) -> int:
    ran[f"{tag}:item{i}"] += 1
    if i == fail_at and ran[f"{tag}:item{i}"] == 1:
        raise ConnectionError("fails once: the run is delivered again")
    return i


@step
def extra(tag: str, i: int) -> int:
    ran[f"{tag}:extra{i}"] += 1
    return -i


@durable_task(app=app, name="patching.loop")
def loop(tag: str, fail_at: int = -1) -> list[int]:
    out = []
    for i in range(3):
        if deployed["version"] != "v1" and patched("extra-per-item"):
            out.append(extra(tag, i))
        out.append(item(tag, i, fail_at))
    return out


def deliver(task: Any, run_id: str, *args: Any) -> tuple[str, Any]:
    """One worker-style delivery of ``run_id``: ``("done", value)``, ``("ignored", None)``
    or ``("retry", None)`` (a step is retried: the run is sent again)."""
    task.push_request(id=run_id, is_eager=False, called_directly=False, delivery_info={},
                      retries=0, hostname="unit@test")
    try:
        return "done", task(*args)
    except Ignore:
        return "ignored", None
    except Retry:
        return "retry", None
    finally:
        task.pop_request()


@pytest.fixture(autouse=True)
def _v1() -> Any:
    deployed["version"] = "v1"
    yield
    deployed["version"] = "v1"


def start(version: str) -> tuple[str, str]:
    """A new run of ``order`` under ``version``, parked at its wait for payment."""
    deployed["version"] = version
    run_id, tag = str(uuid.uuid4()), uuid.uuid4().hex[:8]
    assert deliver(order, run_id, tag) == ("ignored", None)
    assert get_run(run_id, app=app).status is RunStatus.WAITING
    return run_id, tag


def finish(run_id: str, tag: str, version: str) -> Any:
    deployed["version"] = version
    assert send_event("paid", key=tag, payload=None, app=app) == 1
    return deliver(order, run_id, tag)


def keys(run_id: str) -> list[str]:
    return [s.key for s in get_run(run_id, app=app).steps]


def test_a_run_recorded_before_the_patch_keeps_the_old_path() -> None:
    """Started under v1, finished under v2: patched() is False there and takes no
    position, so the recorded wait still lines up; no fraud check, nothing ran twice."""
    run_id, tag = start("v1")
    assert finish(run_id, tag, "v2") == ("done", ["reserved", "shipped"])
    assert ran[f"{tag}:fraud"] == 0 and ran[f"{tag}:reserve"] == 1 and ran[f"{tag}:ship"] == 1
    assert not any(k.startswith("patched:") for k in keys(run_id))


def test_a_new_run_takes_the_new_path_and_replays_it() -> None:
    """Started under v2: the marker is recorded where patched() was called (True), and the
    resumed delivery replays it (True again) without running the fraud check twice."""
    run_id, tag = start("v2")
    assert keys(run_id)[:3] == ["reserve#0", "patched:fraud-check#0", "fraud_check#0"]
    assert finish(run_id, tag, "v2") == ("done", ["reserved", "clean", "shipped"])
    assert ran[f"{tag}:fraud"] == 1 and ran[f"{tag}:reserve"] == 1


def test_deprecate_patch_accepts_histories_with_and_without_the_marker() -> None:
    """The second deploy (v3): a run recorded under v2 (with the marker) and a new run
    (without it) both finish; a run recorded under v1 cannot, by design, and says why."""
    with_marker, tag2 = start("v2")
    assert finish(with_marker, tag2, "v3") == ("done", ["reserved", "clean", "shipped"])
    assert ran[f"{tag2}:fraud"] == 1
    fresh, tag3 = start("v3")
    assert not any(k.startswith("patched:") for k in keys(fresh))
    assert finish(fresh, tag3, "v3") == ("done", ["reserved", "clean", "shipped"])
    too_old, tag1 = start("v1")
    deployed["version"] = "v3"
    send_event("paid", key=tag1, payload=None, app=app)
    with pytest.raises(NonDeterministicStepError):
        deliver(order, too_old, tag1)


def test_a_divergence_names_both_sequences_and_both_versions() -> None:
    """The error a run recorded by v1 meets under v3 says where, what was recorded, what
    the code calls now, under which versions, and what to do."""
    order.version = "v1"
    try:
        run_id, tag = start("v1")
        order.version = "v3"
        deployed["version"] = "v3"
        send_event("paid", key=tag, payload=None, app=app)
        with pytest.raises(NonDeterministicStepError) as caught:
            deliver(order, run_id, tag)
    finally:
        order.version = None
    error = caught.value
    assert error.position == 1
    assert error.recorded_steps == ["reserve#0", "wait_for_event:paid#0"]
    assert error.current_steps == ["reserve#0", "fraud_check#0"]
    assert (error.recorded_version, error.current_version) == ("v1", "v3")
    text = str(error)
    assert "recorded step 'wait_for_event:paid#0' but the code now calls 'fraud_check#0'" in text
    assert "recorded under version v1, replayed by version v3" in text
    assert "recorded: reserve#0, >>wait_for_event:paid#0<<" in text
    assert "now:      reserve#0, >>fraud_check#0<<" in text
    assert "patched(" in text and "docs/deploying.md" in text
    run = get_run(run_id, app=app)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert "recorded under version v1" in run.error.message


def test_in_a_loop_each_call_has_its_own_marker_and_a_resume_lines_up() -> None:
    """Three iterations under v2: markers #0..#2; the second item fails once, and the
    delivery after it replays the recorded markers and steps, running nothing twice."""
    deployed["version"] = "v2"
    run_id, tag = str(uuid.uuid4()), uuid.uuid4().hex[:8]
    assert deliver(loop, run_id, tag, 1) == ("retry", None)  # the item is retried
    assert deliver(loop, run_id, tag, 1) == ("done", [0, 0, -1, 1, -2, 2])
    assert [k for k in keys(run_id) if k.startswith("patched:")] == [
        "patched:extra-per-item#0", "patched:extra-per-item#1", "patched:extra-per-item#2"]
    assert [ran[f"{tag}:extra{i}"] for i in range(3)] == [1, 1, 1]
    assert [ran[f"{tag}:item{i}"] for i in range(3)] == [1, 2, 1]  # the failed attempt


def test_a_run_half_recorded_before_the_patch_goes_on_with_the_new_code() -> None:
    """Under v1 the second item failed once; under v2 the recorded iterations replay the
    old path (False: the old code's steps are recorded there) and the iteration past the
    history runs the new code (True, recorded)."""
    run_id, tag = str(uuid.uuid4()), uuid.uuid4().hex[:8]
    assert deliver(loop, run_id, tag, 1) == ("retry", None)
    deployed["version"] = "v2"
    assert deliver(loop, run_id, tag, 1) == ("done", [0, 1, -2, 2])
    assert keys(run_id) == ["item#0", "item#1", "patched:extra-per-item#2", "extra#0",
                            "item#2"]


def test_outside_a_run_patched_is_true_and_bad_ids_are_refused() -> None:
    assert patched("anything") is True
    assert deprecate_patch("anything") is None
    for bad in ("", "   ", None, 42):
        with pytest.raises(ValueError, match="non-empty string change id"):
            patched(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty string change id"):
            deprecate_patch(bad)  # type: ignore[arg-type]


def test_in_eager_mode_patched_records_its_marker() -> None:
    eager = Celery("patching-eager", set_as_current=False)
    eager.conf.task_always_eager = True
    calls: list[str] = []

    @durable_task(app=eager, name="patching.eager")
    def eager_task() -> bool:
        first = patched("eager-change")
        calls.append("body")
        return first

    result = eager_task.delay()
    assert result.get() is True
    assert [s.key for s in get_run(result.id, app=eager).steps] == ["patched:eager-change#0"]
