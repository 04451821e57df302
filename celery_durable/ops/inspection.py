"""Inspecting runs: ``get_run`` and ``list_runs``, as an operator should see them.

A run's steps are shown as what they are: a durable wait that has not ended
is ``sleeping`` or ``waiting`` (with its wake time or awaited event), never a
success; every failed attempt of a step is listed with its error, from the
run's history (:class:`~celery_durable.stores.base.RunHistory`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from ..config import app_or_current, settings_for
from ..errors import RunNotFoundError, SerializationError
from ..records import (
    ErrorInfo,
    HistoryEntry,
    RetryInfo,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    WaitInfo,
)
from ..serialization import Serializer, decode, get_serializer
from ..stores import get_store
from ..stores.base import CheckpointStore, RunHistory, run_history_of

#: Step names of durable waits (controls/waits.py, controls/children.py): their
#: checkpoint holds the wait's state, ``{"kind": ..., "outcome": ...}`` once it ended.
_WAIT_KINDS = {"sleep": StepStatus.SLEEPING, "event": StepStatus.WAITING,
               "children": StepStatus.WAITING}


@dataclass(frozen=True)
class WaitState:
    """A durable wait step, read: what it waits for and how it ended.

    ``kind`` is ``sleep``, ``event`` or ``children``. ``until`` is the wake
    time of a sleep or the timeout of an event wait (store clock; None: no
    timeout). ``outcome`` is None while it waits, else ``elapsed`` (a sleep
    that ran out), ``woken`` (ended early by ``wake_run``), ``event`` (got
    ``payload``), ``timeout``, or ``done`` (every child run finished).
    """

    kind: str
    until: float | None = None
    event: str | None = None
    key: str | None = None
    outcome: str | None = None
    payload: Any = None
    #: The child runs of a ``children`` wait.
    children: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """True while the wait has not ended."""
        return self.outcome is None


@dataclass(frozen=True)
class Attempt:
    """One attempt of a step that failed (from the run's history)."""

    number: int
    status: StepStatus
    error: ErrorInfo | None
    started_at: float | None
    finished_at: float | None
    #: Seconds chosen before the next attempt (a RETRYING attempt), and the step's limit.
    retry_delay: float | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class StepInfo:
    """One step of a run, decoded: key, status, attempts, value or error, timestamps.

    ``status`` is ``sleeping``/``waiting`` for a wait that has not ended (see
    ``wait``); ``failures`` lists the failed attempts before this record (with
    ``get_run``, from the run's history).
    """

    position: int
    key: str
    name: str
    status: StepStatus
    attempts: int
    value: Any
    error: ErrorInfo | None
    started_at: float | None
    finished_at: float | None
    max_attempts: int | None = None
    wait: WaitState | None = None
    failures: list[Attempt] = field(default_factory=list)
    #: A transactional step (``atomic=True``): its writes committed with its checkpoint.
    atomic: bool = False


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
    tags: list[str] = field(default_factory=list)
    version: str | None = None
    #: What the run reported with ``set_metadata``.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Step retries over the run's life, and the retry it waits for (while RETRYING).
    retries: int = 0
    retrying: RetryInfo | None = None
    #: When a RETRYING run tries again (the store's clock).
    next_retry_at: float | None = None
    #: The run this one replays, and the runs that replay it.
    replay_of: str | None = None
    replayed_as: list[str] = field(default_factory=list)
    #: Everything that happened beyond the checkpoints (``get_run`` only): failed
    #: attempts, recoveries from lost workers, retries, cancels and wakes, oldest first.
    history: list[HistoryEntry] = field(default_factory=list)


class _Decoder:
    """Decodes a run's stored values; one that cannot be read is named in ``damage``."""

    def __init__(self, run: RunRecord, serializer: Serializer) -> None:
        self.run, self.serializer = run, serializer
        self.damage = list(run.damage)

    def __call__(self, text: str | None, what: str) -> Any:
        if text is None:
            return None
        try:
            return decode(self.serializer, text, what=what, run_id=self.run.id)
        except SerializationError as exc:
            self.damage.append(f"{what} ({exc})")
            return None


def wait_state(value: Any) -> WaitState | None:
    """The wait a succeeded checkpoint's decoded ``value`` holds, or None for an ordinary step."""
    if not isinstance(value, dict) or value.get("kind") not in _WAIT_KINDS:
        return None
    until = value.get("until")
    outcome = value.get("outcome")
    if value["kind"] == "children" and outcome is not None:
        outcome = "done"
    return WaitState(kind=value["kind"], until=float(until) if until is not None else None,
                     event=value.get("event"), key=value.get("key"), outcome=outcome,
                     payload=value.get("payload"), children=list(value.get("ids") or []))


def _step(record: StepRecord, value: Any, failures: list[Attempt]) -> StepInfo:
    wait = wait_state(value) if record.status is StepStatus.SUCCEEDED else None
    status = record.status
    if wait is not None and wait.pending:
        status = _WAIT_KINDS[wait.kind]
    return StepInfo(record.position, record.key, record.name, status, record.attempts, value,
                    record.error, record.started_at, record.finished_at, record.max_attempts,
                    wait, failures, record.atomic)


def _failures(history: list[HistoryEntry], record: StepRecord) -> list[Attempt]:
    """The failed attempts of the step at ``record``'s position before ``record`` itself."""
    out = []
    for entry in history:
        step = entry.step
        if (entry.kind != "attempt" or step is None or step.position != record.position
                or step.key != record.key):
            continue
        if step.attempts == record.attempts and record.status is not StepStatus.SUCCEEDED:
            continue  # that attempt is the checkpoint itself
        out.append(Attempt(step.attempts, step.status, step.error, step.started_at,
                           step.finished_at, step.retry_delay, step.max_attempts))
    return out


def _info(app: Celery, run: RunRecord, history: list[HistoryEntry] | None = None) -> RunInfo:
    value = _Decoder(run, get_serializer(settings_for(app).serializer))
    steps = [_step(s, value(s.value, f"value of step {s.key}"), _failures(history or [], s))
             for s in run.steps]
    return RunInfo(
        id=run.id, task=run.task, status=run.status, args=value(run.args, "arguments"),
        kwargs=value(run.kwargs, "keyword arguments"), result=value(run.result, "result"),
        error=run.error, failed_step=run.failed_step, recoveries=run.recoveries,
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
        updated_at=run.updated_at, idempotency_key=run.idempotency_key, steps=steps,
        wait=run.wait, parent=run.parent, damage=value.damage, tags=list(run.tags),
        version=run.version, metadata=dict(run.metadata), retries=run.retries,
        retrying=run.retrying if run.status is RunStatus.RETRYING else None,
        next_retry_at=run.not_before if run.status is RunStatus.RETRYING else None,
        replay_of=run.replay_of, replayed_as=list(run.replayed_as), history=history or [])


def get_run(run_id: str, *, app: Celery | None = None) -> RunInfo:
    """The run ``run_id`` with its steps; RunNotFoundError if the store has none."""
    app = app_or_current(app)
    store = get_store(app)
    run = store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"no durable run {run_id!r}", run_id=run_id)
    history = run_history_of(store).history(run_id) if store.supports(RunHistory) else []
    return _info(app, run, history)


def list_runs(*, status: RunStatus | str | Iterable[RunStatus | str] | None = None,
              task: str | None = None, tag: str | None = None, version: str | None = None,
              limit: int = 100, app: Celery | None = None) -> list[RunInfo]:
    """Runs, newest first, optionally filtered by status (one, or several:
    ``status=["RUNNING", "WAITING"]``), task name, tag and code version (steps and
    history not loaded)."""
    app = app_or_current(app)
    return [_info(app, r) for r in select_runs(get_store(app), statuses(status), task=task,
                                                  tag=tag, version=version, limit=limit)]


def statuses(status: RunStatus | str | Iterable[RunStatus | str] | None) -> list[RunStatus]:
    """``status`` as a list of states (empty: any); ``"RUNNING,WAITING"`` names two.
    ValueError names an unknown state."""
    if status is None:
        return []
    given = (status.split(",") if isinstance(status, str) and not isinstance(status, RunStatus)
             else [status] if isinstance(status, RunStatus) else list(status))
    wanted: list[RunStatus] = []
    for one in given:
        name = one.value if isinstance(one, RunStatus) else str(one).strip().upper()
        try:
            state = RunStatus(name)
        except ValueError:
            raise ValueError(f"unknown run status {one!r}; one of "
                             f"{', '.join(s.value for s in RunStatus)}") from None
        if state not in wanted:
            wanted.append(state)
    return wanted


def select_runs(store: CheckpointStore, wanted: Sequence[RunStatus], *, task: str | None,
                tag: str | None, version: str | None, limit: int) -> list[RunRecord]:
    """The store's runs in any of the ``wanted`` states (any state when empty), newest first."""
    if len(wanted) <= 1:
        return store.list_runs(status=wanted[0] if wanted else None, task=task, tag=tag,
                               version=version, limit=limit)
    found = [run for state in wanted for run in store.list_runs(
        status=state, task=task, tag=tag, version=version, limit=limit)]
    found.sort(key=lambda run: (run.created_at or 0.0, run.id), reverse=True)
    return found[:limit]
