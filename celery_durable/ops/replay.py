"""Replaying a run into a new run, and retrying a finished one in place.

A replay never rewrites the record an operator is looking at: it starts a
**new run** (a new id, or the one an idempotency key names) of the same task
with the arguments given (the original's when none are), linked both ways
(``replay_of`` on the new run, ``replayed_as`` on the original). It starts
from scratch, or from a step the operator names: then the completed steps
*before* that step keep their recorded values (:func:`kept_steps` lists them,
so a caller can show exactly which before it confirms). The arguments are bound
to the task's signature before anything is written.

:func:`retry_run` without new arguments resumes the same run in place (a dead
letter retried at its failed step); with new arguments it is a replay.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.result import AsyncResult
from celery.utils import uuid

from ..arguments import misfit
from ..config import app_or_current, settings_for
from ..engine.labels import code_version
from ..engine.publish import ROUTING, publish_run
from ..errors import RunNotFoundError
from ..records import NewRun, RunRecord, StepRecord, StepStatus
from ..serialization import decode, encode, get_serializer
from ..stores import get_store
from ..stores.base import RunHistory, idempotency_keys_of, run_history_of
from .history_replay import check_current_code

#: ``from_step`` values that are not a step key.
FROM_START, FROM_FAILED = "start", "failed"


def _original(app: Celery, run_id: str) -> RunRecord:
    run = get_store(app).get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"no durable run {run_id!r}", run_id=run_id)
    return run


def check_arguments(app: Celery, task_name: str, args: list[Any],
                    kwargs: dict[str, Any]) -> None:
    """TypeError (naming the task and the problem) unless ``args``/``kwargs`` fit the task.

    The task must be registered in ``app`` (a replay runs today's code).
    """
    task = app.tasks.get(task_name)
    if task is None:
        raise TypeError(f"task {task_name!r} is not registered in this app; cannot check "
                        "or start a replay of it")
    why = misfit(task, args, kwargs)
    if why is not None:
        raise TypeError(why)


def kept_steps(run: RunRecord, from_step: str) -> list[StepRecord]:
    """The completed steps of ``run`` a replay from ``from_step`` keeps, by position.

    ``"start"`` keeps none; ``"failed"`` keeps the successes before the failed
    step (all of them if none failed); a step key (``"charge#0"``) keeps the
    successes before that step. ValueError for a key the run does not have.
    """
    if from_step == FROM_START:
        return []
    steps = sorted(run.steps, key=lambda s: s.position)
    if from_step == FROM_FAILED:
        cut_key = run.failed_step
    else:
        cut_key = from_step
        if not any(s.key == from_step for s in steps):
            known = ", ".join(s.key for s in steps) or "none"
            raise ValueError(f"run {run.id} has no step {from_step!r} (its steps: {known})")
    cut = next((s.position for s in steps if s.key == cut_key), None)
    return [s for s in steps if s.status is StepStatus.SUCCEEDED
            and (cut is None or s.position < cut)]


def replay_run(run_id: str, *, args: list[Any] | None = None,
               kwargs: dict[str, Any] | None = None, from_step: str = FROM_START,
               idempotency_key: str | None = None, app: Celery | None = None) -> AsyncResult:
    """Start a new run replaying ``run_id`` (see the module's docstring); its AsyncResult.

    ``args``/``kwargs`` default to the original's. ``from_step`` is ``"start"``,
    ``"failed"`` or a step key. With ``idempotency_key``, a second replay under
    the same key returns the first replay's result instead of starting another.
    """
    app = app_or_current(app)
    settings = settings_for(app)
    serializer = get_serializer(settings.serializer)
    store = get_store(app)
    original = _original(app, run_id)
    if args is None:
        args = list(decode(serializer, original.args, what="arguments", run_id=run_id))
    if kwargs is None:
        kwargs = dict(decode(serializer, original.kwargs, what="keyword arguments",
                             run_id=run_id))
    check_arguments(app, original.task, args, kwargs)
    keep = kept_steps(original, from_step)
    new_id = uuid()
    if idempotency_key is not None:
        bound = idempotency_keys_of(store).claim_idempotency_key(
            original.task, str(idempotency_key), new_id,
            ttl=float(settings.idempotency_ttl))
        if bound != new_id:
            return AsyncResult(bound, app=app)
    max_bytes = settings.max_checkpoint_bytes
    routing = {k: v for k, v in original.options.items() if k in ROUTING and v is not None}
    new = NewRun(id=new_id, task=original.task, options=routing,
                 idempotency_key=idempotency_key, tags=list(original.tags),
                 version=original.version, replay_of=original.id,
                 steps=[StepRecord(position=s.position, key=s.key, name=s.name,
                                   status=s.status, attempts=s.attempts, value=s.value,
                                   started_at=s.started_at, finished_at=s.finished_at)
                        for s in keep],
                 args=encode(serializer, list(args), max_bytes=max_bytes,
                             what="replay arguments", run_id=new_id),
                 kwargs=encode(serializer, dict(kwargs), max_bytes=max_bytes,
                               what="replay keyword arguments", run_id=new_id))
    store.create_runs([new], grace=float(settings.requeue_grace))
    if store.supports(RunHistory):
        run_history_of(store).link_replay(original.id, new_id)
    created = store.get_run(new_id)
    assert created is not None  # just created; a purge this fast is the sweeper's to repair
    return publish_run(app, created)


def retry_run(run_id: str, *, from_step: str | None = None, args: list[Any] | None = None,
              kwargs: dict[str, Any] | None = None, app: Celery | None = None) -> AsyncResult:
    """Re-trigger a FAILED (dead-lettered) or CANCELLED run.

    Without ``args``/``kwargs`` the run resumes **in place** (same id):
    ``from_step="failed"`` (the default) at the failed step, completed steps
    not re-run; ``"start"`` drops every checkpoint. With ``args`` or
    ``kwargs`` it is a :func:`replay_run` instead, a new run with those
    arguments, from ``"start"`` unless ``from_step`` says otherwise (an
    explicit ``"failed"`` keeps the completed steps' recorded values, computed
    from the old arguments). Returns the AsyncResult of the run that goes on.
    """
    if args is not None or kwargs is not None:
        return replay_run(run_id, args=args, kwargs=kwargs,
                          from_step=from_step or FROM_START, app=app)
    from_step = from_step or FROM_FAILED
    if from_step not in (FROM_FAILED, FROM_START):
        raise ValueError("from_step must be 'failed' or 'start'")
    app = app_or_current(app)
    settings = settings_for(app)
    run = get_store(app).reset_run(run_id, from_start=from_step == FROM_START,
                                   grace=float(settings.requeue_grace))
    if run is None:
        raise RunNotFoundError(f"no durable run {run_id!r}", run_id=run_id)
    app.backend.forget(run_id)  # drop the FAILURE so AsyncResult.get() waits again
    return publish_run(app, run)


def retry_with_current_code(run_id: str, *, app: Celery | None = None) -> AsyncResult:
    """Retry a FAILED or CANCELLED run from its failed position under this process's code.

    For a run dead-lettered by ``NonDeterministicStepError`` once the code is
    patched (``patched()``): the current code is replayed against the run's
    history first (nothing is called or written), and a divergence raises
    ``NonDeterministicStepError`` with both sequences, changing nothing. Then
    the run resumes in place, completed steps kept, recording the current code
    version (so ``durable_pin_version`` sends it to the current version's workers).
    """
    app = app_or_current(app)
    checked = check_current_code(run_id, app=app)
    run = get_store(app).reset_run(run_id, from_start=False,
                                   grace=float(settings_for(app).requeue_grace),
                                   version=code_version(app.tasks[checked.task]))
    if run is None:
        raise RunNotFoundError(f"no durable run {run_id!r}", run_id=run_id)
    app.backend.forget(run_id)
    return publish_run(app, run)


__all__ = ["check_arguments", "kept_steps", "replay_run", "retry_run",
           "retry_with_current_code"]
