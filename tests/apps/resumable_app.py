"""Durable tasks for ``celery_durable.testing.assert_resumable``: one good, two flawed."""

from __future__ import annotations

from celery import current_task

from apps.common import counters, make_app
from celery_durable import call, durable_task, map, patched, step

app = make_app("resumable_app")
r = counters()


@step
def double(x: int) -> int:
    return x * 2


@step
def add(x: int, y: int) -> int:
    return x + y


@step
def left(x: int) -> int:
    return x - 1


@step
def right(x: int) -> int:
    return x + 1


@durable_task(app=app)
def pipeline(x: int) -> dict[str, int]:
    """Three steps, deterministic, every effect in a step: resumable."""
    a = double(x)
    b = add(a, 3)
    c = double(b)
    return {"a": a, "b": b, "c": c}


@durable_task(app=app)
def branches_on_the_outside_world(tag: str, x: int) -> int:
    """Non-deterministic: which step runs first depends on how often the body ran."""
    deliveries = int(r.incr(f"{tag}:{current_task.request.id}"))
    first = left(x) if deliveries == 1 else right(x)
    return add(first, double(x))


@durable_task(app=app)
def emails_from_the_body(tag: str, x: int) -> int:
    """A side effect (an 'email') done in the body between steps: repeated on resume."""
    a = double(x)
    r.incr(f"{tag}:emails")
    return add(a, 1)


@durable_task(app=app)
def plus_one_doubled(x: int) -> int:
    """A child run of :func:`fans_out`: one step."""
    return double(x) + 1


@durable_task(app=app)
def fans_out(x: int) -> dict[str, object]:
    """A step, then a map over three child runs: resumable, children included."""
    a = double(x)
    return {"a": a, "children": map(plus_one_doubled, [a, a + 1, a + 2])}


@durable_task(app=app)
def patched_in_a_loop(x: int) -> dict[str, object]:
    """patched() twice in a loop, a child run after it: markers are checkpoints like steps."""
    out = []
    for i in range(2):
        if patched("bonus"):
            out.append(add(x, i))
    return {"bonus": out, "child": call(plus_one_doubled, x)}
