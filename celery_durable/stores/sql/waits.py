"""The durable-wait half of ``SqlStore``: timers, event mailboxes, first-write-wins delivery.

A run's wait lives in its ``wait_*`` columns. Each event name and key has a
``durable_mailboxes`` row; ``register_waiter`` and ``post_event`` both lock it,
so whichever of the two comes second sees the other's write, as the contract
requires. Delivery and ``wake`` lock the run row and write the resolution
only if there is none yet: first write wins.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from ...records import EventRecord, HistoryEntry, RunRecord, RunStatus, StepRecord, WaitInfo
from .. import transitions
from ..rowcodec import STATUS_BY_VALUE, wait_fields
from .schema import events, mailboxes, waiters
from .statements import Statements

_PARKED = (RunStatus.SLEEPING.value, RunStatus.WAITING.value)
Row = dict[str, Any]


class WaitsMixin:
    """``suspend``, mailboxes, ``deliver_event`` and ``wake`` on the SQL database."""

    engine: Engine
    sql: Statements

    # provided by SqlStore
    _locked: Callable[[Connection, str], Row | None]
    _note: Callable[[Connection, str, HistoryEntry | None], None]
    _park_row: Callable[[str, int, Row, StepRecord | None], bool]
    _snapshot: Callable[[Connection, Row], RunRecord]
    _update: Callable[[Connection, Row, Row], None]

    def suspend(self, run_id: str, token: int, *, status: RunStatus, wait: WaitInfo,
                step: StepRecord | None = None) -> bool:
        """See :meth:`Waits.suspend`."""
        values: Row = {"status": status.value, "owner": "", "lease_expires": None,
                       "not_before": wait.until, "due_at": wait.until,
                       "updated_at": self.sql.now, **wait_fields(wait)}
        return self._park_row(run_id, token, values, step)

    def _mailbox(self, conn: Connection, name: str, key: str) -> tuple[Row, float]:
        """The locked mailbox row of ``(name, key)`` (created if missing) and the database's
        clock, read with the lock."""
        query = (select(mailboxes, self.sql.now.label("store_now"))
                 .where(mailboxes.c.name == name, mailboxes.c.key == key).with_for_update())
        box = conn.execute(query).mappings().first()
        if box is None:
            self.sql.insert_missing(conn, mailboxes, [{"name": name, "key": key,
                                                       "last_seq": 0}])
            box = conn.execute(query).mappings().one()
        return dict(box), float(box["store_now"])

    @staticmethod
    def _record(box: Row, event: Row) -> EventRecord:
        return EventRecord(event["event_id"], box["name"], box["key"], event["payload"],
                           event["seq"], event["sent_at"])

    def register_waiter(self, run_id: str, name: str, key: str, *, after: int,
                        buffer: float) -> EventRecord | None:
        """See :meth:`Waits.register_waiter`."""
        with self.engine.begin() as conn:
            box, now = self._mailbox(conn, name, key)
            oldest = int((now - buffer) * 1_000_000)
            self.sql.insert_missing(conn, waiters, [{"mailbox_id": box["id"],
                                                     "run_id": run_id}])
            event = conn.execute(select(events).where(
                events.c.mailbox_id == box["id"], events.c.seq > max(after, oldest - 1))
                .order_by(events.c.seq).limit(1)).mappings().first()
            return self._record(box, dict(event)) if event is not None else None

    def unregister_waiter(self, run_id: str, name: str, key: str) -> None:
        """See :meth:`Waits.unregister_waiter`."""
        with self.engine.begin() as conn:
            self._unregister(conn, run_id, name, key)

    @staticmethod
    def _unregister(conn: Connection, run_id: str, name: str, key: str) -> None:
        box = select(mailboxes.c.id).where(mailboxes.c.name == name, mailboxes.c.key == key)
        conn.execute(delete(waiters).where(waiters.c.run_id == run_id,
                                           waiters.c.mailbox_id.in_(box.scalar_subquery())))

    def post_event(self, name: str, key: str, payload: str, *,
                   buffer: float) -> tuple[EventRecord, list[str]]:
        """See :meth:`Waits.post_event`."""
        with self.engine.begin() as conn:
            box, now = self._mailbox(conn, name, key)
            seq = max(int(now * 1_000_000), box["last_seq"] + 1)
            conn.execute(update(mailboxes).where(mailboxes.c.id == box["id"])
                         .values(last_seq=seq))
            conn.execute(delete(events).where(events.c.mailbox_id == box["id"],
                                              events.c.seq < int((now - buffer) * 1_000_000)))
            event: Row = {"mailbox_id": box["id"], "seq": seq, "event_id": uuid.uuid4().hex,
                          "payload": payload, "sent_at": now}
            if buffer > 0:
                conn.execute(events.insert().values(event))
            found = sorted(str(r) for r in conn.execute(
                select(waiters.c.run_id).where(waiters.c.mailbox_id == box["id"])).scalars())
            return self._record(box, event), found

    def deliver_event(self, event: EventRecord, run_ids: Sequence[str], *,
                      grace: float) -> list[RunRecord]:
        """See :meth:`Waits.deliver_event`."""
        out = []
        for run_id in run_ids:
            with self.engine.begin() as conn:
                row = self._locked(conn, run_id)
                if row is None or STATUS_BY_VALUE.get(row["status"], RunStatus.FAILED).finished:
                    self._unregister(conn, run_id, event.name, event.key)
                    continue
                if (row["status"] != RunStatus.WAITING.value or row["wait_kind"] != "event"
                        or row["wait_event"] != event.name or row["wait_key"] != event.key
                        or row["wait_resolution"] is not None
                        or event.seq <= row["wait_after"]):
                    continue
                out.append(self._resume(conn, row, grace, {
                    "how": "event", "wid": row["wait_id"], "id": event.id, "seq": event.seq,
                    "payload": event.payload}))
        return out

    def _resume(self, conn: Connection, row: Row, grace: float,
                resolution: dict[str, Any], **also: Any) -> RunRecord:
        """Resolve the wait with ``resolution``: PENDING, due in ``grace`` s should its
        publish be lost (``row`` came locked, with the database's clock)."""
        now = row["store_now"]
        self._update(conn, row, {"wait_resolution": json.dumps(resolution),
                                 "status": RunStatus.PENDING.value, "not_before": None,
                                 "due_at": now + grace, "updated_at": now, **also})
        return self._snapshot(conn, row)

    def wake(self, run_id: str, *, grace: float) -> RunRecord | None:
        """See :meth:`Waits.wake`."""
        with self.engine.begin() as conn:
            row = self._locked(conn, run_id)
            if (row is None or row["status"] not in _PARKED or not row["wait_kind"]
                    or row["wait_resolution"] is not None):
                return None
            self._note(conn, run_id, HistoryEntry(
                "wake", row["store_now"], detail=transitions.wake_note(RunStatus(row["status"]))))
            return self._resume(conn, row, grace, {"how": "woken", "wid": row["wait_id"]})
