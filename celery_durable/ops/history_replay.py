"""Replay a task's current code against a recorded history, in this process.

No store, no broker, and no step function is called: each step returns its recorded
value (or raises its recorded failure) and the replay stops where the history ends
(a step without a checkpoint, a wait not resolved yet, or anything that would write).
The first step the code calls differently from the history raises
:class:`~celery_durable.errors.NonDeterministicStepError` with both sequences. Use it
in CI before a deploy (``celery -A proj durable check-replay``), or under a debugger
to step through a production run with its recorded values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from ..config import app_or_current, settings_for
from ..engine import endings
from ..engine._flow import HistoryEnded
from ..engine.async_steps import delivery_body
from ..engine.context import RunContext, current_run
from ..engine.labels import code_version
from ..serialization import decode, get_serializer
from .history_doc import History, export_run, load_history


@dataclass(frozen=True)
class ReplayResult:
    """What a replay reached: the body's result, or where the history ended."""

    #: The body returned (every step it called was recorded).
    finished: bool
    #: What the body returned (``finished`` only).
    result: Any = None
    #: Where the history ended: a step without a checkpoint, or a wait (child call,
    #: marker) the code would have to write or wait for.
    ended_at: str | None = None
    #: Recorded positions the code went through before that.
    replayed: int = 0
    #: The name of the task whose code was replayed.
    task: str = ""


class _NoStore:
    """The store of a replay: reading nothing more, writing nothing; metadata is ignored."""

    def set_metadata(self, run_id: str, token: int, values: Mapping[str, str]) -> bool:
        return True

    def supports(self, capability: type) -> bool:
        return True  # (the first call of the capability ends the replay)

    def __getattr__(self, name: str) -> Any:
        def past_the_end(*args: Any, **kwargs: Any) -> Any:
            raise HistoryEnded(*_where(name, [*args, *kwargs.values()]))
        return past_the_end


def _where(name: str, values: list[Any]) -> tuple[str, int]:
    """Which step of the run a store call past the history is about (the checkpoint or
    wait it carries; else the last position the code reached)."""
    for value in values:  # a StepRecord (key) or a WaitInfo (step)
        key = getattr(value, "key", None) or getattr(value, "step", None)
        position = getattr(value, "position", None)
        if isinstance(key, str) and isinstance(position, int):
            return (f"{key} at position {position} goes on past the history (it would "
                    f"call the store: {name})", position)
    ctx = current_run.get()
    last = max((ctx.peek() if ctx is not None else 0) - 1, 0)
    return f"the code after position {last} would call the store ({name})", last


def replay(task: Any, history: History | str | Path | Mapping[str, Any]) -> ReplayResult:
    """Replay ``task``'s current code against ``history`` (a loaded :class:`History`, a
    path, JSON text or an exported dict). Raises ``NonDeterministicStepError`` at the first
    divergence and :class:`~.history_doc.HistoryFileError` for a bad document."""
    doc = history if isinstance(history, History) else load_history(history)
    if doc.task != task.name:
        raise ValueError(f"{doc.source} is a history of {doc.task}, not of {task.name}")
    settings = settings_for(task.app)
    serializer = get_serializer(doc.serializer)
    args = decode(serializer, doc.args, what="arguments", run_id=doc.run_id)
    kwargs = decode(serializer, doc.kwargs, what="keyword arguments", run_id=doc.run_id)
    ctx = RunContext(task=task, run_id=doc.run_id, token=0, store=_NoStore(),  # type: ignore[arg-type]
                     settings=settings, serializer=serializer,
                     policy=endings.task_policy(task), checkpoints=dict(doc.steps),
                     eager=True, run_version=doc.version, code_version=code_version(task),
                     replay_only=True)
    body = delivery_body(task)  # (an async body in an event loop, as a delivery runs it)
    task.push_request(id=doc.run_id, args=args, kwargs=kwargs, is_eager=True,
                      called_directly=False, retries=0, delivery_info={})
    reset = current_run.set(ctx)
    try:
        result = body(*args, **kwargs)
    except HistoryEnded as end:
        return ReplayResult(False, ended_at=end.what, replayed=end.position, task=task.name)
    finally:
        current_run.reset(reset)
        task.pop_request()
    replayed = ctx.position if ctx.branches is None else len(doc.steps)
    return ReplayResult(True, result=result, replayed=replayed, task=task.name)


def check_current_code(run_id: str, *, app: Celery | None = None) -> ReplayResult:
    """Replay this process's code of run ``run_id``'s task against the run's history in
    the store (reading only; no step is called). ``NonDeterministicStepError`` shows both
    sequences when the code no longer replays it; ``LookupError`` if the task is not
    registered here."""
    app = app_or_current(app)
    doc = export_run(run_id, app=app)
    task = app.tasks.get(doc["task"])
    if task is None:
        raise LookupError(f"run {run_id}: its task {doc['task']} is not registered in this "
                          "app, so its current code cannot be replayed here")
    return replay(task, doc)


__all__ = ["ReplayResult", "check_current_code", "replay"]
