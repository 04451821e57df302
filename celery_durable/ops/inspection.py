"""Inspecting and re-triggering runs: ``get_run``, ``list_runs``, ``retry_run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from ..config import app_or_current, settings_for
from ..engine.publish import publish_run
from ..errors import RunNotFoundError, SerializationError
from ..records import ErrorInfo, RunRecord, RunStatus, StepStatus, WaitInfo
from ..serialization import decode, encode, get_serializer
from ..stores import get_store


@dataclass(frozen=True)
class StepInfo:
    """One step of a run, decoded: key, status, attempts, value or error, timestamps."""

    position: int
    key: str
    name: str
    status: StepStatus
    attempts: int
    value: Any
    error: ErrorInfo | None
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class RunInfo:
    """A run, decoded, as ``get_run`` returns it."""

    id: str
    task: str
    status: RunStatus
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any
    error: ErrorInfo | None
    failed_step: str | None
    recoveries: int
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float | None
    idempotency_key: str | None
    steps: list[StepInfo]
    #: The durable wait of a SLEEPING/WAITING run (wake time, awaited event), else
    #: the last one the run passed.
    wait: WaitInfo | None = None
    #: The run that started this one with ``call``/``gather``/``map`` (None: top level).
    parent: str | None = None
    #: What of the stored run could not be read, each named (empty for a sound run); such a
    #: value reads as None here.
    damage: list[str] = field(default_factory=list)


def _info(app: Celery, run: RunRecord) -> RunInfo:
    serializer = get_serializer(settings_for(app).serializer)
    damage = list(run.damage)

    def value(text: str | None, what: str) -> Any:
        if text is None:
            return None
        try:
            return decode(serializer, text, what=what, run_id=run.id)
        except SerializationError as exc:
            damage.append(f"{what} ({exc})")
            return None

    steps = [StepInfo(s.position, s.key, s.name, s.status, s.attempts,
                      value(s.value, f"value of step {s.key}"), s.error, s.started_at,
                      s.finished_at) for s in run.steps]
    return RunInfo(
        id=run.id, task=run.task, status=run.status, args=value(run.args, "arguments"),
        kwargs=value(run.kwargs, "keyword arguments"), result=value(run.result, "result"),
        error=run.error, failed_step=run.failed_step, recoveries=run.recoveries,
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
        updated_at=run.updated_at, idempotency_key=run.idempotency_key, steps=steps,
        wait=run.wait, parent=run.parent, damage=damage)


def get_run(run_id: str, *, app: Celery | None = None) -> RunInfo:
    """The run ``run_id`` with its steps; RunNotFoundError if the store has none."""
    app = app_or_current(app)
    run = get_store(app).get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"no durable run {run_id!r}", run_id=run_id)
    return _info(app, run)


def list_runs(*, status: RunStatus | str | None = None, task: str | None = None,
              limit: int = 100, app: Celery | None = None) -> list[RunInfo]:
    """Runs, newest first, optionally filtered by status and task name (steps not loaded)."""
    app = app_or_current(app)
    wanted = RunStatus(status) if status is not None else None
    return [_info(app, r) for r in get_store(app).list_runs(status=wanted, task=task,
                                                             limit=limit)]


def retry_run(run_id: str, *, from_step: str = "failed", args: list[Any] | None = None,
              kwargs: dict[str, Any] | None = None, app: Celery | None = None) -> AsyncResult:
    """Re-trigger a FAILED (dead-lettered) or CANCELLED run.

    ``from_step="failed"`` resumes at the failed step (completed steps are not
    re-run); ``"start"`` drops every checkpoint. ``args`` / ``kwargs`` replace
    the stored arguments. Returns the run's AsyncResult (same id).
    """
    if from_step not in ("failed", "start"):
        raise ValueError("from_step must be 'failed' or 'start'")
    app = app_or_current(app)
    settings = settings_for(app)
    serializer = get_serializer(settings.serializer)
    max_bytes = settings.max_checkpoint_bytes
    args_text = None if args is None else encode(serializer, list(args), max_bytes=max_bytes,
                                                 what="arguments", run_id=run_id)
    kwargs_text = None if kwargs is None else encode(serializer, dict(kwargs),
                                                     max_bytes=max_bytes,
                                                     what="keyword arguments", run_id=run_id)
    run = get_store(app).reset_run(run_id, from_start=from_step == "start", args=args_text,
                                   kwargs=kwargs_text, grace=float(settings.requeue_grace))
    if run is None:
        raise RunNotFoundError(f"no durable run {run_id!r}", run_id=run_id)
    app.backend.forget(run_id)  # drop the FAILURE so AsyncResult.get() waits again
    return publish_run(app, run)
