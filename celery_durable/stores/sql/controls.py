"""The run-control half of ``SqlStore``: creation, idempotency, children, slots.

* Idempotency keys are ``durable_idempotency_keys`` rows keyed by
  ``(task, key)``: of concurrent claims one insert wins and every claimer
  reads the winner's run id.
* A child's notice to its parent locks the parent row, like ``wake``.
* Every change of a concurrency group happens under its
  ``durable_concurrency_groups`` row lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, tuple_, update
from sqlalchemy.sql.elements import ColumnElement

from ...records import NewRun, RunRecord, RunStatus, StepRecord, WaitInfo
from ..base import ParkOutcome
from ..rowcodec import STATUS_BY_VALUE, run_record, step_columns, wait_fields
from .schema import (
    concurrency_groups,
    concurrency_slots,
    idempotency_keys,
    new_run_row,
    runs,
    steps,
)
from .statements import Statements

Row = dict[str, Any]


class ControlsMixin:
    """``create_runs``, ``get_runs``, idempotency keys, child notices and concurrency slots."""

    engine: Engine
    sql: Statements

    # provided by SqlStore (and WaitsMixin: _resume)
    _holding: Callable[[str, int], ColumnElement[bool]]
    _locked: Callable[[Connection, str], Row | None]
    _read_clock: Callable[[Connection], float]
    _create: Callable[[Connection, Sequence[Row]], set[str]]
    _delete: Callable[[Connection, Sequence[str]], None]
    _write_step: Callable[[Connection, str, StepRecord], None]
    _resume: Callable[..., RunRecord]
    _update: Callable[[Connection, Row, Row], None]

    def create_runs(self, runs_: Sequence[NewRun], *, grace: float,
                    replace_finished: bool = False) -> list[bool]:
        """See :meth:`CheckpointStore.create_runs`: exact, one creator of a run is told True."""
        if not runs_:
            return []
        with self.engine.begin() as conn:
            now = self._read_clock(conn)
            ids = [new.id for new in runs_]
            if replace_finished:  # a task id used again: the finished run makes way
                finished = [s.value for s in RunStatus if s.finished]
                self._delete(conn, list(conn.execute(
                    select(runs.c.id).where(runs.c.id.in_(ids), runs.c.status.in_(finished))
                    .with_for_update()).scalars()))
            made = self._create(conn, [new_run_row(
                now, id=new.id, task=new.task, args=new.args, kwargs=new.kwargs,
                options=dict(new.options), due_at=now + grace, parent=new.parent,
                idempotency_key=new.idempotency_key, tags=list(new.tags), version=new.version,
                replay_of=new.replay_of) for new in runs_])
            first = [{"run_id": new.id, **step_columns(step)}
                     for new in runs_ if new.id in made for step in new.steps]
            if first:
                conn.execute(steps.insert(), first)
        return [run_id in made for run_id in ids]

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord | None]:
        """See :meth:`CheckpointStore.get_runs`: one query."""
        with self.engine.connect() as conn:
            found = {row["id"]: run_record(dict(row)) for row in conn.execute(
                select(runs).where(runs.c.id.in_(list(run_ids)))).mappings()}
        return [found.get(run_id) for run_id in run_ids]

    def claim_idempotency_key(self, task: str, key: str, run_id: str, *, ttl: float) -> str:
        """See :meth:`IdempotencyKeys.claim_idempotency_key`: the primary key decides."""
        keys = idempotency_keys
        mine = (keys.c.task == task) & (keys.c.key == key)
        with self.engine.begin() as conn:
            now = self._read_clock(conn)
            conn.execute(delete(keys).where(mine, keys.c.expires_at <= now))
            self.sql.insert_missing(conn, keys, [{"task": task, "key": key, "run_id": run_id,
                                                  "expires_at": now + ttl}])
            return str(conn.execute(select(keys.c.run_id).where(mine)).scalar_one())

    def purge_idempotency_keys(self, *, expired_before: float, limit: int = 1000) -> int:
        """See :meth:`IdempotencyKeys.purge_idempotency_keys`: one indexed batch."""
        keys = idempotency_keys
        with self.engine.begin() as conn:
            found = list(conn.execute(select(keys.c.task, keys.c.key)
                                      .where(keys.c.expires_at <= expired_before)
                                      .limit(limit)))
            if found:
                conn.execute(delete(keys).where(
                    tuple_(keys.c.task, keys.c.key).in_([tuple(r) for r in found]),
                    keys.c.expires_at <= expired_before))
        return len(found)

    def notify_parent(self, parent_id: str, *, grace: float) -> RunRecord | None:
        """See :meth:`ChildRuns.notify_parent`."""
        with self.engine.begin() as conn:
            row = self._locked(conn, parent_id)
            if row is None or STATUS_BY_VALUE.get(row["status"], RunStatus.FAILED).finished:
                return None
            done = row["children_done"] + 1
            if (row["status"] == RunStatus.WAITING.value and row["wait_kind"] == "children"
                    and row["wait_resolution"] is None and done >= row["children_needed"]):
                return self._resume(conn, row, grace, {"how": "child", "wid": row["wait_id"]},
                                    children_done=done)
            self._update(conn, row, {"children_done": done})
            return None

    def suspend_children(self, run_id: str, token: int, *, wait: WaitInfo, recheck: float,
                         need: int, step: StepRecord | None = None) -> ParkOutcome:
        """See :meth:`ChildRuns.suspend_children`."""
        with self.engine.begin() as conn:
            done = conn.execute(select(runs.c.children_done).where(self._holding(run_id, token))
                                .with_for_update()).scalar()
            if done is None:
                return "lost"
            if step is not None:
                self._write_step(conn, run_id, step)
            if done >= need:
                return "notice"
            values: Row = {"status": RunStatus.WAITING.value, "owner": "",
                           "lease_expires": None, "not_before": None,
                           "due_at": self.sql.later(recheck), "updated_at": self.sql.now,
                           "children_needed": need, **wait_fields(wait)}
            if step is not None:
                values.update(current_step=step.key, attempts=step.attempts)
            conn.execute(update(runs).where(runs.c.id == run_id).values(values))
            return "parked"

    # -- concurrency slots ---------------------------------------------------------------

    def _group(self, conn: Connection, name: str) -> float:
        """Lock the group ``name`` (created if missing), drop its expired entries; the
        database's clock, read with the lock."""
        query = (select(self.sql.now).select_from(concurrency_groups)
                 .where(concurrency_groups.c.name == name).with_for_update())
        now = conn.execute(query).scalar()
        if now is None:
            self.sql.insert_missing(conn, concurrency_groups, [{"name": name}])
            now = conn.execute(query).scalar_one()
        slots = concurrency_slots
        conn.execute(delete(slots).where(slots.c.group_name == name,
                                         slots.c.expires_at <= now))
        return float(now)

    def acquire_slot(self, group: str, run_id: str, *, limit: int, ttl: float) -> bool:
        """See :meth:`ConcurrencySlots.acquire_slot`."""
        slots = concurrency_slots
        mine_where = (slots.c.group_name == group) & (slots.c.run_id == run_id)
        with self.engine.begin() as conn:
            now = self._group(conn, group)
            mine = conn.execute(select(slots.c.queued, slots.c.seq)
                                .where(mine_where)).first()
            if mine is not None and not mine[0]:
                conn.execute(update(slots).where(mine_where).values(expires_at=now + ttl))
                return True
            counted = select(func.count()).select_from(slots).where(slots.c.group_name == group)
            free = limit - int(conn.execute(counted.where(~slots.c.queued)).scalar_one())
            queued = counted.where(slots.c.queued)
            if mine is not None:
                queued = queued.where(slots.c.seq < mine[1])
            ahead = int(conn.execute(queued).scalar_one())
            granted = free > 0 and ahead < free
            expires = now + (ttl if granted else 2 * ttl)
            if mine is not None:
                conn.execute(update(slots).where(mine_where).values(
                    queued=not granted, expires_at=expires))
            else:
                conn.execute(slots.insert().values(group_name=group, run_id=run_id,
                                                   queued=not granted, seq=now,
                                                   expires_at=expires))
            return granted

    def release_slot(self, group: str, run_id: str, *, limit: int) -> list[str]:
        """See :meth:`ConcurrencySlots.release_slot`."""
        slots = concurrency_slots
        with self.engine.begin() as conn:
            self._group(conn, group)
            conn.execute(delete(slots).where(slots.c.group_name == group,
                                             slots.c.run_id == run_id))
            held = conn.execute(select(func.count()).select_from(slots).where(
                slots.c.group_name == group, ~slots.c.queued)).scalar_one()
            free = limit - int(held)
            if free <= 0:
                return []
            return [str(r) for r in conn.execute(
                select(slots.c.run_id).where(slots.c.group_name == group, slots.c.queued)
                .order_by(slots.c.seq, slots.c.run_id).limit(free)).scalars()]

    def renew_slots(self, slots_: Mapping[str, Sequence[str]], ttl: float) -> None:
        """See :meth:`ConcurrencySlots.renew_slots`: one UPDATE per group."""
        slots = concurrency_slots
        with self.engine.begin() as conn:
            for group, run_ids in slots_.items():
                if run_ids:
                    conn.execute(update(slots).where(
                        slots.c.group_name == group, slots.c.run_id.in_(list(run_ids)),
                        ~slots.c.queued, slots.c.expires_at > self.sql.now)
                        .values(expires_at=self.sql.later(ttl)))
