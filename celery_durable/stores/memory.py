"""An in-process store for eager mode and unit tests."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Collection, Mapping, Sequence

from ..records import (
    Begin,
    Claim,
    ErrorInfo,
    EventRecord,
    HistoryEntry,
    RetryInfo,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    WaitInfo,
    failed_attempt,
)
from . import transitions
from ._memory_controls import MemoryControls
from ._memory_tokens import MemoryTokens
from .base import (
    CheckpointStore,
    ChildRuns,
    ConcurrencySlots,
    IdempotencyKeys,
    Retention,
    RunHistory,
    Waits,
    WaitTokens,
)

_PARKED = (RunStatus.SLEEPING, RunStatus.WAITING)


class MemoryStore(MemoryControls, MemoryTokens, CheckpointStore, Waits, ChildRuns,
                  IdempotencyKeys, ConcurrencySlots, Retention, RunHistory, WaitTokens):
    """Keeps runs in a dict of this process; lost when the process exits."""

    def __init__(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, dict[int, StepRecord]] = {}
        self._boxes: dict[tuple[str, str], list[EventRecord]] = {}
        self._waiters: dict[tuple[str, str], set[str]] = {}
        self._history: dict[str, list[HistoryEntry]] = {}
        self._metadata: dict[str, dict[str, str]] = {}
        self._lock = threading.RLock()
        self._init_controls()
        self._init_tokens()

    def ping(self) -> None:
        """Always reachable."""

    def _snapshot(self, run: RunRecord) -> RunRecord:
        out = copy.deepcopy(run)
        out.steps = [copy.deepcopy(s) for _, s in sorted(self._steps[run.id].items())]
        out.metadata = {k: json.loads(v) for k, v in self._metadata.get(run.id, {}).items()}
        return out

    def _forget(self, run_id: str) -> None:
        """Drop a run and everything kept about it."""
        self._runs.pop(run_id, None)
        self._steps.pop(run_id, None)
        self._children_needed.pop(run_id, None)
        self._history.pop(run_id, None)
        self._metadata.pop(run_id, None)
        self._forget_tokens(run_id)

    def _note(self, run_id: str, entry: HistoryEntry | None) -> None:
        if entry is not None:
            self._history.setdefault(run_id, []).append(copy.deepcopy(entry))

    def _write_step(self, run: RunRecord, step: StepRecord, now: float) -> None:
        """Store checkpoint ``step``; a failed attempt goes to the history too."""
        self._steps[run.id][step.position] = copy.deepcopy(step)
        if failed_attempt(step):
            kept = copy.deepcopy(step)
            kept.value = None
            self._note(run.id, HistoryEntry.attempt(now, kept))
        if step.status is StepStatus.RETRYING:
            run.retries += 1
            run.retrying = RetryInfo.of(step)

    def _holds(self, run_id: str, token: int) -> RunRecord | None:
        run = self._runs.get(run_id)
        if run is None or run.token != token or not run.owner:
            return None
        return run

    @staticmethod
    def _control(run: RunRecord) -> transitions.Control:
        return transitions.Control(run.status, run.owner, run.lease_expires, run.not_before,
                                   run.due_at, run.recoveries, run.token,
                                   run.started_at is not None)

    @staticmethod
    def _apply(run: RunRecord, changes: transitions.Changes) -> None:
        for name, value in changes.items():
            setattr(run, name, value)

    def begin(self, run_id: str, *, task: str, args: str, kwargs: str,
              options: Mapping[str, object], owner: str, lease_ttl: float,
              max_recoveries: int = 5, steal_from: str | None = None,
              tags: Sequence[str] = (), version: str | None = None) -> Begin:
        """See :meth:`CheckpointStore.begin`."""
        now = time.time()
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                run = RunRecord(id=run_id, task=task, status=RunStatus.PENDING, args=args,
                                kwargs=kwargs, options=dict(options), created_at=now,
                                tags=list(tags), version=version)
                self._runs[run_id] = run
                self._steps[run_id] = {}
            elif (filled := transitions.merged_options(run.options, options)) is not None:
                run.options = filled  # created before its first delivery
            control = self._control(run)
            outcome, changes = transitions.begin(
                control, now=now, owner=owner, lease_ttl=lease_ttl,
                max_recoveries=max_recoveries, steal_from=steal_from)
            self._note(run_id, transitions.recovery(control, changes, now=now, by="delivery"))
            self._apply(run, changes)
            return Begin(outcome, self._snapshot(run), run.token if outcome == "acquired" else 0)

    def save_step(self, run_id: str, token: int, step: StepRecord) -> bool:
        """See :meth:`CheckpointStore.save_step`."""
        with self._lock:
            run = self._holds(run_id, token)
            if run is None:
                return False
            self._write_step(run, step, time.time())
            return True

    def park(self, run_id: str, token: int, *, status: RunStatus, delay: float,
             due_in: float, step: StepRecord | None = None, args: str | None = None,
             kwargs: str | None = None,
             options: Mapping[str, object] | None = None) -> bool:
        """See :meth:`CheckpointStore.park`."""
        now = time.time()
        with self._lock:
            run = self._holds(run_id, token)
            if run is None:
                return False
            if step is not None:
                self._write_step(run, step, now)
            run.args = args if args is not None else run.args
            run.kwargs = kwargs if kwargs is not None else run.kwargs
            run.options = dict(options) if options is not None else run.options
            run.status, run.owner, run.lease_expires = status, "", None
            run.not_before, run.due_at, run.updated_at = now + delay, now + due_in, now
            return True

    def finish(self, run_id: str, token: int, *, status: RunStatus,
               result: str | None = None, error: ErrorInfo | None = None,
               failed_step: str | None = None, retention: float = 0) -> bool:
        """See :meth:`CheckpointStore.finish` (retention is not enforced in memory)."""
        now = time.time()
        with self._lock:
            run = self._holds(run_id, token)
            if run is None:
                return False
            run.status, run.result, run.error, run.failed_step = status, result, error, failed_step
            run.owner, run.lease_expires, run.due_at, run.not_before = "", None, None, None
            run.finished_at = run.updated_at = now
            return True

    def renew(self, leases: Mapping[str, int], lease_ttl: float) -> set[str]:
        """See :meth:`CheckpointStore.renew`."""
        now, lost = time.time(), set()
        with self._lock:
            for run_id, token in leases.items():
                run = self._holds(run_id, token)
                if run is None:
                    lost.add(run_id)
                else:
                    run.lease_expires = run.due_at = now + lease_ttl
        return lost

    def due_runs(self, limit: int = 100) -> list[str]:
        """See :meth:`CheckpointStore.due_runs`."""
        now = time.time()
        with self._lock:
            due = sorted((r.due_at, r.id) for r in self._runs.values()
                         if r.due_at is not None and r.due_at <= now)
        return [run_id for _, run_id in due[:limit]]

    def claim_due(self, run_id: str, *, grace: float, max_recoveries: int) -> Claim:
        """See :meth:`CheckpointStore.claim_due`."""
        now = time.time()
        with self._lock:
            run = self._runs.get(run_id)
            control = None if run is None else self._control(run)
            action, changes = transitions.claim_due(control, now=now, grace=grace,
                                                    max_recoveries=max_recoveries)
            if run is None or control is None or action == "gone":
                return Claim("gone")
            self._note(run_id, transitions.recovery(control, changes, now=now, by="sweeper"))
            self._apply(run, changes)
            if action == "later":
                return Claim("later", due_at=run.due_at)
            return Claim(action, self._snapshot(run))

    def get_run(self, run_id: str) -> RunRecord | None:
        """See :meth:`CheckpointStore.get_run`."""
        with self._lock:
            run = self._runs.get(run_id)
            return None if run is None else self._snapshot(run)

    def list_runs(self, *, status: RunStatus | None = None, task: str | None = None,
                  tag: str | None = None, version: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        """See :meth:`CheckpointStore.list_runs`."""
        with self._lock:
            runs = [copy.deepcopy(r) for r in self._runs.values()
                    if (status is None or r.status is status)
                    and (task is None or r.task == task)
                    and (tag is None or tag in r.tags)
                    and (version is None or r.version == version)]
        runs.sort(key=lambda r: r.created_at or 0, reverse=True)
        return runs[:limit]

    def purge_runs(self, *, finished_before: float, statuses: Collection[RunStatus],
                   limit: int = 1000) -> list[str]:
        """See :meth:`CheckpointStore.purge_runs`."""
        wanted = {RunStatus(s) for s in statuses}
        with self._lock:
            ids = [r.id for r in self._runs.values()
                   if r.status in wanted and r.finished_at is not None
                   and r.finished_at < finished_before][:limit]
            for run_id in ids:
                self._forget(run_id)
        return ids

    def reset_run(self, run_id: str, *, from_start: bool, args: str | None = None,
                  kwargs: str | None = None, grace: float = 300.0,
                  version: str | None = None) -> RunRecord | None:
        """See :meth:`CheckpointStore.reset_run`."""
        now = time.time()
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            changes = transitions.reset(run_id, self._control(run), now=now, grace=grace,
                                        args=args, kwargs=kwargs, version=version)
            steps = self._steps[run_id]
            for pos in list(steps):
                if not transitions.keeps_step(steps[pos].status, from_start=from_start):
                    del steps[pos]
            self._apply(run, changes)
            self._note(run_id, HistoryEntry("retry", now, detail=transitions.reset_note(
                from_start=from_start, new_args=args is not None or kwargs is not None,
                version=version)))
            return self._snapshot(run)

    # -- run history -------------------------------------------------------------

    def history(self, run_id: str) -> list[HistoryEntry]:
        """See :meth:`RunHistory.history`."""
        with self._lock:
            return copy.deepcopy(self._history.get(run_id, []))

    def set_metadata(self, run_id: str, token: int, values: Mapping[str, str]) -> bool:
        """See :meth:`RunHistory.set_metadata`."""
        with self._lock:
            if self._holds(run_id, token) is None:
                return False
            self._metadata.setdefault(run_id, {}).update(values)
            return True

    def link_replay(self, original_id: str, replay_id: str) -> bool:
        """See :meth:`RunHistory.link_replay`."""
        with self._lock:
            run = self._runs.get(original_id)
            if run is None:
                return False
            if replay_id not in run.replayed_as:
                run.replayed_as.append(replay_id)
            return True

    # -- durable waits ---------------------------------------------------------

    def suspend(self, run_id: str, token: int, *, status: RunStatus, wait: WaitInfo,
                step: StepRecord | None = None) -> bool:
        """See :meth:`CheckpointStore.suspend`."""
        now = time.time()
        with self._lock:
            run = self._holds(run_id, token)
            if run is None:
                return False
            if step is not None:
                self._write_step(run, step, now)
            run.wait = copy.deepcopy(wait)
            run.wait.resolution = None
            run.status, run.owner, run.lease_expires = status, "", None
            run.not_before, run.due_at, run.updated_at = wait.until, wait.until, now
            return True

    def _box(self, name: str, key: str, buffer: float) -> list[EventRecord]:
        """The mailbox of ``(name, key)`` without the events older than ``buffer``."""
        oldest = int((time.time() - buffer) * 1_000_000)
        box = [e for e in self._boxes.get((name, key), []) if e.seq >= oldest]
        if box:
            self._boxes[(name, key)] = box
        else:
            self._boxes.pop((name, key), None)
        return box

    def register_waiter(self, run_id: str, name: str, key: str, *, after: int,
                        buffer: float) -> EventRecord | None:
        """See :meth:`CheckpointStore.register_waiter`."""
        with self._lock:
            self._waiters.setdefault((name, key), set()).add(run_id)
            for event in self._box(name, key, buffer):
                if event.seq > after:
                    return copy.copy(event)
        return None

    def unregister_waiter(self, run_id: str, name: str, key: str) -> None:
        """See :meth:`CheckpointStore.unregister_waiter`."""
        with self._lock:
            waiters = self._waiters.get((name, key))
            if waiters is not None:
                waiters.discard(run_id)
                if not waiters:
                    del self._waiters[(name, key)]

    def post_event(self, name: str, key: str, payload: str, *,
                   buffer: float) -> tuple[EventRecord, list[str]]:
        """See :meth:`CheckpointStore.post_event`."""
        now = time.time()
        with self._lock:
            box = self._box(name, key, buffer)
            seq = max(int(now * 1_000_000), box[-1].seq + 1 if box else 0)
            event = EventRecord(uuid.uuid4().hex, name, key, payload, seq, now)
            if buffer > 0:
                self._boxes[(name, key)] = [*box, event]
            return copy.copy(event), sorted(self._waiters.get((name, key), ()))

    def deliver_event(self, event: EventRecord, run_ids: Sequence[str], *,
                      grace: float) -> list[RunRecord]:
        """See :meth:`CheckpointStore.deliver_event`."""
        now, out = time.time(), []
        with self._lock:
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is None or run.status.finished:
                    self.unregister_waiter(run_id, event.name, event.key)
                    continue
                w = run.wait
                if (run.status is not RunStatus.WAITING or w is None or w.kind != "event"
                        or w.event != event.name or w.key != event.key
                        or w.resolution is not None or event.seq <= w.after):
                    continue
                w.resolution = json.dumps({"how": "event", "wid": w.wait_id, "id": event.id,
                                           "seq": event.seq, "payload": event.payload})
                self._resume(run, now, grace)
                out.append(self._snapshot(run))
        return out

    @staticmethod
    def _resume(run: RunRecord, now: float, grace: float) -> None:
        run.status, run.not_before, run.due_at, run.updated_at = (
            RunStatus.PENDING, None, now + grace, now)

    def wake(self, run_id: str, *, grace: float) -> RunRecord | None:
        """See :meth:`CheckpointStore.wake`."""
        now = time.time()
        with self._lock:
            run = self._runs.get(run_id)
            if (run is None or run.status not in _PARKED or run.wait is None
                    or run.wait.resolution is not None):
                return None
            run.wait.resolution = json.dumps({"how": "woken", "wid": run.wait.wait_id})
            self._note(run_id, HistoryEntry("wake", now, detail=transitions.wake_note(
                run.status)))
            self._resume(run, now, grace)
            return self._snapshot(run)
