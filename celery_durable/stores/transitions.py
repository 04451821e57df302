"""The decisions a store makes over one run's control fields, written once.

Each function looks at a :class:`Control` (the few fields of a run that
decide) and returns what to do and the fields to change; it writes nothing.
The memory and Django stores call these inside their lock or transaction and
apply the changes to their own rows. The Redis store cannot call Python
between its read and its write, so its Lua scripts (``redis/lua/begin.lua``,
``claim_due.lua``, ``reset.lua``) make the same decisions on the server; the
contract tests (``tests/stores/test_transitions.py``) hold every store to
one table of cases.

A change set maps :class:`~celery_durable.records.RunRecord` field names to
new values: times are store-clock seconds, ``status`` a
:class:`~celery_durable.records.RunStatus`, ``error`` an
:class:`~celery_durable.records.ErrorInfo`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRunStateError
from ..records import (
    BeginOutcome,
    ClaimAction,
    ErrorInfo,
    HistoryEntry,
    RunStatus,
    StepStatus,
)

Changes = dict[str, Any]

WORKER_LOST = "celery_durable.errors.WorkerLostError"
#: The states ``retry_run`` may re-trigger.
RESETTABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass(frozen=True)
class Control:
    """The fields of a run that every decision reads."""

    status: RunStatus
    owner: str = ""
    lease_expires: float | None = None
    not_before: float | None = None
    due_at: float | None = None
    recoveries: int = 0
    token: int = 0
    started: bool = False

    def leased(self, now: float) -> bool:
        """True while a holder's lease is live."""
        return bool(self.owner) and self.lease_expires is not None and self.lease_expires > now


def _worker_lost(control: Control, recoveries: int, max_recoveries: int,
                 now: float) -> Changes:
    """FAILED with a WorkerLostError: the run lost its worker too often."""
    return {"recoveries": recoveries, "token": control.token + 1, "status": RunStatus.FAILED,
            "owner": "", "lease_expires": None, "due_at": None, "not_before": None,
            "finished_at": now, "updated_at": now,
            "error": ErrorInfo(WORKER_LOST, f"worker lost {recoveries} times "
                                            f"(durable_max_recoveries={max_recoveries})")}


def begin(control: Control, *, now: float, owner: str, lease_ttl: float,
          max_recoveries: int, steal_from: str | None) -> tuple[BeginOutcome, Changes]:
    """May a delivery by ``owner`` take the run? (See ``CheckpointStore.begin``.)

    Taking over a RUNNING run (its holder died) counts a recovery; past
    ``max_recoveries`` the run is dead-lettered instead.
    """
    if control.status.finished:
        return "finished", {}
    if control.not_before is not None and control.not_before > now:
        return "early", {}
    if control.leased(now) and control.owner != steal_from:
        return "busy", {}
    recoveries = control.recoveries
    if control.status is RunStatus.RUNNING:
        recoveries += 1
        if recoveries > max_recoveries:
            return "dead", _worker_lost(control, recoveries, max_recoveries, now)
    changes: Changes = {"recoveries": recoveries, "token": control.token + 1, "owner": owner,
                        "lease_expires": now + lease_ttl, "status": RunStatus.RUNNING,
                        "not_before": None, "due_at": now + lease_ttl, "updated_at": now}
    if not control.started:
        changes["started_at"] = now
    return "acquired", changes


def claim_due(control: Control | None, *, now: float, grace: float,
              max_recoveries: int) -> tuple[ClaimAction, Changes]:
    """What the sweeper does with a run it found due. (See ``CheckpointStore.claim_due``.)

    ``later`` carries the run's next due time in ``changes["due_at"]`` (None:
    not due at all).
    """
    if control is None or control.status.finished:
        return "gone", {}
    if control.due_at is None or control.due_at > now:
        return "later", {"due_at": control.due_at}
    status = control.status
    changes: Changes = {}
    if status is RunStatus.RUNNING:
        if control.leased(now):
            return "later", {"due_at": control.lease_expires}
        recoveries = control.recoveries + 1
        if recoveries > max_recoveries:
            return "dead", _worker_lost(control, recoveries, max_recoveries, now)
        changes = {"recoveries": recoveries, "token": control.token + 1, "owner": "",
                   "lease_expires": None}
        status = RunStatus.PENDING
    elif status in (RunStatus.SLEEPING, RunStatus.WAITING):
        status = RunStatus.PENDING
    changes.update(status=status, due_at=now + grace, not_before=None, updated_at=now)
    return "publish", changes


def reset(run_id: str, control: Control, *, now: float, grace: float,
          args: str | None = None, kwargs: str | None = None,
          version: str | None = None) -> Changes:
    """Make a FAILED or CANCELLED run PENDING again. (See ``CheckpointStore.reset_run``.)

    Raises :class:`~celery_durable.errors.InvalidRunStateError` for any other
    state. Which checkpoints survive is :func:`keeps_step`.
    """
    if control.status not in RESETTABLE:
        raise InvalidRunStateError(f"run {run_id} is {control.status}, not failed or "
                                   "cancelled", run_id=run_id)
    changes: Changes = {"status": RunStatus.PENDING, "error": None, "failed_step": None,
                        "result": None, "recoveries": 0, "finished_at": None,
                        "not_before": None, "owner": "", "lease_expires": None,
                        "token": control.token + 1, "updated_at": now, "due_at": now + grace}
    if args is not None:
        changes["args"] = args
    if kwargs is not None:
        changes["kwargs"] = kwargs
    if version is not None:
        changes["version"] = version
    return changes


def recovery(control: Control, changes: Changes, *, now: float,
             by: str) -> HistoryEntry | None:
    """The history entry for a decision that counted a recovery (else None).

    ``by`` says who noticed: ``"sweeper"`` (:func:`claim_due`) or ``"delivery"``
    (:func:`begin`).
    """
    if int(changes.get("recoveries", control.recoveries)) <= control.recoveries:
        return None
    worker = control.owner or "(unknown)"
    if changes.get("status") is RunStatus.FAILED:
        then = f"dead-lettered after {changes['recoveries']} recoveries"
    elif by == "sweeper":
        then = "the sweeper sent the run again"
    else:
        then = "a new delivery took the run over"
    return HistoryEntry("recovery", now, detail=f"worker {worker} lost (its lease "
                                                f"expired); {then}")


def reset_note(*, from_start: bool, new_args: bool = False, version: str | None = None) -> str:
    """The history text of a ``reset_run``."""
    note = ("retried from the start (every checkpoint dropped)" if from_start
            else "retried from the failed step (completed steps kept)")
    return (note + (", with new arguments" if new_args else "")
            + (f", under code version {version}" if version is not None else ""))


def wake_note(status: RunStatus) -> str:
    """The history text of a ``wake`` of a run parked in ``status``."""
    if status is RunStatus.WAITING:
        return "the wait was timed out now (woken by an operator or wake_run)"
    return "the sleep was ended now (woken by an operator or wake_run)"


CANCEL_NOTE = "cancelled"


def unreadable(token: int, field: str, value: object, *, now: float) -> Changes:
    """FAILED, naming ``field``: a run whose control field cannot be read goes no further
    (and a sweep or a delivery loop over it does not stop at it). The token moves on."""
    return {"token": token + 1, "status": RunStatus.FAILED, "owner": "", "lease_expires": None,
            "due_at": None, "not_before": None, "finished_at": now, "updated_at": now,
            "error": ErrorInfo("CorruptCheckpointError",
                               f"the stored field {field} of this run cannot be read "
                               f"({str(value)[:80]}); the run is dead-lettered: fix or drop "
                               "the field, then retry it")}


def keeps_step(status: StepStatus, *, from_start: bool) -> bool:
    """Whether a checkpoint survives a reset: only successes, and only from the failed step."""
    return not from_start and status is StepStatus.SUCCEEDED


def merged_options(stored: Mapping[str, Any],
                   delivered: Mapping[str, Any]) -> dict[str, Any] | None:
    """What ``begin`` stores when a run's options lack what this delivery brings, else None.

    A run created before its first message (``apply_async``, a trigger, a
    child) may hold only its routing, or nothing: the first delivery fills
    them in, and adds the trace header (``headers``) if the run has none yet.
    """
    if not stored:
        return dict(delivered) if delivered else None
    if "headers" in delivered and isinstance(stored, Mapping) and "headers" not in stored:
        return {**stored, "headers": delivered["headers"]}
    return None
