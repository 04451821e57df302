"""Lease heartbeats: one thread per process renews every lease the process holds.

A run's lease is renewed every ``lease_ttl / 3`` seconds while its body
runs. If a renewal finds the lease gone (another delivery took over after
it expired), the run is marked lost and stops at its next step boundary.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from ..stores.base import CheckpointStore, concurrency_slots_of

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


@dataclass
class _Held:
    store: CheckpointStore
    token: int
    ttl: float
    #: The concurrency group whose slot the run holds (renewed with the lease).
    group: str | None = None


@dataclass
class _Registry:
    held: dict[str, _Held] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    pid: int = 0


_registry = _Registry()


def hold(store: CheckpointStore, run_id: str, token: int, ttl: float) -> None:
    """Start renewing the lease ``token`` of ``run_id`` from this process."""
    reg = _registry
    with reg.lock:
        reg.held[run_id] = _Held(store, token, ttl)
        reg.lost.discard(run_id)
        if reg.thread is None or reg.pid != os.getpid() or not reg.thread.is_alive():
            reg.pid = os.getpid()
            reg.thread = threading.Thread(target=_heartbeat, name="durable-lease-heartbeat",
                                          daemon=True)
            reg.thread.start()


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


def _heartbeat() -> None:
    reg = _registry
    while True:
        with reg.lock:
            held = dict(reg.held)
        interval = min((h.ttl for h in held.values()), default=30.0) / 3
        reg.wake.wait(max(interval, 0.05))
        with reg.lock:
            held = {run_id: h for run_id, h in reg.held.items() if run_id in held}
        by_store: dict[int, tuple[CheckpointStore, float, dict[str, int]]] = {}
        for run_id, h in held.items():
            entry = by_store.setdefault(id(h.store), (h.store, h.ttl, {}))
            entry[2][run_id] = h.token
        for store, ttl, leases in by_store.values():
            try:
                lost = store.renew(leases, ttl)
            except Exception:
                logger.exception("celery_durable: lease renewal failed")
                continue
            if lost:
                logger.warning("celery_durable: lost the lease of %s", ", ".join(sorted(lost)))
                with reg.lock:
                    reg.lost.update(run_id for run_id in lost if run_id in reg.held)
            _renew_slots(store, ttl, {r: held[r] for r in leases if r not in lost})


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
