"""The branches of an ``async def`` body (celery_durable/engine/branches.py): each gathered
task's steps are matched to their checkpoints within that task, so a resumed gather hands
every recorded value back to its own awaiter and runs only what is missing, whatever order
the branches reach their steps in. In process: eager mode on the MemoryStore."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from celery import Celery

from celery_durable import durable_task, get_run, step
from celery_durable.engine.branches import branch_of


@pytest.fixture
def app(eager_app: Celery) -> Celery:
    return eager_app


def test_branches_of_several_steps_resume_after_a_retry(app: Celery) -> None:
    """Two gathered branches of two steps each; one branch's first step fails once. The
    retry delivery replays the other branch's steps (which return at once, so it reaches
    its second step before the first branch's first) and runs only what is missing."""
    runs: Counter[tuple[str, str]] = Counter()

    @step(max_attempts=2, backoff=0)
    async def fetch(name: str) -> str:
        runs["fetch", name] += 1
        await asyncio.sleep(0)
        if name == "y" and runs["fetch", name] == 1:
            raise ConnectionError("once")
        return name

    @step
    async def parse(value: str) -> str:
        runs["parse", value] += 1
        return value.upper()

    async def branch(name: str) -> str:
        return await parse(await fetch(name))

    @durable_task(app=app, name="branches.two_steps")
    async def main() -> list[str]:
        return list(await asyncio.gather(branch("x"), branch("y")))

    result = main.delay()
    assert result.get() == ["X", "Y"]
    assert runs == {("fetch", "x"): 1, ("fetch", "y"): 2, ("parse", "x"): 1,
                    ("parse", "y"): 1}
    steps = get_run(result.id, app=app).steps
    assert sorted(s.key for s in steps) == ["fetch#0@0", "fetch#0@1", "parse#0@0",
                                            "parse#0@1"]
    assert sorted(s.position for s in steps) == [0, 1, 2, 3]


def test_branches_reaching_their_steps_in_another_order_on_replay(app: Celery) -> None:
    """The first delivery's branches reach their steps in one order (``b`` first), the
    retry delivery's in the other (``a`` first, nested ones too): each awaiter still gets
    the value its own call recorded, and no recorded step runs again."""
    deliveries = 0
    runs: Counter[str] = Counter()

    @step
    async def tool(name: str) -> str:
        runs[name] += 1
        return f"{name}-result"

    @step(max_attempts=2, backoff=0)
    async def flaky() -> str:
        runs["flaky"] += 1
        if runs["flaky"] == 1:
            await asyncio.sleep(0.05)  # after every other step of the first delivery
            raise ConnectionError("once")
        return "flaky-result"

    async def branch(name: str, first_delivery_delay: float) -> str:
        await asyncio.sleep(first_delivery_delay if deliveries == 1
                            else 0.02 - first_delivery_delay)
        return await tool(name)

    async def nested() -> list[str]:
        return list(await asyncio.gather(branch("n1", 0.02), branch("n2", 0)))

    @durable_task(app=app, name="branches.reordered")
    async def main() -> list[object]:
        nonlocal deliveries
        deliveries += 1
        return list(await asyncio.gather(branch("a", 0.02), branch("b", 0), nested(),
                                         flaky()))

    result = main.delay()
    assert result.get() == ["a-result", "b-result", ["n1-result", "n2-result"],
                            "flaky-result"]
    assert deliveries == 2
    assert runs == {"a": 1, "b": 1, "n1": 1, "n2": 1, "flaky": 2}
    keys = {s.key: s.value for s in get_run(result.id, app=app).steps}
    assert keys == {"tool#0@0": "a-result", "tool#0@1": "b-result",
                    "tool#0@2.0": "n1-result", "tool#0@2.1": "n2-result",
                    "flaky#0@3": "flaky-result"}


def test_tasks_a_step_creates_are_not_branches(app: Celery) -> None:
    """A step whose function gathers coroutines of its own (as an HTTP client does) makes
    tasks in the first delivery only (the retry replays it): the body's later branches
    are numbered the same in both deliveries, so their recorded steps are not run again."""
    runs: Counter[str] = Counter()

    @step
    async def prepare() -> int:
        runs["prepare"] += 1
        parts = await asyncio.gather(asyncio.sleep(0, 1), asyncio.sleep(0, 2))
        return sum(parts)

    @step
    async def tool(n: int) -> int:
        runs["tool"] += 1
        return n * 10

    @step(max_attempts=2, backoff=0)
    async def flaky() -> str:
        runs["flaky"] += 1
        await asyncio.sleep(0.01)
        if runs["flaky"] == 1:
            raise ConnectionError("once")
        return "ok"

    @durable_task(app=app, name="branches.inner_tasks")
    async def main() -> list[object]:
        n = await prepare()
        return list(await asyncio.gather(tool(n), flaky()))

    result = main.delay()
    assert result.get() == [30, "ok"]
    assert runs == {"prepare": 1, "tool": 1, "flaky": 2}
    assert [s.key for s in get_run(result.id, app=app).steps] == [
        "prepare#0", "tool#0@0", "flaky#0@1"]


@pytest.mark.parametrize(("key", "branch"), [
    ("fetch#0", ""), ("fetch#3@1", "1"), ("fetch#0@2.10", "2.10"),
    ("send@mail#1", ""), ("send@mail#1@0.2", "0.2"), ("patched:new-fee#0@4", "4")])
def test_the_branch_is_read_from_the_key(key: str, branch: str) -> None:
    assert branch_of(key) == branch


def test_waits_and_child_runs_inside_branches(app: Celery) -> None:
    """A durable sleep and a child run inside each of two gathered branches, and a third
    branch whose step fails once: the retry delivery replays the waits and child runs of
    each branch under its own keys (the children ran once each, and each branch gets its own
    child's result)."""
    from celery_durable import call, sleep

    ran: Counter[str] = Counter()

    @durable_task(app=app, name="branches.child")
    def child(x: int) -> int:
        ran[f"child-{x}"] += 1
        return x * 10

    @step(max_attempts=2, backoff=0)
    async def flaky() -> str:
        ran["flaky"] += 1
        if ran["flaky"] == 1:
            raise ConnectionError("once")
        return "ok"

    async def one(x: int) -> int:
        await sleep(0.01)
        return int(await call(child, x))

    @durable_task(app=app, name="branches.waits")
    async def main() -> list[object]:
        return list(await asyncio.gather(one(1), one(2), flaky()))

    result = main.apply()
    assert result.get() == [10, 20, "ok"]
    assert ran == {"child-1": 1, "child-2": 1, "flaky": 2}
    keys = sorted(s.key for s in get_run(result.id, app=app).steps)
    assert [k.partition("#")[2] for k in keys] == ["0@0", "0@1", "0@2", "0@0", "0@1"]
