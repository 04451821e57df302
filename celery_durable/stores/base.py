"""The checkpoint store contract: everything the engine asks of a store.

A store keeps runs, their step checkpoints, their lease and their due time.
:class:`CheckpointStore` is what every store implements: a delivery, the
sweeper, ``apply_async``, ``get_run``/``list_runs``/``retry_run`` and
``cancel_run`` use nothing else. Features beyond that are *capabilities*, each
a class a store also inherits from to declare it: :class:`Waits`,
:class:`ChildRuns`, :class:`IdempotencyKeys`, :class:`ConcurrencySlots`,
:class:`Retention`, :class:`RunHistory`. The engine asks for it before it uses one
(:func:`waits_of`, …), so a
store without it fails with an error naming the store and the feature.

Rules every method keeps:

* **One round trip** on a networked store (a transaction, a Lua script, a pipeline).
* **The store's clock**: every time that decides (lease expiry, due and wake
  times, event buffers, key expiry) is read where the decision is made (Redis
  ``TIME`` inside the script, the database's clock, the process's clock for
  the in-process store), never passed in by a worker.
* **Fencing**: a write "under ``token``" happens only if the run's fencing
  token is still ``token`` and it has an owner; otherwise nothing is written
  and the method answers False (or ``"lost"``).
* **Serialized text**: arguments, results and checkpoint values are opaque
  strings (see :mod:`celery_durable.serialization`).

The decisions of :meth:`~CheckpointStore.begin`,
:meth:`~CheckpointStore.claim_due` and :meth:`~CheckpointStore.reset_run` are
written once in :mod:`celery_durable.stores.transitions`. Implementations:
:class:`~celery_durable.stores.memory.MemoryStore`,
:class:`~celery_durable.stores.redis.RedisStore`, and in the Django app
``celery_durable_django.store.DjangoStore``; each passes the contract tests
in ``tests/stores/`` (``test_contract.py`` for the core, one file per capability).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, cast, get_args

from ..records import (
    Begin,
    Claim,
    ErrorInfo,
    EventRecord,
    HistoryEntry,
    NewRun,
    RunRecord,
    RunStatus,
    StepRecord,
    WaitInfo,
)
from .tokens import TokenOutcome, WaitTokenRecord


class CheckpointStore(ABC):
    """Where durable runs and their checkpoints live: the methods every store implements."""

    # -- a delivery ------------------------------------------------------------------

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~celery_durable.errors.StoreUnavailableError` if unreachable."""

    @abstractmethod
    def begin(self, run_id: str, *, task: str, args: str, kwargs: str,
              options: Mapping[str, object], owner: str, lease_ttl: float,
              max_recoveries: int = 5, steal_from: str | None = None,
              tags: Sequence[str] = (), version: str | None = None) -> Begin:
        """Start a delivery of ``run_id``: decide (:func:`.transitions.begin`) and load the run.

        Creates the run (PENDING, with ``task``, ``args``, ``kwargs``,
        ``options``, ``tags``, ``version``) if it does not exist; fills in ``options`` by
        :func:`.transitions.merged_options`. When the outcome is ``acquired``
        the lease is now ``owner``'s under a new fencing token, and the run
        comes back with all its checkpoints: in ``run.steps``, or (a store that
        decodes them lazily) in ``Begin.checkpoints`` as an
        :class:`~celery_durable.records.OnDemandCheckpoints`.
        """

    @abstractmethod
    def save_step(self, run_id: str, token: int, step: StepRecord) -> bool:
        """Write one checkpoint under ``token`` (the hot path: one write, nothing else).

        A store with :class:`RunHistory` also appends a FAILED ``step`` to the
        run's history, in the same write.
        """

    def save_steps(self, run_id: str, token: int, steps: Sequence[StepRecord]) -> list[bool]:
        """Write several successful checkpoints of ``run_id`` under ``token`` (async steps
        that finished together); whether each was written, as :meth:`save_step` says. A
        store may send them in one round trip (Redis); this default writes one by one."""
        return [self.save_step(run_id, token, step) for step in steps]

    @abstractmethod
    def park(self, run_id: str, token: int, *, status: RunStatus, delay: float,
             due_in: float, step: StepRecord | None = None, args: str | None = None,
             kwargs: str | None = None,
             options: Mapping[str, object] | None = None) -> bool:
        """Under ``token``: write ``step`` if given, set ``status``, release the lease.

        The run may not start again for ``delay`` seconds (its ``not_before``);
        the sweeper looks at it after ``due_in`` seconds (its ``due_at``).
        ``args``, ``kwargs`` and ``options`` replace the stored ones when given
        (``self.retry(args=...)``: the next delivery runs with them).

        A RETRYING ``step`` counts a retry (``retries`` + 1) and becomes the run's
        ``retrying`` (:meth:`RetryInfo.of <celery_durable.records.RetryInfo.of>`);
        a store with :class:`RunHistory` appends it to the history too.
        """

    @abstractmethod
    def finish(self, run_id: str, token: int, *, status: RunStatus,
               result: str | None = None, error: ErrorInfo | None = None,
               failed_step: str | None = None, retention: float = 0) -> bool:
        """Under ``token``: record the final state, release the lease, not due any more.

        A SUCCEEDED or CANCELLED run is deleted ``retention`` seconds later
        (0 keeps it); a FAILED run (a dead letter) is kept until retried or purged.
        """

    @abstractmethod
    def renew(self, leases: Mapping[str, int], lease_ttl: float) -> set[str]:
        """Extend every lease ``{run_id: token}`` (and its due time); return the ids lost."""

    # -- the sweeper -----------------------------------------------------------------

    @abstractmethod
    def due_runs(self, limit: int = 100) -> list[str]:
        """Ids of runs whose due time has passed (expired lease, timer, lost message)."""

    @abstractmethod
    def claim_due(self, run_id: str, *, grace: float, max_recoveries: int) -> Claim:
        """Decide atomically what the sweeper does with a due run (:func:`.transitions.claim_due`).

        Atomic, so two sweepers never both act. ``publish`` and ``dead``
        return the run; ``later`` its next due time.
        """

    # -- starting, inspecting and re-triggering runs ------------------------------------

    @abstractmethod
    def create_runs(self, runs: Sequence[NewRun], *, grace: float,
                    replace_finished: bool = False) -> list[bool]:
        """Create each run that does not exist yet (PENDING, due in ``grace`` s); per run, if.

        Called by every ``apply_async`` (the run is registered before its
        message is sent, so a lost message is published again) and for child
        runs and idempotent triggers. An existing run is left as it is, unless
        ``replace_finished`` and it is finished (SUCCEEDED, FAILED, CANCELLED):
        then it is replaced, checkpoints, history and metadata all (a task id
        used again). A new run records the ``NewRun``'s tags, version and
        ``replay_of``, and starts with its ``steps`` as checkpoints.
        """

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with its checkpoints (ordered by position), or None."""

    @abstractmethod
    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord | None]:
        """The runs ``run_ids`` in order, without checkpoints (None if missing)."""

    @abstractmethod
    def list_runs(self, *, status: RunStatus | None = None, task: str | None = None,
                  tag: str | None = None, version: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        """Runs, newest first, without their checkpoints, optionally filtered.

        ``tag`` keeps the runs carrying that tag, ``version`` those started under
        that code version; a store keeps an index for each so a filter does not
        read every run.
        """

    @abstractmethod
    def reset_run(self, run_id: str, *, from_start: bool, args: str | None = None,
                  kwargs: str | None = None, grace: float = 300.0,
                  version: str | None = None) -> RunRecord | None:
        """Make a FAILED or CANCELLED run PENDING again (:func:`.transitions.reset`).

        Checkpoints that do not survive (:func:`.transitions.keeps_step`) are
        deleted; ``args``/``kwargs`` replace the stored arguments and ``version``
        the run's code version (a retry with the current code). None if the
        run does not exist; InvalidRunStateError if it is not finished that way.
        """

    @abstractmethod
    def cancel(self, run_id: str, *, create_missing: bool = False) -> RunRecord | None:
        """Make a run that neither succeeded nor was cancelled CANCELLED, atomically.

        The fencing token moves on and the lease is released, so a running
        delivery's next write (or heartbeat) is refused. Not due any more.
        None if the run does not exist, unless ``create_missing``: then a
        CANCELLED run (task ``""``) is recorded so its message is ignored when
        it comes. InvalidRunStateError if it succeeded or was cancelled already.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (optional)."""

    # -- capabilities ------------------------------------------------------------------

    def supports(self, capability: type) -> bool:
        """Whether this store declares ``capability`` (:class:`Waits`, :class:`ChildRuns`, …)."""
        return isinstance(self, capability)


class Waits(ABC):
    """Capability: durable waits (``sleep``, ``wait_for_event``, ``send_event``, ``wake_run``).

    Events are race-free even when a run's keys and an event's keys live on
    different Redis Cluster slots:

    * a waiter (holding the lease) calls :meth:`register_waiter` (joins the
      event's waiter set and reads its mailbox), then :meth:`suspend`
      (WAITING), then :meth:`register_waiter` again and, if an event is there,
      delivers it to itself with :meth:`deliver_event`;
    * a sender calls :meth:`post_event` (appends to the mailbox and reads the
      waiter set in one atomic step), then :meth:`deliver_event` to those runs.

    Whichever atomic mailbox step comes second sees the other's write, so at
    least one side delivers; :meth:`deliver_event` and :meth:`wake` act only on
    a run parked at a wait with no resolution yet, so at most one side resumes it.
    """

    @abstractmethod
    def suspend(self, run_id: str, token: int, *, status: RunStatus, wait: WaitInfo,
                step: StepRecord | None = None) -> bool:
        """Under ``token``: park the run at a durable wait and release the lease.

        Writes ``step`` if given; sets ``status`` (SLEEPING or WAITING) and
        ``wait`` (dropping the previous wait's resolution). Not startable before
        ``wait.until`` and due for the sweeper then; ``until=None``: not due at all.
        """

    @abstractmethod
    def register_waiter(self, run_id: str, name: str, key: str, *, after: int,
                        buffer: float) -> EventRecord | None:
        """Join the waiters of ``(name, key)``; return its oldest event newer than ``after``.

        Only events sent less than ``buffer`` seconds ago count.
        """

    @abstractmethod
    def unregister_waiter(self, run_id: str, name: str, key: str) -> None:
        """Leave the waiters of ``(name, key)`` (idempotent)."""

    @abstractmethod
    def post_event(self, name: str, key: str, payload: str, *,
                   buffer: float) -> tuple[EventRecord, list[str]]:
        """Append an event to the mailbox of ``(name, key)``; return it and the waiters.

        Its ``seq`` is greater than every earlier one of the mailbox; it is kept
        ``buffer`` seconds (0: not kept) and older events are dropped.
        """

    @abstractmethod
    def deliver_event(self, event: EventRecord, run_ids: Sequence[str], *,
                      grace: float) -> list[RunRecord]:
        """Resolve with ``event`` the waits it ends; return the runs to publish.

        Per run, first write wins: WAITING for this name and key, no resolution
        yet, ``event.seq`` above ``wait.after`` → the resolution is the event and
        the run PENDING (due in ``grace`` s should the publish be lost). Runs that
        are gone or finished leave the waiter set. Idempotent.
        """

    @abstractmethod
    def wake(self, run_id: str, *, grace: float) -> RunRecord | None:
        """End the wait of a SLEEPING or WAITING run now (first write wins); the run to publish."""


class ChildRuns(ABC):
    """Capability: child runs (``call``, ``gather``, ``map``).

    A finished child calls :meth:`notify_parent`, which counts the notice and
    resumes the parent once the count reaches what it parked with;
    :meth:`suspend_children` parks the parent only if that count is not
    reached yet, so a child finishing in between is never missed.
    """

    @abstractmethod
    def notify_parent(self, parent_id: str, *, grace: float) -> RunRecord | None:
        """A child of ``parent_id`` finished: ``children_done`` + 1; the parent if resumed.

        The parent is resumed (resolution ``{"how": "child"}``, PENDING, due in
        ``grace`` s) when it is WAITING at a ``children`` wait with no
        resolution and the count reached its ``need``. A missing or finished
        parent is left alone.
        """

    @abstractmethod
    def suspend_children(self, run_id: str, token: int, *, wait: WaitInfo, recheck: float,
                         need: int, step: StepRecord | None = None) -> ParkOutcome:
        """Under ``token``: park at a ``children`` wait until ``children_done`` reaches ``need``.

        ``lost``: the token no longer holds the lease. ``notice``: the count
        reached ``need`` already (``step`` is written, the run stays RUNNING:
        look at the children again). ``parked``: as :meth:`Waits.suspend` with
        WAITING, due again in ``recheck`` s should a notice be lost.
        """


class IdempotencyKeys(ABC):
    """Capability: ``apply_async(idempotency_key=...)``."""

    @abstractmethod
    def claim_idempotency_key(self, task: str, key: str, run_id: str, *, ttl: float) -> str:
        """Bind ``(task, key)`` to ``run_id`` for ``ttl`` s unless bound; the bound run id."""

    def purge_idempotency_keys(self, *, expired_before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` keys expired before ``expired_before``; how many.

        The default does nothing: for a store whose keys expire by themselves.
        """
        return 0


class ConcurrencySlots(ABC):
    """Capability: ``@durable_task(concurrency=N, concurrency_key=fn)``."""

    @abstractmethod
    def acquire_slot(self, group: str, run_id: str, *, limit: int, ttl: float) -> bool:
        """Take one of ``limit`` slots of ``group`` for ``run_id``, first come first served.

        Expired slots and queue entries are dropped first. True: ``run_id``
        holds a slot for ``ttl`` s. False: it joined (or stays in) the queue,
        its entry expiring in ``2 * ttl`` s unless it asks again. A run gets a
        free slot only if fewer queued runs are ahead of it than slots are free.
        """

    @abstractmethod
    def release_slot(self, group: str, run_id: str, *, limit: int) -> list[str]:
        """Give back ``run_id``'s slot or queue entry; the queued runs that may now run."""

    @abstractmethod
    def renew_slots(self, slots: Mapping[str, Sequence[str]], ttl: float) -> None:
        """Extend the slots ``{group: [run ids]}`` held by live runs by ``ttl`` seconds."""


class Retention(ABC):
    """Capability: ``purge_runs`` and the purge of finished runs past their retention."""

    @abstractmethod
    def purge_runs(self, *, finished_before: float, statuses: Collection[RunStatus],
                   limit: int = 1000) -> list[str]:
        """Delete up to ``limit`` runs in ``statuses`` finished before ``finished_before``.

        With their checkpoints, atomically per run: a run re-triggered meanwhile
        is kept. Returns the ids deleted.
        """


class RunHistory(ABC):
    """Capability: the operator's record of a run beyond its checkpoints.

    Kept apart from the checkpoints, so resuming a run never loads it:

    * **history** (:class:`~celery_durable.records.HistoryEntry`), appended by
      the store itself in the write that causes it: every failed attempt
      (``save_step`` of a FAILED step, ``park`` of a RETRYING one), every
      recovery (``begin`` or ``claim_due`` taking a RUNNING run from a lost
      worker, with that worker named; a dead letter for it too), and every
      ``reset_run`` (``retry``), ``cancel`` and ``wake``;
    * **metadata**: what the run says about itself (``set_metadata``);
    * **replay links**: ``replay_of`` is written when the replay is created
      (``NewRun.replay_of``); the original's ``replayed_as`` by :meth:`link_replay`.

    History and metadata go with the run (deleted, replaced, expired with it).
    """

    @abstractmethod
    def history(self, run_id: str) -> list[HistoryEntry]:
        """The run's history, oldest first (an unreadable entry is skipped and logged)."""

    @abstractmethod
    def set_metadata(self, run_id: str, token: int, values: Mapping[str, str]) -> bool:
        """Under ``token``: set metadata keys to ``values`` (each JSON text); False if lost."""

    @abstractmethod
    def link_replay(self, original_id: str, replay_id: str) -> bool:
        """Add ``replay_id`` to the ``replayed_as`` of ``original_id``; False if it is gone."""


class WaitTokens(ABC):
    """Capability: wait tokens (``create_wait_token``, ``complete_wait_token``), decided by
    :func:`celery_durable.stores.tokens.completion` under the store's lock and clock."""

    @abstractmethod
    def create_wait_token(self, token_id: str, run_id: str, *, timeout: float | None,
                          tags: Sequence[str] = ()) -> WaitTokenRecord:
        """Record a pending token of ``run_id`` expiring ``timeout`` s from now by the store's
        clock (None: never), unless ``token_id`` exists; the stored record."""

    @abstractmethod
    def complete_wait_token(self, token_id: str,
                            payload: str) -> tuple[TokenOutcome, WaitTokenRecord | None]:
        """Atomically: the first completion of a pending, unexpired token records ``payload``
        and the store's time; the outcome and the record after it (None if unknown)."""

    @abstractmethod
    def get_wait_token(self, token_id: str) -> WaitTokenRecord | None:
        """The token (its ``now`` the store's clock), or None."""

    @abstractmethod
    def list_wait_tokens(self, *, run_id: str | None = None,
                         limit: int = 100) -> list[WaitTokenRecord]:
        """Tokens, newest first, optionally of one run."""


#: What :meth:`ChildRuns.suspend_children` answers.
ParkOutcome = Literal["lost", "notice", "parked"]


def park_outcome(value: str) -> ParkOutcome:
    """``value`` as a :data:`ParkOutcome` (a store's reply); ValueError for anything else."""
    if value not in get_args(ParkOutcome):
        raise ValueError(f"not a children-park outcome: {value!r}")
    return value  # type: ignore[return-value]

#: Every capability, with the feature it gives (for error messages and docs).
CAPABILITIES: dict[type, str] = {
    Waits: "durable waits (sleep, wait_for_event, send_event, wake_run)",
    ChildRuns: "child runs (call, gather, map)",
    IdempotencyKeys: "idempotency keys (apply_async(idempotency_key=...))",
    ConcurrencySlots: "concurrency limits (@durable_task(concurrency=N))",
    Retention: "purging runs (purge_runs, durable_result_retention)",
    RunHistory: "run history, metadata and replay links (every attempt, set_metadata, "
                "replay_run)",
    WaitTokens: "wait tokens (create_wait_token, wait_for_token, complete_wait_token)",
}


class UnsupportedCapability(NotImplementedError):
    """The store does not declare the capability a feature needs."""


def _require(store: CheckpointStore, capability: type) -> Any:
    if not store.supports(capability):
        name = type(getattr(store, "wrapped", store)).__name__  # through a GuardedStore too
        raise UnsupportedCapability(
            f"{name} does not support {CAPABILITIES[capability]}; a store declares it by "
            f"inheriting celery_durable.stores.base.{capability.__name__}")
    return store


# What the engine calls before it uses a capability: ``store`` as that capability, or
# UnsupportedCapability naming the store and the feature.

def waits_of(store: CheckpointStore) -> Waits:
    """``store`` as :class:`Waits`."""
    return cast(Waits, _require(store, Waits))


def child_runs_of(store: CheckpointStore) -> ChildRuns:
    """``store`` as :class:`ChildRuns`."""
    return cast(ChildRuns, _require(store, ChildRuns))


def idempotency_keys_of(store: CheckpointStore) -> IdempotencyKeys:
    """``store`` as :class:`IdempotencyKeys`."""
    return cast(IdempotencyKeys, _require(store, IdempotencyKeys))


def concurrency_slots_of(store: CheckpointStore) -> ConcurrencySlots:
    """``store`` as :class:`ConcurrencySlots`."""
    return cast(ConcurrencySlots, _require(store, ConcurrencySlots))


def retention_of(store: CheckpointStore) -> Retention:
    """``store`` as :class:`Retention`."""
    return cast(Retention, _require(store, Retention))


def run_history_of(store: CheckpointStore) -> RunHistory:
    """``store`` as :class:`RunHistory`."""
    return cast(RunHistory, _require(store, RunHistory))


def wait_tokens_of(store: CheckpointStore) -> WaitTokens:
    """``store`` as :class:`WaitTokens`."""
    return cast(WaitTokens, _require(store, WaitTokens))

