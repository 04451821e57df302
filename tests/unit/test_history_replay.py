"""``testing.replay`` against recorded histories (the deploy gate) and
``celery durable check-replay``, in one process with a MemoryStore: a deploy is simulated
by switching the body between runs. Bad history documents fail with an error naming the
document and the first bad entry."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore, Retry
from click.testing import CliRunner

from celery_durable import NonDeterministicStepError, durable_task, patched, step
from celery_durable.ops.cli import durable
from celery_durable.ops.history_doc import HistoryFileError, _digest
from celery_durable.testing import export_run, load_history, replay

app = Celery("history-replay", broker="memory://", backend="cache+memory://",
             set_as_current=False)
app.conf.durable_store = "memory://"
calls: Counter[str] = Counter()
code = {"version": "v1"}


@step
def reserve(n: int) -> int:
    calls["reserve"] += 1
    return n


@step
def audit(n: int) -> str:
    calls["audit"] += 1
    return f"audited {n}"


@step(max_attempts=2, backoff=0)
def charge(n: int) -> int:
    calls["charge"] += 1
    return n * 10


@durable_task(app=app, name="history.order")
def order(n: int) -> list[Any]:
    out: list[Any] = [reserve(n)]
    if code["version"] == "v2-unsafe":
        out.append(audit(n))  # inserted without patched(): old histories diverge
    if code["version"] == "v2-patched" and patched("audit"):
        out.append(audit(n))
    out.append(charge(n))
    return out


@step
async def fetch_part(n: int) -> int:
    calls["fetch_part"] += 1
    return n


@step
async def double_part(n: int) -> int:
    calls["double_part"] += 1
    return n * 2


async def one_part(n: int) -> int:
    return await double_part(await fetch_part(n))


@durable_task(app=app, name="history.parts")
async def parts(n: int) -> list[int]:
    return list(await asyncio.gather(one_part(n), one_part(n + 1)))


def run_to_the_end(n: int, task: Any = order) -> str:
    run_id = str(uuid.uuid4())
    task.push_request(id=run_id, is_eager=False, called_directly=False, delivery_info={},
                      retries=0, hostname="unit@test")
    try:
        task(n)
    except Ignore:
        pass
    finally:
        task.pop_request()
    return run_id


@pytest.fixture(autouse=True)
def _v1() -> Any:
    code["version"] = "v1"
    yield
    code["version"] = "v1"


def test_the_same_code_replays_to_the_same_result_calling_no_step(tmp_path: Path) -> None:
    run_id = run_to_the_end(4)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(export_run(run_id, app=app)))
    before = dict(calls)
    result = replay(order, path)
    assert result.finished and result.result == [4, 40] and result.replayed == 2
    assert dict(calls) == before


def test_new_code_diverging_from_a_history_says_where_and_patched_code_does_not() -> None:
    history = export_run(run_to_the_end(5), app=app)
    code["version"] = "v2-unsafe"
    with pytest.raises(NonDeterministicStepError) as caught:
        replay(order, history)
    assert caught.value.recorded_steps == ["reserve#0", "charge#0"]
    assert caught.value.current_steps == ["reserve#0", "audit#0"]
    code["version"] = "v2-patched"
    assert replay(order, history).result == [5, 50]  # the old path, as the old run takes


def test_an_async_history_with_branches_replays_and_may_have_gaps() -> None:
    """An async run's history (gathered branches of two steps: keys ``name#n@branch``)
    replays calling no step; without one branch's last step (as a crash leaves it, a gap
    in the positions) it loads and replays up to there. A sync history with a gap is
    refused."""
    doc = export_run(run_to_the_end(3, parts), app=app)
    assert sorted(s["key"] for s in doc["steps"]) == [
        "double_part#0@0", "double_part#0@1", "fetch_part#0@0", "fetch_part#0@1"]
    before = dict(calls)
    result = replay(parts, doc)
    assert result.finished and result.result == [6, 8] and dict(calls) == before
    missing = min((s for s in doc["steps"] if s["name"].endswith("double_part")),
                  key=lambda s: s["position"])  # the other branch's second step is later
    doc["steps"].remove(missing)
    assert [s["position"] for s in doc["steps"]] != list(range(3))  # a gap
    cut = replay(parts, load_history(doc | {"digest": _digest(doc)}))
    assert not cut.finished and missing["key"] in (cut.ended_at or "")
    sync = export_run(run_to_the_end(7), app=app)
    sync["steps"][1]["position"] = 2
    with pytest.raises(HistoryFileError, match="step entry 1 is at position 2, expected 1"):
        load_history(sync | {"digest": _digest(sync)})


def test_a_history_that_ends_early_says_where() -> None:
    """A run of v1 replayed by v2-patched with only its first step recorded: the code
    goes on to write the patch marker, past the history."""
    doc = export_run(run_to_the_end(6), app=app)
    doc["steps"] = doc["steps"][:1]
    cut = load_history(doc | {"digest": _digest(doc)})  # cut, and signed again
    code["version"] = "v2-patched"
    result = replay(order, cut)
    assert not result.finished and result.replayed == 1
    assert "patched:audit#0 at position 1 goes on past the history" in (result.ended_at or "")


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[: len(text) // 2], "not JSON (truncated?)"),
    (lambda text: json.dumps({"hello": 1}), "not a celery_durable history document"),
    (lambda text: text.replace('"format_version": 1', '"format_version": 9'),
     "format version 9 is newer"),
    (lambda text: text.replace('"value": "40"', '"value": "41"'),
     "does not match its digest"),
])
def test_a_damaged_history_file_is_refused_naming_the_file(tmp_path: Path, damage: Any,
                                                          message: str) -> None:
    text = json.dumps(export_run(run_to_the_end(4), app=app))
    path = tmp_path / "damaged.json"
    path.write_text(damage(text))
    with pytest.raises(HistoryFileError) as caught:
        replay(order, path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_history_of_another_task_is_refused() -> None:
    doc = export_run(run_to_the_end(4), app=app)

    @durable_task(app=app, name="history.other")
    def other() -> None:
        return None

    with pytest.raises(ValueError, match=r"is a history of history\.order, not of history\.other"):
        replay(other, doc)


def test_check_replay_exits_non_zero_on_a_divergence_and_zero_when_compatible() -> None:
    """In-flight runs (a run whose charge is being retried) checked against the code."""
    code["version"] = "v1"
    calls["charge"] = 0

    @step(max_attempts=3, backoff=0)
    def flaky(n: int) -> int:
        raise ConnectionError("down")

    @durable_task(app=app, name="history.retrying")
    def retrying(n: int) -> list[int]:
        first = reserve(n)
        if code["version"] == "v2-unsafe":
            audit(n)
        return [first, flaky(n)]

    run_id = str(uuid.uuid4())
    retrying.push_request(id=run_id, is_eager=False, called_directly=False,
                          delivery_info={}, retries=0, hostname="unit@test")
    with pytest.raises(Retry):  # the run is in flight (RETRYING)
        retrying(1)
    retrying.pop_request()
    runner = CliRunner()
    obj = SimpleNamespace(app=app)
    ok = runner.invoke(durable, ["check-replay", "--task", "history.retrying"], obj=obj)
    assert ok.exit_code == 0, ok.output
    assert "1 compatible, 0 diverge" in ok.output
    code["version"] = "v2-unsafe"
    bad = runner.invoke(durable, ["check-replay", "--task", "history.retrying"], obj=obj)
    assert bad.exit_code == 1
    assert "0 compatible, 1 diverge" in bad.output
    assert "recorded: reserve#0, >>flaky#0<<" in bad.output


@step(max_attempts=3, backoff=0)
def stuck(n: int) -> int:
    raise ConnectionError("down")


@durable_task(app=app, name="history.stuck")
def stuck_order(n: int) -> list[Any]:
    """In flight forever (its last step is retried): two code paths, one that raises."""
    first = reserve(n)
    if code["version"] == "v2-raises" and n == 2:
        raise KeyError("no such customer")
    return [first, stuck(n)]


def deliver(task: Any, run_id: str, *args: Any) -> None:
    """One delivery of ``run_id`` (a worker's request), whatever it ends with."""
    task.push_request(id=run_id, is_eager=False, called_directly=False, delivery_info={},
                      retries=0, hostname="unit@test")
    try:
        task(*args)
    except (Retry, Ignore, NonDeterministicStepError):
        pass
    finally:
        task.pop_request()


def test_check_replay_reports_a_run_it_cannot_replay_and_goes_on_with_the_others() -> None:
    for n in (1, 2):
        deliver(stuck_order, str(uuid.uuid4()), n)
    code["version"] = "v2-raises"
    out = CliRunner().invoke(durable, ["check-replay", "--task", "history.stuck"],
                             obj=SimpleNamespace(app=app))
    assert out.exit_code == 1
    assert "1 compatible, 0 diverge, 1 could not be replayed." in out.output
    assert "could not be replayed: KeyError: 'no such customer'" in out.output


def test_retry_with_current_code_refuses_diverging_code_then_resumes_patched_code() -> None:
    """A run dead-lettered by NonDeterministicStepError: retrying it with code that still
    diverges changes nothing; once the code is patched it resumes in place, steps kept,
    under the current code version."""
    from celery_durable import get_run, retry_with_current_code

    run_id = str(uuid.uuid4())
    charge_fails = {"on": True}

    @step(max_attempts=5, backoff=0)
    def settle(n: int) -> int:
        if charge_fails["on"]:
            raise ConnectionError("bank down")
        return n

    @durable_task(app=app, name="history.fixable")
    def fixable(n: int) -> list[int]:
        out = [reserve(n)]
        if code["version"] == "v2-unsafe":
            out.append(reserve(n + 1))
        if code["version"] == "v2-patched" and patched("second-reserve"):
            out.append(reserve(n + 1))
        return [*out, settle(n)]

    fixable.version = "v1"
    deliver(fixable, run_id, 3)  # v1: reserve done, settle being retried
    code["version"], fixable.version = "v2-unsafe", "v2"
    deliver(fixable, run_id, 3)  # v2 without patched(): dead-lettered
    dead = get_run(run_id, app=app)
    assert dead.status == "FAILED" and dead.error is not None
    assert dead.error.type.endswith("NonDeterministicStepError")
    with pytest.raises(NonDeterministicStepError, match="reserve#1"):
        retry_with_current_code(run_id, app=app)
    assert get_run(run_id, app=app).status == "FAILED"  # nothing changed
    runner, obj = CliRunner(), SimpleNamespace(app=app)
    still = runner.invoke(durable, ["check-replay", run_id], obj=obj)
    assert still.exit_code == 1 and ">>reserve#1<<" in still.output
    code["version"] = "v2-patched"
    fixed = runner.invoke(durable, ["check-replay", run_id], obj=obj)
    assert fixed.exit_code == 0, fixed.output
    assert f"Run {run_id} replays on this code: 1 recorded position(s), then" in fixed.output
    retry_with_current_code(run_id, app=app)
    again = get_run(run_id, app=app)
    assert again.status == "PENDING" and again.version == "v2"
    assert [s.key for s in again.steps] == ["reserve#0"]
    charge_fails["on"] = False
    deliver(fixable, run_id, 3)
    done = get_run(run_id, app=app)
    # Past its recorded history (settle never succeeded) the run takes the new path.
    assert done.status == "SUCCEEDED" and done.result == [3, 4, 3]
    assert [s.key for s in done.steps] == ["reserve#0", "patched:second-reserve#0",
                                            "reserve#1", "settle#0"]


def test_a_history_replays_under_pdb_with_its_recorded_values(tmp_path: Path) -> None:
    """A breakpoint in the task body stops there during ``replay`` and shows the values the
    run recorded (the exported production run, stepped through locally)."""
    import inspect
    import io
    import pdb

    path = tmp_path / "run.json"
    path.write_text(json.dumps(export_run(run_to_the_end(7), app=app)))
    before = dict(calls)
    source, first = inspect.getsourcelines(order.run)
    line = first + next(i for i, text in enumerate(source) if "out.append(charge(n))" in text)
    out = io.StringIO()
    debugger = pdb.Pdb(stdin=io.StringIO("continue\np out\ncontinue\n"), stdout=out,
                       nosigint=True)  # (runcall stops at replay()'s first line)
    debugger.use_rawinput = False
    debugger.set_break(inspect.getsourcefile(order.run), line)
    result = debugger.runcall(replay, order, path)
    assert f"test_history_replay.py({line})order()" in out.getvalue()  # stopped there
    assert "(Pdb) [7]" in out.getvalue()  # and saw the recorded value of reserve()
    assert result.result == [7, 70] and dict(calls) == before  # recorded values, no step ran
