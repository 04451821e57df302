"""The checkpoint store contract: everything the engine asks of a store.

A store keeps runs, their step checkpoints, their lease and their due time.
Each method is one round trip on a networked store. Times are the store's
own clock (Redis ``TIME``, the database's or the process's), so leases do
not depend on the workers' clocks agreeing.

Implementations: :class:`~celery_durable.stores.redis.RedisStore`,
:class:`~celery_durable.stores.memory.MemoryStore` and, in the Django app,
``celery_durable_django.store.DjangoStore``. They all pass ``tests/stores/test_contract.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence

from ..records import (
    Begin,
    Claim,
    ErrorInfo,
    EventRecord,
    NewRun,
    RunRecord,
    RunStatus,
    StepRecord,
    WaitInfo,
)


class CheckpointStore(ABC):
    """Where durable runs and their checkpoints live."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~celery_durable.errors.StoreUnavailableError` if unreachable."""

    @abstractmethod
    def begin(self, run_id: str, *, task: str, args: str, kwargs: str,
              options: Mapping[str, object], owner: str, lease_ttl: float,
              max_recoveries: int = 5, steal_from: str | None = None) -> Begin:
        """Start a delivery of ``run_id``, in one round trip.

        Creates the run if it does not exist. Unless it is finished, parked
        until later, or leased by a live owner other than ``steal_from``, takes
        the lease for ``owner`` (incrementing the fencing token) and returns
        the run with all its checkpoints: in ``run.steps``, or (a store that
        decodes them lazily) in ``Begin.checkpoints`` with ``run.steps`` empty,
        as an :class:`~celery_durable.records.OnDemandCheckpoints` (replaying a
        success then builds no record). Taking over a run that was RUNNING
        (its holder died) counts a recovery; past ``max_recoveries`` the run
        becomes FAILED with a WorkerLostError and the outcome is ``dead``.
        """

    @abstractmethod
    def save_step(self, run_id: str, token: int, step: StepRecord) -> bool:
        """Write one checkpoint if ``token`` still holds the lease; return False if not."""

    @abstractmethod
    def park(self, run_id: str, token: int, *, status: RunStatus, delay: float,
             due_in: float, step: StepRecord | None = None) -> bool:
        """Suspend the run under ``token``: write ``step`` if given, set ``status``.

        The run may not start again for ``delay`` seconds; the sweeper looks at
        it after ``due_in`` seconds. The lease is released. False if the token
        no longer holds the lease.
        """

    @abstractmethod
    def finish(self, run_id: str, token: int, *, status: RunStatus,
               result: str | None = None, error: ErrorInfo | None = None,
               failed_step: str | None = None, retention: float = 0) -> bool:
        """Record the run's final state under ``token`` and release the lease.

        A SUCCEEDED or CANCELLED run is deleted ``retention`` seconds later
        (0 keeps it); a FAILED run is kept until retried or purged.
        """

    @abstractmethod
    def renew(self, leases: Mapping[str, int], lease_ttl: float) -> set[str]:
        """Extend every lease in ``{run_id: token}``; return the run ids whose lease was lost."""

    @abstractmethod
    def due_runs(self, limit: int = 100) -> list[str]:
        """Ids of runs whose due time has passed (expired lease, timer, lost message)."""

    @abstractmethod
    def claim_due(self, run_id: str, *, grace: float, max_recoveries: int) -> Claim:
        """Atomically decide what to do with a due run, so two sweepers never both act.

        A RUNNING run whose lease expired is recovered (``publish``) or, past
        ``max_recoveries``, dead-lettered (``dead``). A parked or queued run
        whose due time passed is ``publish``-ed again. The run's next due time
        moves ``grace`` seconds ahead.
        """

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with its checkpoints (ordered by position), or None."""

    @abstractmethod
    def list_runs(self, *, status: RunStatus | None = None, task: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        """Runs, newest first, without their checkpoints."""

    @abstractmethod
    def reset_run(self, run_id: str, *, from_start: bool, args: str | None = None,
                  kwargs: str | None = None, grace: float = 300.0) -> RunRecord | None:
        """Make a FAILED or CANCELLED run PENDING again for a new delivery.

        ``from_start`` drops every checkpoint; otherwise only failed or retrying
        ones go, so the run resumes at the failed step. ``args``/``kwargs``
        replace the stored arguments. Returns None if the run does not exist;
        raises InvalidRunStateError if it is not finished.
        """

    # -- durable waits (issue 4) ------------------------------------------------
    #
    # Not abstract, so a store without waits still works for everything else.
    # The protocol that makes events race-free, with the run's keys and an
    # event's keys possibly on different Redis Cluster slots:
    #
    # * a waiter (holding the lease) calls ``register_waiter`` (joins the
    #   event's waiter set and reads its mailbox), then ``suspend`` (WAITING),
    #   then ``register_waiter`` again and, if an event is there, delivers it
    #   to itself with ``deliver_event``;
    # * a sender calls ``post_event`` (appends to the mailbox and reads the
    #   waiter set in one atomic step), then ``deliver_event`` to those runs.
    #
    # Whichever of the two atomic mailbox steps comes second sees the other's
    # write, so at least one side delivers; ``deliver_event`` and ``wake``
    # only act on a run that is parked at a wait with no resolution yet, so
    # at most one side resumes it.

    def _no_waits(self) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not support waits yet")

    def suspend(self, run_id: str, token: int, *, status: RunStatus, wait: WaitInfo,
                step: StepRecord | None = None) -> bool:
        """Park the run under ``token`` at a durable wait and release the lease.

        Writes ``step`` if given; sets ``status`` (SLEEPING or WAITING) and
        ``wait`` (dropping the previous wait and its resolution). The run
        cannot start again before ``wait.until`` and is due for the sweeper
        then; with ``until=None`` it is not due at all (only an event or
        ``wake`` resumes it). False if the token no longer holds the lease.
        """
        raise self._no_waits()

    def register_waiter(self, run_id: str, name: str, key: str, *, after: int,
                        buffer: float) -> EventRecord | None:
        """Add ``run_id`` to the waiters of event ``(name, key)`` and read its mailbox.

        One atomic step. Returns the oldest event of the mailbox sent less
        than ``buffer`` seconds ago whose ``seq`` is greater than ``after``,
        or None.
        """
        raise self._no_waits()

    def unregister_waiter(self, run_id: str, name: str, key: str) -> None:
        """Remove ``run_id`` from the waiters of ``(name, key)`` (idempotent)."""
        raise self._no_waits()

    def post_event(self, name: str, key: str, payload: str, *,
                   buffer: float) -> tuple[EventRecord, list[str]]:
        """Append an event to the mailbox of ``(name, key)`` and return it with the waiters.

        One atomic step. The event gets a ``seq`` greater than every earlier
        one of the mailbox and is kept ``buffer`` seconds (0: not kept);
        older events are dropped.
        """
        raise self._no_waits()

    def deliver_event(self, event: EventRecord, run_ids: Sequence[str], *,
                      grace: float) -> list[RunRecord]:
        """Resolve the waits of ``run_ids`` with ``event``; return the runs to publish.

        Per run, atomically and first write wins: if it is WAITING for this
        name and key with no resolution yet, and ``event.seq`` is greater
        than its ``wait.after``, the event becomes the wait's resolution and
        the run becomes PENDING (due again in ``grace`` seconds should the
        caller's publish be lost). Runs that no longer exist or are finished
        leave the waiter set. Idempotent.
        """
        raise self._no_waits()

    def wake(self, run_id: str, *, grace: float) -> RunRecord | None:
        """End the wait of a SLEEPING or WAITING run now (``wake_run``).

        Atomically, first write wins: the resolution becomes ``woken`` and the
        run PENDING; returns the run to publish. None if the run is not parked
        at an unresolved wait.
        """
        raise self._no_waits()

    # -- run controls (issue 7): cancellation, idempotency, child runs, concurrency ------
    #
    # Not abstract either. Child runs use a notice protocol: a finished child calls
    # ``notify_parent``, which resumes the parent if it is parked at a children wait
    # and otherwise leaves a notice; ``suspend_children`` parks the parent only if
    # no notice came since its last look at the children, so a child finishing
    # between that look and the parking is never missed.

    def _no_controls(self) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not support run controls yet")

    def create_runs(self, runs: Sequence[NewRun], *, grace: float) -> list[bool]:
        """Create every run of ``runs`` that does not exist yet; return, per run, if it was.

        One round trip for all of them on a networked store. A new run is
        PENDING with its arguments, options, parent and idempotency key, and due
        for the sweeper in ``grace`` seconds (so it is published even if its
        first message is lost). An existing run is left as it is.
        """
        raise self._no_controls()

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord | None]:
        """The runs ``run_ids`` in order, without checkpoints (None if missing); one round trip."""
        raise self._no_controls()

    def cancel(self, run_id: str, *, create_missing: bool = False) -> RunRecord | None:
        """Make a run that neither succeeded nor was cancelled CANCELLED, atomically.

        The fencing token is incremented and the lease released, so a running
        delivery's next checkpoint (or heartbeat) is refused and it stops at
        its next step boundary; a queued message finds the run finished. The
        run is no longer due. Returns the run (without checkpoints); None if it
        does not exist, unless ``create_missing``, which records a CANCELLED
        run (task ``""``) so its message, when it comes, is ignored. Raises
        :class:`~celery_durable.errors.InvalidRunStateError` if it succeeded or
        was already cancelled.
        """
        raise self._no_controls()

    def claim_idempotency_key(self, task: str, key: str, run_id: str, *, ttl: float) -> str:
        """Bind ``(task, key)`` to ``run_id`` for ``ttl`` seconds unless it is bound already.

        Atomic across processes and hosts. Returns the run id the key is bound
        to: ``run_id`` if this call bound it, else the earlier run's.
        """
        raise self._no_controls()

    def notify_parent(self, parent_id: str, *, grace: float) -> RunRecord | None:
        """A child of ``parent_id`` finished: count it, and resume the parent once all have.

        Atomically: the parent's :attr:`~celery_durable.records.RunRecord.children_done`
        grows by one. If the parent is WAITING at a ``children`` wait with no
        resolution and the count has reached the ``need`` it parked with (see
        :meth:`suspend_children`; a wait parked without one counts as 0), the
        resolution becomes ``{"how": "child"}`` and the run PENDING (due in
        ``grace`` seconds); the run is returned to be published. Otherwise None.
        A missing or finished parent is left alone (nothing created, no count).
        """
        raise self._no_controls()

    def suspend_children(self, run_id: str, token: int, *, wait: WaitInfo, recheck: float,
                         need: int, step: StepRecord | None = None) -> str:
        """Park the run at a ``children`` wait until its ``children_done`` reaches ``need``.

        Atomically: ``lost`` if the token no longer holds the lease; ``notice``
        if ``children_done`` has reached ``need`` already (the children the
        caller waits for have all reported since it counted them: ``step`` is
        written, the run stays RUNNING, look at the children again); else
        ``parked``, as :meth:`suspend` with status WAITING, except that the run
        is due for the sweeper in ``recheck`` seconds: a safety net should a
        child's notice be lost.
        """
        raise self._no_controls()

    def acquire_slot(self, group: str, run_id: str, *, limit: int, ttl: float) -> bool:
        """Take one of the ``limit`` execution slots of ``group`` for ``run_id``, FIFO.

        Atomically: slots and queue entries older than their ``ttl`` are dropped
        first. True if ``run_id`` holds a slot (now expiring in ``ttl`` seconds);
        a run gets a free slot only if fewer queued runs are ahead of it than
        slots are free. Otherwise ``run_id`` joins (or stays in) the queue, its
        entry expiring in ``2 * ttl`` seconds unless it asks again, and False
        is returned.
        """
        raise self._no_controls()

    def release_slot(self, group: str, run_id: str, *, limit: int) -> list[str]:
        """Give back ``run_id``'s slot (or queue entry) in ``group``.

        Returns the ids of the queued runs, oldest first, that may now take the
        free slots: the caller publishes them. Idempotent.
        """
        raise self._no_controls()

    def renew_slots(self, slots: Mapping[str, Sequence[str]], ttl: float) -> None:
        """Extend the slots ``{group: [run ids]}`` held by live runs by ``ttl`` seconds."""
        raise self._no_controls()

    # -- retention (issue 9) ------------------------------------------------------------

    def purge_runs(self, *, finished_before: float, statuses: Collection[RunStatus],
                   limit: int = 1000) -> list[str]:
        """Delete up to ``limit`` runs in ``statuses`` that finished before ``finished_before``.

        ``statuses`` are final states (SUCCEEDED, FAILED, CANCELLED). A run is
        deleted with its checkpoints, atomically per run: one that was
        re-triggered meanwhile (no longer finished) is kept. Returns the ids
        deleted. Not abstract, so an older store still works for the rest.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support purge_runs yet")

    def purge_idempotency_keys(self, *, expired_before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` idempotency keys that expired before ``expired_before``.

        Returns how many went. The default does nothing: a store whose keys
        expire by themselves (Redis TTLs) has none to delete.
        """
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (optional)."""
