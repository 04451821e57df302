"""The durable-wait half of ``DjangoStore``: timers, event mailboxes, first-write-wins delivery.

A run's wait lives in its ``wait_*`` columns. Each event name and key has a
:class:`~celery_durable_django.models.Mailbox` row; ``register_waiter`` and
``post_event`` both lock it (``SELECT … FOR UPDATE``), so whichever of the
two comes second sees the other's write, as the contract requires. Delivery
and ``wake`` lock the run row and write the resolution only if there is none
yet: first write wins.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Now

from celery_durable.records import (
    EventRecord,
    HistoryEntry,
    RunRecord,
    RunStatus,
    StepRecord,
    WaitInfo,
)
from celery_durable.stores import transitions
from celery_durable.stores.rowcodec import wait_fields

from ..models import Event, Mailbox, Run, Waiter
from . import clock, rows

_PARKED = (RunStatus.SLEEPING.value, RunStatus.WAITING.value)


class WaitsMixin:
    """``suspend``, mailboxes, ``deliver_event`` and ``wake`` on the Django database."""

    using: str

    # provided by DjangoStore
    def _holding(self, run_id: str, token: int) -> QuerySet[Run]: ...  # pragma: no cover
    def _locked(self, run_id: str) -> Run | None: ...  # pragma: no cover
    def _note(self, run_id: str, entry: HistoryEntry | None) -> None: ...  # pragma: no cover
    def _park_row(self, run_id: str, token: int, fields: dict[str, Any],
                  step: StepRecord | None) -> bool: ...  # pragma: no cover
    def _snapshot(self, run: Run) -> RunRecord: ...  # pragma: no cover

    def suspend(self, run_id: str, token: int, *, status: RunStatus, wait: WaitInfo,
                step: StepRecord | None = None) -> bool:
        """See :meth:`CheckpointStore.suspend`."""
        fields: dict[str, Any] = {
            "status": status.value, "owner": "", "lease_expires": None,
            "not_before": wait.until, "due_at": wait.until,
            "updated_at": Now(), **wait_fields(wait)}
        return self._park_row(run_id, token, fields, step)

    def _mailbox(self, name: str, key: str) -> tuple[Mailbox, float]:
        """The locked mailbox row of ``(name, key)`` (created if missing) and the database's
        clock, read with the lock (in a transaction)."""
        boxes = Mailbox.objects.using(self.using).annotate(store_now=clock.StoreNow())
        box = boxes.select_for_update().filter(name=name, key=key).first()
        if box is None:
            Mailbox.objects.using(self.using).bulk_create([Mailbox(name=name, key=key)],
                                                          ignore_conflicts=True)
            box = boxes.select_for_update().get(name=name, key=key)
        return box, float(box.store_now)

    @staticmethod
    def _record(box: Mailbox, event: Event) -> EventRecord:
        return EventRecord(event.event_id, box.name, box.key, event.payload, event.seq,
                           event.sent_at)

    def register_waiter(self, run_id: str, name: str, key: str, *, after: int,
                        buffer: float) -> EventRecord | None:
        """See :meth:`CheckpointStore.register_waiter`."""
        with transaction.atomic(using=self.using):
            box, now = self._mailbox(name, key)
            oldest = int((now - buffer) * 1_000_000)
            Waiter.objects.using(self.using).bulk_create(
                [Waiter(mailbox=box, run_id=run_id)], ignore_conflicts=True)
            event = (Event.objects.using(self.using)
                     .filter(mailbox=box, seq__gt=max(after, oldest - 1))
                     .order_by("seq").first())
            return self._record(box, event) if event is not None else None

    def unregister_waiter(self, run_id: str, name: str, key: str) -> None:
        """See :meth:`CheckpointStore.unregister_waiter`."""
        Waiter.objects.using(self.using).filter(
            mailbox__name=name, mailbox__key=key, run_id=run_id).delete()

    def post_event(self, name: str, key: str, payload: str, *,
                   buffer: float) -> tuple[EventRecord, list[str]]:
        """See :meth:`CheckpointStore.post_event`."""
        events = Event.objects.using(self.using)
        with transaction.atomic(using=self.using):
            box, now = self._mailbox(name, key)
            seq = max(int(now * 1_000_000), box.last_seq + 1)
            box.last_seq = seq
            box.save(using=self.using, update_fields=["last_seq"])
            events.filter(mailbox=box, seq__lt=int((now - buffer) * 1_000_000)).delete()
            event = Event(mailbox=box, seq=seq, event_id=uuid.uuid4().hex, payload=payload,
                          sent_at=now)
            if buffer > 0:
                event.save(using=self.using)
            waiters = sorted(Waiter.objects.using(self.using).filter(mailbox=box)
                             .values_list("run_id", flat=True))
            return self._record(box, event), waiters

    def deliver_event(self, event: EventRecord, run_ids: Sequence[str], *,
                      grace: float) -> list[RunRecord]:
        """See :meth:`CheckpointStore.deliver_event`."""
        out = []
        for run_id in run_ids:
            with transaction.atomic(using=self.using):
                run = self._locked(run_id)
                if run is None or rows.STATUS_BY_VALUE.get(run.status, RunStatus.FAILED).finished:
                    self.unregister_waiter(run_id, event.name, event.key)
                    continue
                if (run.status != RunStatus.WAITING.value or run.wait_kind != "event"
                        or run.wait_event != event.name or run.wait_key != event.key
                        or run.wait_resolution is not None or event.seq <= run.wait_after):
                    continue
                run.wait_resolution = json.dumps({
                    "how": "event", "wid": run.wait_id, "id": event.id, "seq": event.seq,
                    "payload": event.payload})
                out.append(self._resume(run, grace))
        return out

    def _resume(self, run: Run, grace: float) -> RunRecord:
        """PENDING, due in ``grace`` s should its publish be lost (``run`` came locked, with
        the database's clock)."""
        now = run.store_now
        run.status, run.not_before, run.due_at = RunStatus.PENDING.value, None, now + grace
        run.updated_at = rows.to_datetime(now)
        run.save(using=self.using, update_fields=[
            "wait_resolution", "status", "not_before", "due_at", "updated_at"])
        return self._snapshot(run)

    def wake(self, run_id: str, *, grace: float) -> RunRecord | None:
        """See :meth:`CheckpointStore.wake`."""
        with transaction.atomic(using=self.using):
            run = self._locked(run_id)
            if (run is None or run.status not in _PARKED or not run.wait_kind
                    or run.wait_resolution is not None):
                return None
            run.wait_resolution = json.dumps({"how": "woken", "wid": run.wait_id})
            self._note(run_id, HistoryEntry("wake", run.store_now, detail=transitions.wake_note(
                RunStatus(run.status))))
            return self._resume(run, grace)
