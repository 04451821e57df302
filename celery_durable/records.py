"""Plain records exchanged between the engine and a store."""

from __future__ import annotations

import abc
import enum
import json
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import CorruptCheckpointError
from .redact import redact_text

#: What a delivery found when it tried to start a run (:class:`Begin`).
BeginOutcome = Literal["acquired", "busy", "finished", "early", "dead"]
#: What the sweeper does with a due run (:class:`Claim`).
ClaimAction = Literal["publish", "dead", "later", "gone"]


def begin_outcome(value: str) -> BeginOutcome:
    """``value`` as a :data:`BeginOutcome` (a store's reply); ValueError for anything else."""
    if value not in get_args(BeginOutcome):
        raise ValueError(f"not a begin outcome: {value!r}")
    return value  # type: ignore[return-value]


def claim_action(value: str) -> ClaimAction:
    """``value`` as a :data:`ClaimAction` (a store's reply); ValueError for anything else."""
    if value not in get_args(ClaimAction):
        raise ValueError(f"not a claim action: {value!r}")
    return value  # type: ignore[return-value]


class RunStatus(str, enum.Enum):
    """Where a run is in its life: ``PENDING → RUNNING → … → SUCCEEDED | FAILED | CANCELLED``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SLEEPING = "SLEEPING"
    WAITING = "WAITING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    #: The body called ``self.replace()``: its replacement runs under the same task id.
    REPLACED = "REPLACED"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for the final states."""
        return self in FINISHED


FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED,
                      RunStatus.REPLACED})


class StepStatus(str, enum.Enum):
    """Outcome recorded for one step.

    ``SLEEPING`` and ``WAITING`` are never stored: ``get_run`` shows a durable
    wait that has not ended with them (its checkpoint holds the wake time, not
    an outcome).
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    SLEEPING = "sleeping"
    WAITING = "waiting"

    def __str__(self) -> str:
        return self.value


#: ``StepStatus`` by stored value: a dict lookup, cheaper than ``StepStatus(value)`` for
#: the one record per checkpoint that loading a run builds.
STEP_STATUS_BY_VALUE = {status.value: status for status in StepStatus}


def describe_error(exc: BaseException) -> str:
    """``str(exc)``, or what can be said of an exception whose ``__str__`` fails."""
    try:
        return str(exc)
    except Exception as broken:
        return (f"<{type(exc).__name__} with an unprintable message: "
                f"{type(broken).__name__} in its __str__>")


@dataclass
class ErrorInfo:
    """An exception as stored: its qualified type, message and traceback."""

    type: str
    message: str
    traceback: str = ""
    #: The last log lines of the failed step (``durable_step_log_lines``).
    logs: list[str] = field(default_factory=list)

    @classmethod
    def from_exception(cls, exc: BaseException, traceback: str = "") -> ErrorInfo:
        """Describe ``exc`` (an exception whose ``__str__`` raises is described, not raised)."""
        return cls(f"{type(exc).__module__}.{type(exc).__qualname__}", describe_error(exc),
                   traceback)

    def redacted(self, names: frozenset[str]) -> ErrorInfo:
        """A copy with the values of ``durable_redact`` fields masked (message, traceback, logs)."""
        if not names:
            return self
        return ErrorInfo(self.type, redact_text(self.message, names),
                         redact_text(self.traceback, names),
                         [redact_text(line, names) for line in self.logs])


@dataclass
class StepRecord:
    """The checkpoint of one step call at one position of a run."""

    position: int
    key: str
    name: str
    status: StepStatus
    attempts: int = 1
    value: str | None = None          # serialized value (status SUCCEEDED)
    error: ErrorInfo | None = None    # last error (status FAILED or RETRYING)
    started_at: float | None = None
    finished_at: float | None = None
    #: The step's ``max_attempts`` when it failed (None: not recorded, or no limit).
    max_attempts: int | None = None
    #: Seconds the step waits before its next attempt (status RETRYING).
    retry_delay: float | None = None
    #: A transactional step (``atomic=True``): its database writes committed with this record.
    atomic: bool = False

    def to_meta(self) -> dict[str, Any]:
        """Everything but the value, as a JSON-ready dict."""
        meta: dict[str, Any] = {"k": self.key, "n": self.name, "s": self.status.value,
                                "a": self.attempts, "t0": self.started_at,
                                "t1": self.finished_at}
        if self.error is not None:
            meta["e"] = [self.error.type, self.error.message, self.error.traceback]
            if self.error.logs:
                meta["e"].append(self.error.logs)
        if self.max_attempts is not None:
            meta["m"] = self.max_attempts
        if self.retry_delay is not None:
            meta["d"] = self.retry_delay
        if self.atomic:
            meta["x"] = 1
        return meta

    @classmethod
    def from_meta(cls, position: int, meta: dict[str, Any], value: str | None) -> StepRecord:
        """Rebuild a record from :meth:`to_meta` output and the stored value."""
        err = meta.get("e")
        # Positional: replay rebuilds one record per checkpoint (3x cheaper than keywords).
        return cls(position, meta["k"], meta["n"], STEP_STATUS_BY_VALUE[meta["s"]],
                   int(meta.get("a", 1)), value, ErrorInfo(*err) if err else None,
                   meta.get("t0"), meta.get("t1"), meta.get("m"), meta.get("d"),
                   bool(meta.get("x")))


def succeeded_value(checkpoints: Mapping[int, StepRecord], position: int,
                    key: str) -> str | None:
    """The stored value of a success of step ``key`` at ``position``; None for anything else.

    The replay shortcut over a plain mapping of records;
    :class:`OnDemandCheckpoints` answer it without building one. None (no
    checkpoint, another step, a failure) sends the caller to the record
    itself, which decides what to do.
    """
    record = checkpoints.get(position)
    if record is not None and record.key == key and record.status is StepStatus.SUCCEEDED:
        return record.value or "null"
    return None


class OnDemandCheckpoints(MutableMapping[int, StepRecord]):
    """Checkpoints by position that build a record only when one is asked for.

    What a store that loads lazily hands over as ``Begin.checkpoints``. A
    record built (or set) here takes precedence over the stored one.
    Subclasses implement :meth:`_build` and :meth:`_stored_success` over what
    they loaded, and the rest of the mapping; a stored record that cannot be
    read raises :class:`~celery_durable.errors.CorruptCheckpointError` naming
    the run and the position when it is first asked for.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._built: dict[int, StepRecord] = {}

    @abc.abstractmethod
    def _build(self, position: int) -> StepRecord | None:
        """Build the stored record at ``position`` into ``_built``; None if none is stored."""

    @abc.abstractmethod
    def _stored_success(self, position: int, key: str) -> str | None:
        """:meth:`succeeded_value` for a position not built yet, from what was loaded."""

    def get(self, position: int, default: Any = None) -> Any:
        """The record at ``position`` (built now if it was not yet), else ``default``."""
        record = self._built.get(position)
        if record is None:
            record = self._build(position)
        return default if record is None else record

    def succeeded_value(self, position: int, key: str) -> str | None:
        """The stored value of a success of step ``key`` at ``position`` (``"null"`` for an
        empty one); None for anything else, as :func:`succeeded_value` answers."""
        if position in self._built:
            return succeeded_value(self._built, position, key)
        return self._stored_success(position, key)

    def _corrupt(self, position: int, exc: Exception) -> Exception:
        """The error for the unreadable stored record at ``position``."""
        return CorruptCheckpointError(
            f"run {self.run_id}: the checkpoint at position {position} is corrupt and "
            f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})", run_id=self.run_id)

    def __getitem__(self, position: int) -> StepRecord:
        record: StepRecord | None = self.get(position)
        if record is None:
            raise KeyError(position)
        return record


@dataclass
class WaitInfo:
    """The durable wait a run is parked at (or was last parked at).

    The admin shows it for SLEEPING and WAITING runs: ``kind`` is ``sleep``
    or ``event``; ``until`` is the wake time of a sleep or the timeout of an
    event wait (None: no timeout); ``event`` and ``key`` name the awaited
    event. ``step`` and ``position`` locate the wait's checkpoint; ``wait_id``
    tells one wait from the next (the fencing token that created it);
    ``after`` is the sequence number of the last event this run received on
    the same name and key (only newer events are delivered). ``resolution``
    is written once, first write wins, by ``send_event`` or ``wake_run``
    (JSON: ``{"how": "event", "id", "seq", "payload"}`` or ``{"how": "woken"}``).
    """

    kind: str
    step: str
    position: int
    wait_id: int
    until: float | None = None
    event: str | None = None
    key: str | None = None
    after: int = 0
    resolution: str | None = None


@dataclass
class EventRecord:
    """An event sent with ``send_event``: kept in its mailbox for the buffer window.

    ``seq`` orders the events of one name and key (microseconds of the
    store's clock, strictly increasing); ``payload`` is serialized text.
    """

    id: str
    name: str
    key: str
    payload: str
    seq: int
    sent_at: float


#: What a :class:`HistoryEntry` records.
HistoryKind = Literal["attempt", "recovery", "retry", "cancel", "wake"]


@dataclass
class HistoryEntry:
    """One event of a run's history, kept apart from its checkpoints (never loaded to resume).

    ``attempt``: a step attempt that failed (``step`` is its record: error,
    traceback, log lines, attempt number, the delay chosen when RETRYING); the
    attempt that succeeded is the checkpoint itself. ``recovery``: the run's
    worker was lost (its lease expired and the sweeper sent the run again, or
    a delivery took it over; ``detail`` names the worker). ``retry``,
    ``cancel``, ``wake``: what an operator (or the API) did. ``at`` is the
    store's clock.
    """

    kind: HistoryKind
    at: float
    step: StepRecord | None = None
    detail: str = ""

    def to_json(self) -> str:
        """The stored text of the entry."""
        data: dict[str, Any] = {"kind": self.kind, "at": self.at}
        if self.step is not None:
            data["pos"], data["step"] = self.step.position, self.step.to_meta()
        if self.detail:
            data["detail"] = self.detail
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> HistoryEntry:
        """Rebuild an entry from :meth:`to_json`; ValueError for anything else."""
        try:
            data = json.loads(text)
            kind = data["kind"]
            if kind not in get_args(HistoryKind):
                raise ValueError(f"unknown kind {kind!r}")
            step = (StepRecord.from_meta(int(data["pos"]), data["step"], None)
                    if "step" in data else None)
            return cls(kind, float(data["at"]), step, str(data.get("detail", "")))
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a history entry: {exc!r}") from exc

    @classmethod
    def attempt(cls, at: float, step: StepRecord) -> HistoryEntry:
        """The entry for a failed attempt (``step`` without its value)."""
        return cls("attempt", at, step)


def readable_history(run_id: str, stored: Iterable[tuple[Any, str | bytes]]) -> list[HistoryEntry]:
    """The entries of ``stored`` (``(where, text)`` pairs, oldest first) that can be read;
    one that cannot is skipped and logged, naming the run and ``where``."""
    out = []
    for where, text in stored:
        try:
            out.append(HistoryEntry.from_json(text))
        except ValueError as exc:
            logging.getLogger(__name__).warning(
                "run %s: history entry %s cannot be read (%s); skipped", run_id, where, exc)
    return out


def failed_attempt(step: StepRecord | None) -> bool:
    """Whether writing ``step`` also records a failed attempt in the run's history."""
    return step is not None and step.status in (StepStatus.FAILED, StepStatus.RETRYING)


@dataclass
class RetryInfo:
    """The step a RETRYING run waits to try again, and which attempt that will be."""

    step: str
    #: The attempt that failed (the next one is ``attempt + 1``).
    attempt: int
    max_attempts: int | None = None

    def to_json(self) -> str:
        """The stored text."""
        return json.dumps([self.step, self.attempt, self.max_attempts])

    @classmethod
    def from_json(cls, text: str) -> RetryInfo:
        """Rebuild from :meth:`to_json`; ValueError/TypeError for anything else."""
        step, attempt, most = json.loads(text)
        return cls(str(step), int(attempt), None if most is None else int(most))

    @classmethod
    def of(cls, step: StepRecord) -> RetryInfo:
        """The retry a RETRYING checkpoint ``step`` stands for."""
        return cls(step.key, step.attempts, step.max_attempts)


@dataclass
class RunRecord:
    """A durable run as stored. Arguments and result are serialized text."""

    id: str
    task: str
    status: RunStatus
    args: str = "[]"
    kwargs: str = "{}"
    options: dict[str, Any] = field(default_factory=dict)
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    token: int = 0
    owner: str = ""
    lease_expires: float | None = None
    not_before: float | None = None
    due_at: float | None = None
    recoveries: int = 0
    result: str | None = None
    error: ErrorInfo | None = None
    failed_step: str | None = None
    idempotency_key: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    #: The current (SLEEPING/WAITING) or most recent durable wait, if any.
    wait: WaitInfo | None = None
    #: The run that started this one with ``call``/``gather``/``map`` (None: a top-level run).
    parent: str | None = None
    #: How many times a child of this run reported that it finished (every notice counts,
    #: repeats included); see :meth:`~celery_durable.stores.base.CheckpointStore.notify_parent`.
    children_done: int = 0
    #: Stored fields (and checkpoints) that could not be read, each named with what is wrong;
    #: empty for a sound run. Such a run is listed and shown, never run on.
    damage: list[str] = field(default_factory=list)
    #: Labels given when the run was started (``apply_async(tags=...)``); filterable.
    tags: list[str] = field(default_factory=list)
    #: The code version the run started under (``durable_version``), if any.
    version: str | None = None
    #: What the run reported about itself (``set_metadata``): a JSON object.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: How many times a step of this run was retried, over its whole life.
    retries: int = 0
    #: The last retry scheduled (meaningful while RETRYING): step, attempt, max attempts.
    retrying: RetryInfo | None = None
    #: The run this one replays (``replay_run``), and the runs that replay this one.
    replay_of: str | None = None
    replayed_as: list[str] = field(default_factory=list)


@dataclass
class NewRun:
    """A run created before its first delivery (``apply_async``, a child run, a replay).

    ``args``/``kwargs`` are serialized text; ``options`` the routing of its
    message (filled in by the first delivery when empty). A replay carries the
    checkpoints it keeps from the run it replays in ``steps``.
    """

    id: str
    task: str
    args: str = "[]"
    kwargs: str = "{}"
    options: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    idempotency_key: str | None = None
    tags: list[str] = field(default_factory=list)
    version: str | None = None
    replay_of: str | None = None
    steps: list[StepRecord] = field(default_factory=list)


@dataclass
class Begin:
    """What a delivery found when it tried to start a run.

    ``outcome`` is ``acquired`` (this delivery holds the lease; ``token`` is
    its fencing token and ``checkpoints`` the run's checkpoints), ``busy`` (another
    live delivery holds it; ``run.owner`` says who), ``finished`` (nothing to
    do) or ``early`` (the run is parked until ``run.not_before``).
    """

    outcome: BeginOutcome
    run: RunRecord
    token: int = 0
    #: The checkpoints by position. Stores that load lazily (Redis, Django) fill this
    #: with :class:`OnDemandCheckpoints` and leave ``run.steps`` empty; for the others
    #: it is built from ``run.steps``.
    checkpoints: MutableMapping[int, StepRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.run.steps and not self.checkpoints:  # (never sizes a lazy mapping)
            self.checkpoints = {s.position: s for s in self.run.steps}

    @property
    def steps(self) -> list[StepRecord]:
        """The checkpoints in position order (decodes every one)."""
        return [self.checkpoints[p] for p in sorted(self.checkpoints)]


@dataclass
class Claim:
    """What the sweeper must do with a due run.

    ``action`` is ``publish`` (send the run's message again), ``dead``
    (recoveries exhausted, the run is now FAILED), ``later`` (not due;
    ``due_at`` says when) or ``gone`` (finished or deleted).
    """

    action: ClaimAction
    run: RunRecord | None = None
    due_at: float | None = None
