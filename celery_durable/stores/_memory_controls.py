"""The run-control half of :class:`~celery_durable.stores.memory.MemoryStore`.

Cancellation, idempotency keys, child-run notices and concurrency slots, kept
in dicts of this process under the store's lock.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import InvalidRunStateError
from ..records import HistoryEntry, NewRun, RunRecord, RunStatus, StepRecord, WaitInfo
from .base import ParkOutcome
from .transitions import CANCEL_NOTE

_order = itertools.count()


class MemoryControls:
    """Run controls for the in-process store (mixed into MemoryStore)."""

    _runs: dict[str, RunRecord]
    _steps: dict[str, dict[int, StepRecord]]
    _lock: threading.RLock

    if TYPE_CHECKING:  # provided by MemoryStore
        def _snapshot(self, run: RunRecord) -> RunRecord: ...
        def _holds(self, run_id: str, token: int) -> RunRecord | None: ...
        def _forget(self, run_id: str) -> None: ...
        def _note(self, run_id: str, entry: HistoryEntry | None) -> None: ...

    def _init_controls(self) -> None:
        """The control state (called by ``MemoryStore.__init__``)."""
        #: (task, key) -> (run id, expiry) of idempotency keys.
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}
        #: The ``need`` each run last parked at its children wait with.
        self._children_needed: dict[str, int] = {}
        #: group -> {run id: slot expiry} and group -> {run id: [FIFO order, queue expiry]}.
        self._slots: dict[str, dict[str, float]] = {}
        self._queues: dict[str, dict[str, list[float]]] = {}

    def create_runs(self, runs: Sequence[NewRun], *, grace: float,
                    replace_finished: bool = False) -> list[bool]:
        """See :meth:`CheckpointStore.create_runs`."""
        now, out = time.time(), []
        with self._lock:
            for new in runs:
                old = self._runs.get(new.id)
                if old is not None and not (replace_finished and old.status.finished):
                    out.append(False)
                    continue
                self._forget(new.id)
                self._runs[new.id] = RunRecord(
                    id=new.id, task=new.task, status=RunStatus.PENDING, args=new.args,
                    kwargs=new.kwargs, options=dict(new.options), created_at=now,
                    updated_at=now, due_at=now + grace, parent=new.parent,
                    idempotency_key=new.idempotency_key, tags=list(new.tags),
                    version=new.version, replay_of=new.replay_of)
                self._steps[new.id] = {s.position: copy.deepcopy(s) for s in new.steps}
                out.append(True)
        return out

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord | None]:
        """See :meth:`CheckpointStore.get_runs`."""
        with self._lock:
            return [copy.deepcopy(self._runs[i]) if i in self._runs else None for i in run_ids]

    def cancel(self, run_id: str, *, create_missing: bool = False) -> RunRecord | None:
        """See :meth:`CheckpointStore.cancel`."""
        now = time.time()
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                if not create_missing:
                    return None
                run = RunRecord(id=run_id, task="", status=RunStatus.PENDING, created_at=now)
                self._runs[run_id], self._steps[run_id] = run, {}
            elif run.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.REPLACED):
                raise InvalidRunStateError(f"run {run_id} is {run.status}; it cannot be "
                                           "cancelled", run_id=run_id)
            run.token += 1
            run.status, run.owner, run.lease_expires = RunStatus.CANCELLED, "", None
            run.due_at = run.not_before = None
            run.finished_at = run.updated_at = now
            self._note(run_id, HistoryEntry("cancel", now, detail=CANCEL_NOTE))
            return copy.deepcopy(run)

    def claim_idempotency_key(self, task: str, key: str, run_id: str, *, ttl: float) -> str:
        """See :meth:`CheckpointStore.claim_idempotency_key`."""
        now = time.time()
        with self._lock:
            keys = self._keys
            bound = keys.get((task, key))
            if bound is not None and bound[1] > now:
                return str(bound[0])
            keys[(task, key)] = (run_id, now + ttl)
            return run_id

    def purge_idempotency_keys(self, *, expired_before: float, limit: int = 1000) -> int:
        """See :meth:`CheckpointStore.purge_idempotency_keys`."""
        with self._lock:
            keys = self._keys
            gone = [k for k, (_, expires) in keys.items() if expires <= expired_before][:limit]
            for k in gone:
                del keys[k]
            return len(gone)

    def notify_parent(self, parent_id: str, *, grace: float) -> RunRecord | None:
        """See :meth:`CheckpointStore.notify_parent`."""
        now = time.time()
        with self._lock:
            run = self._runs.get(parent_id)
            if run is None or run.status.finished:
                return None
            run.children_done += 1
            w = run.wait
            if (run.status is RunStatus.WAITING and w is not None and w.kind == "children"
                    and w.resolution is None
                    and run.children_done >= self._children_needed.get(parent_id, 0)):
                w.resolution = json.dumps({"how": "child", "wid": w.wait_id})
                run.status, run.not_before, run.due_at, run.updated_at = (
                    RunStatus.PENDING, None, now + grace, now)
                return self._snapshot(run)
            return None

    def suspend_children(self, run_id: str, token: int, *, wait: WaitInfo, recheck: float,
                         need: int, step: StepRecord | None = None) -> ParkOutcome:
        """See :meth:`CheckpointStore.suspend_children`."""
        now = time.time()
        with self._lock:
            run = self._holds(run_id, token)
            if run is None:
                return "lost"
            if step is not None:
                self._steps[run_id][step.position] = copy.deepcopy(step)
            if run.children_done >= need:
                return "notice"
            self._children_needed[run_id] = need
            run.wait = copy.deepcopy(wait)
            run.wait.resolution = None
            run.status, run.owner, run.lease_expires = RunStatus.WAITING, "", None
            run.not_before, run.due_at, run.updated_at = None, now + recheck, now
            return "parked"

    def _group(self, group: str, now: float) -> tuple[dict[str, float], dict[str, list[float]]]:
        slots = self._slots.setdefault(group, {})
        queue = self._queues.setdefault(group, {})
        for run_id in [r for r, exp in slots.items() if exp <= now]:
            del slots[run_id]
        for run_id in [r for r, entry in queue.items() if entry[1] <= now]:
            del queue[run_id]
        return slots, queue

    def acquire_slot(self, group: str, run_id: str, *, limit: int, ttl: float) -> bool:
        """See :meth:`CheckpointStore.acquire_slot`."""
        now = time.time()
        with self._lock:
            slots, queue = self._group(group, now)
            if run_id not in slots:
                ahead = sorted(queue.values())
                mine = queue.get(run_id)
                before = len(ahead) if mine is None else ahead.index(mine)
                if before >= limit - len(slots):
                    order = mine[0] if mine is not None else float(next(_order))
                    queue[run_id] = [order, now + 2 * ttl]
                    return False
                queue.pop(run_id, None)
            slots[run_id] = now + ttl
            return True

    def release_slot(self, group: str, run_id: str, *, limit: int) -> list[str]:
        """See :meth:`CheckpointStore.release_slot`."""
        now = time.time()
        with self._lock:
            slots, queue = self._group(group, now)
            slots.pop(run_id, None)
            queue.pop(run_id, None)
            free = max(limit - len(slots), 0)
            return [r for r, _ in sorted(queue.items(), key=lambda kv: kv[1])][:free]

    def renew_slots(self, slots: Mapping[str, Sequence[str]], ttl: float) -> None:
        """See :meth:`CheckpointStore.renew_slots`."""
        now = time.time()
        with self._lock:
            held = self._slots
            for group, run_ids in slots.items():
                for run_id in run_ids:
                    if run_id in held.get(group, {}):
                        held[group][run_id] = now + ttl
