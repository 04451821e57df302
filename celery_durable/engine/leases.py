"""Leases held by this process: a heartbeat renews them, and a holder checks before it acts.

A run's lease is renewed every ``lease_ttl / 3`` seconds while its body runs,
by one heartbeat thread per process that wakes for the earliest renewal due
(whatever the runs' ttls, and as soon as a new run is held). If a renewal
finds the lease gone (another delivery took over after it expired), the run
is marked lost and stops at its next step boundary.

Each held run also keeps a *deadline* on the monotonic clock (which keeps
counting while the process is stopped or paused): the last time the store
confirmed the lease plus two thirds of the ttl. :func:`ensure_held` is called
before a delivery starts anything new (a step, a wait, a child run, its
finish); past the deadline it confirms the lease with the store first, so a
holder that was frozen past its lease never starts a step another worker may
already be running.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from ..stores.base import CheckpointStore, concurrency_slots_of
from ._flow import LeaseLost

logger = logging.getLogger(__name__)


def owner_id() -> str:
    """``host:pid:thread`` of the caller: who holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def owner_is_dead(owner: str) -> bool:
    """True if ``owner`` names a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


#: Fraction of the ttl after the last confirmation that a holder trusts its lease without
#: asking the store (the heartbeat renews at a third, so a healthy holder never asks).
TRUSTED = 2 / 3


@dataclass
class _Held:
    store: CheckpointStore
    token: int
    ttl: float
    #: Monotonic time the store last confirmed the lease (taken or renewed): the time the
    #: request was *sent*, so the lease surely lasts ``ttl`` from then.
    confirmed: float
    #: The concurrency group whose slot the run holds (renewed with the lease).
    group: str | None = None

    @property
    def next_renewal(self) -> float:
        return self.confirmed + self.ttl / 3

    @property
    def deadline(self) -> float:
        return self.confirmed + self.ttl * TRUSTED


@dataclass
class _Registry:
    held: dict[str, _Held] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    pid: int = 0


_registry = _Registry()


def hold(store: CheckpointStore, run_id: str, token: int, ttl: float, *,
         confirmed: float) -> None:
    """Start renewing the lease ``token`` of ``run_id`` (taken at monotonic ``confirmed``)."""
    reg = _registry
    with reg.lock:
        reg.held[run_id] = _Held(store, token, ttl, confirmed)
        reg.lost.discard(run_id)
        if reg.thread is None or reg.pid != os.getpid() or not reg.thread.is_alive():
            reg.pid = os.getpid()
            reg.thread = threading.Thread(target=_heartbeat, name="durable-lease-heartbeat",
                                          daemon=True)
            reg.thread.start()
    reg.wake.set()  # the heartbeat may be sleeping past this run's first renewal


def track_slot(run_id: str, group: str) -> None:
    """Renew ``run_id``'s slot of concurrency ``group`` together with its lease."""
    with _registry.lock:
        held = _registry.held.get(run_id)
        if held is not None:
            held.group = group


def release(run_id: str) -> None:
    """Stop renewing ``run_id``'s lease."""
    with _registry.lock:
        _registry.held.pop(run_id, None)
        _registry.lost.discard(run_id)


def lease_lost(run_id: str) -> bool:
    """True if a heartbeat found that this process no longer holds ``run_id``'s lease."""
    return run_id in _registry.lost


def ensure_held(run_id: str) -> None:
    """Raise :class:`LeaseLost` unless this process may still act for ``run_id``.

    Lost (a heartbeat said so), or past its deadline and the store does not
    confirm it now: LeaseLost. A run this process does not hold (eager mode)
    passes. One dictionary lookup and a clock read when all is well.
    """
    reg = _registry
    if run_id in reg.lost:
        raise LeaseLost()
    held = reg.held.get(run_id)
    if held is None or time.monotonic() < held.deadline:
        return
    _confirm(run_id, held)


def _confirm(run_id: str, held: _Held) -> None:
    """Ask the store whether ``held`` is still ours (renewing it); LeaseLost if not or unsure."""
    sent = time.monotonic()
    try:
        lost = held.store.renew({run_id: held.token}, held.ttl)
    except Exception as exc:  # cannot be sure: start nothing
        logger.warning("celery_durable: run %s: could not confirm its lease (%s: %s); "
                       "stopping", run_id, type(exc).__name__, exc)
        raise LeaseLost() from exc
    with _registry.lock:
        if run_id in lost:
            _registry.lost.add(run_id)
        elif _registry.held.get(run_id) is held:
            held.confirmed = max(held.confirmed, sent)
    if run_id in lost:
        logger.warning("celery_durable: run %s: its lease expired while this process was "
                       "paused and another delivery took it; stopping", run_id)
        raise LeaseLost()


def _heartbeat() -> None:
    reg = _registry
    while True:
        with reg.lock:
            due_at = min((h.next_renewal for h in reg.held.values()), default=None)
        wait = None if due_at is None else due_at - time.monotonic()
        if wait is None or wait > 0:
            reg.wake.wait(wait)  # until the earliest renewal, or a new run is held
            reg.wake.clear()
            continue
        _renew_due(reg)


def _renew_due(reg: _Registry) -> None:
    """Renew, store by store and ttl by ttl, every held lease whose renewal is due."""
    now = time.monotonic()
    with reg.lock:
        due = {run_id: h for run_id, h in reg.held.items() if h.next_renewal <= now + 0.01}
    batches: dict[tuple[int, float], tuple[CheckpointStore, dict[str, _Held]]] = {}
    for run_id, h in due.items():
        batches.setdefault((id(h.store), h.ttl), (h.store, {}))[1][run_id] = h
    for (_, ttl), (store, held) in batches.items():
        sent = time.monotonic()
        try:
            lost = store.renew({run_id: h.token for run_id, h in held.items()}, ttl)
        except Exception:
            logger.exception("celery_durable: lease renewal failed")
            with reg.lock:  # try again in a second, not a whole third of the ttl
                for h in held.values():
                    h.confirmed = min(h.confirmed, sent - ttl / 3 + 1.0)
            continue
        with reg.lock:
            for run_id, h in held.items():
                if run_id in lost:
                    if run_id in reg.held:
                        reg.lost.add(run_id)
                else:
                    h.confirmed = max(h.confirmed, sent)
        if lost:
            logger.warning("celery_durable: lost the lease of %s", ", ".join(sorted(lost)))
        _renew_slots(store, ttl, {r: h for r, h in held.items() if r not in lost})


def _renew_slots(store: CheckpointStore, ttl: float, held: dict[str, _Held]) -> None:
    """Extend the concurrency slots of the runs whose lease was just renewed."""
    slots: dict[str, list[str]] = {}
    for run_id, h in held.items():
        if h.group is not None:
            slots.setdefault(h.group, []).append(run_id)
    if slots:
        try:
            concurrency_slots_of(store).renew_slots(slots, ttl)
        except Exception:
            logger.exception("celery_durable: slot renewal failed")
