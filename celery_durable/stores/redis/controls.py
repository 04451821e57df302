"""The run-control half of :class:`~celery_durable.stores.redis.store.RedisStore`.

Layout, beside the run hashes (``P`` is the store's key prefix)::

    P idem:<task>:<key>        string: the run id an idempotency key is bound to (PX ttl)
    P conc:{<group>}:run       sorted set: run id -> slot expiry (runs holding a slot)
    P conc:{<group>}:q         sorted set: run id -> FIFO order (runs waiting for a slot)
    P conc:{<group>}:qx        sorted set: run id -> expiry of its queue entry

A run hash gains ``parent`` (the run that started it), ``ikey`` (its
idempotency key), ``cdone`` (how many times its children reported that they
finished) and ``cneed`` (the count its children wait resumes at).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import InvalidRunStateError
from ...records import NewRun, RunRecord, RunStatus, StepRecord, WaitInfo
from ..base import ParkOutcome, park_outcome
from ..transitions import CANCEL_NOTE
from ._codec import RUN_FIELDS, checkpoint_args, meta_text, parse_begin, parse_run, text


class RedisControls:
    """Run controls for RedisStore (mixed into it)."""

    client: Any
    prefix: str
    _scripts: dict[str, Any]
    _due_key: str
    _runs_key: str

    if TYPE_CHECKING:  # provided by RedisStore
        def run_key(self, run_id: str) -> str: ...
        def _send(self, *commands: tuple[Any, ...]) -> list[Any]: ...
        def _script(self, name: str, keys: str | tuple[str, ...],
                    *args: Any) -> tuple[Any, ...]: ...
        def clock(self) -> float: ...
        def run_keys(self, run_id: str) -> tuple[str, str, str]: ...
        def _index(self, run_id: str, now: float, tags: Sequence[str],
                   version: str | None) -> list[tuple[Any, ...]]: ...
        def _forget_tokens(self, run_ids: Sequence[str]) -> None: ...

    def _run(self, run_id: str, flat: Any, *, steps: bool = True) -> RunRecord:
        """The run in ``flat`` (an HGETALL reply), its checkpoints decoded only if ``steps``."""
        return parse_run(run_id, flat) if steps else parse_begin(run_id, flat, strict=False)[0]

    def create_runs(self, runs: Sequence[NewRun], *, grace: float,
                    replace_finished: bool = False) -> list[bool]:
        """See :meth:`CheckpointStore.create_runs`: one round trip.

        The due-set and index entries are added with ``NX``, so a run that
        already exists keeps its own; a stray due entry (for an existing run
        that had none) is dropped by the sweeper's ``claim_due``.
        """
        if not runs:
            return []
        now = self.clock()
        commands: list[tuple[Any, ...]] = []
        created: list[int] = []
        for new in runs:
            carried = [part for step in new.steps for part in (
                f"c:{step.position}", meta_text(step), f"v:{step.position}", step.value or "")]
            commands += [self._script("CREATE", self.run_keys(new.id), new.task, new.args,
                                      new.kwargs, json.dumps(new.options), new.parent or "",
                                      new.idempotency_key or "", grace,
                                      "1" if replace_finished else "0",
                                      json.dumps(new.tags) if new.tags else "",
                                      new.version or "", new.replay_of or "", *carried)]
            created.append(len(commands) - 1)
            commands += [("ZADD", self._due_key, "NX", now + grace, new.id),
                         ("ZADD", self._runs_key, "NX", now, new.id),
                         *self._index(new.id, now, new.tags, new.version)]
        replies = self._send(*commands)
        return [bool(replies[i]) for i in created]

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord | None]:
        """See :meth:`CheckpointStore.get_runs`: one round trip of HMGETs.

        Only the run fields are read, not the checkpoints: a parent waiting
        for N children reads this on every wake.
        """
        return self._read_runs(run_ids, RUN_FIELDS)

    def _read_runs(self, run_ids: Sequence[str],
                   fields: Sequence[str]) -> list[RunRecord | None]:
        """``fields`` (which include ``status``) of each run, in one round trip.

        None for a run that does not exist. Checkpoints are never read.
        """
        if not run_ids:
            return []
        status_at = list(fields).index("status")
        replies = self._send(*(("HMGET", self.run_key(run_id), *fields) for run_id in run_ids))
        out: list[RunRecord | None] = []
        for run_id, values in zip(run_ids, replies, strict=True):
            if values[status_at] is None:  # no such run
                out.append(None)
                continue
            found = {name: value for name, value in zip(fields, values, strict=True)
                     if value is not None}
            out.append(self._run(run_id, found, steps=False))
        return out

    def cancel(self, run_id: str, *, create_missing: bool = False) -> RunRecord | None:
        """See :meth:`CheckpointStore.cancel`."""
        reply = self._scripts["CANCEL"](keys=list(self.run_keys(run_id)[:2]),
                                        args=["1" if create_missing else "0", CANCEL_NOTE])
        action = text(reply[0])
        if action == "missing":
            return None
        if action == "state":
            raise InvalidRunStateError(f"run {run_id} is {text(reply[1])}; it cannot be "
                                       "cancelled", run_id=run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self._due_key, run_id)
        pipe.zadd(self._runs_key, {run_id: self.clock()}, nx=True)
        pipe.execute()
        run = self._run(run_id, reply[1])
        run.steps = []
        return run

    def claim_idempotency_key(self, task: str, key: str, run_id: str, *, ttl: float) -> str:
        """See :meth:`CheckpointStore.claim_idempotency_key`: ``SET NX`` on one global key."""
        bound = self._scripts["IDEMPOTENCY"](keys=[f"{self.prefix}idem:{task}:{key}"],
                                             args=[run_id, max(int(ttl * 1000), 1)])
        return text(bound)

    def notify_parent(self, parent_id: str, *, grace: float) -> RunRecord | None:
        """See :meth:`CheckpointStore.notify_parent`."""
        reply = self._scripts["NOTIFY"](keys=[self.run_key(parent_id)], args=[grace])
        if text(reply[0]) != "publish":
            return None
        run = self._run(parent_id, reply[1])
        if run.due_at is not None:
            self.client.zadd(self._due_key, {parent_id: run.due_at})
        return run

    def suspend_children(self, run_id: str, token: int, *, wait: WaitInfo, recheck: float,
                         need: int, step: StepRecord | None = None) -> ParkOutcome:
        """See :meth:`CheckpointStore.suspend_children`: one pipelined round trip."""
        step_args = checkpoint_args(step) if step is not None else ["", "", ""]
        outcome, _ = self._send(
            self._script("SUSPEND_CHILDREN", self.run_key(run_id), token, *step_args, wait.step,
                         wait.position, wait.wait_id, recheck, need),
            ("ZADD", self._due_key, self.clock() + recheck, run_id))
        return park_outcome(text(outcome))

    def slot_keys(self, group: str) -> list[str]:
        """The holders, queue and queue-expiry keys of a concurrency group (one hash tag)."""
        base = f"{self.prefix}conc:{{{group}}}"
        return [f"{base}:run", f"{base}:q", f"{base}:qx"]

    def acquire_slot(self, group: str, run_id: str, *, limit: int, ttl: float) -> bool:
        """See :meth:`CheckpointStore.acquire_slot`: one EVALSHA."""
        return bool(self._scripts["ACQUIRE"](keys=self.slot_keys(group),
                                             args=[run_id, limit, ttl]))

    def release_slot(self, group: str, run_id: str, *, limit: int) -> list[str]:
        """See :meth:`CheckpointStore.release_slot`: one EVALSHA."""
        ids = self._scripts["RELEASE"](keys=self.slot_keys(group), args=[run_id, limit])
        return [text(i) for i in ids]

    def purge_runs(self, *, finished_before: float, statuses: Collection[RunStatus],
                   limit: int = 1000) -> list[str]:
        """See :meth:`CheckpointStore.purge_runs`: scans the run index up to the cutoff.

        A run that finished before the cutoff was created before it, so only
        index entries older than the cutoff are looked at, a page at a time
        (one pipeline per page); entries of runs that are gone are dropped too.
        """
        wanted = [RunStatus(s).value for s in statuses]
        deleted: list[str] = []
        offset, page = 0, 200
        while len(deleted) < limit and wanted:
            ids = [text(i) for i in self.client.zrangebyscore(
                self._runs_key, "-inf", finished_before, start=offset,
                num=min(page, limit - len(deleted)))]
            if not ids:
                break
            replies = self._send(*(self._script("PURGE", self.run_keys(run_id), finished_before,
                                                *wanted) for run_id in ids))
            removed = [i for i, r in zip(ids, replies, strict=True) if int(r) != 0]
            deleted += [i for i, r in zip(ids, replies, strict=True) if int(r) == 1]
            if removed:
                self._send(("ZREM", self._runs_key, *removed), ("ZREM", self._due_key, *removed))
                self._forget_tokens(removed)
            offset += len(ids) - len(removed)
        return deleted

    def renew_slots(self, slots: Mapping[str, Sequence[str]], ttl: float) -> None:
        """See :meth:`CheckpointStore.renew_slots`: one pipeline for all groups."""
        groups = [(g, ids) for g, ids in slots.items() if ids]
        if not groups:
            return
        self._send(*(self._script("RENEW_SLOTS", self.slot_keys(group)[0], ttl, *ids)
                     for group, ids in groups))
