"""The run-control half of ``DjangoStore``: creation, idempotency, children, slots.

* Idempotency keys are :class:`~celery_durable_django.models.IdempotencyKey` rows with a
  unique ``(task, key)`` constraint: of concurrent claims one insert wins and
  every claimer reads the winner's run id.
* A child's notice to its parent locks the parent row, like ``wake``.
* Concurrency slots are :class:`~celery_durable_django.models.ConcurrencySlot` rows; every
  change of a group happens under its :class:`~celery_durable_django.models.ConcurrencyGroup`
  row lock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connections, transaction
from django.db.models import QuerySet
from django.db.models.functions import Now

from celery_durable.records import NewRun, RunRecord, RunStatus, StepRecord, WaitInfo
from celery_durable.stores.base import ParkOutcome
from celery_durable.stores.rowcodec import wait_fields

from ..models import ConcurrencyGroup, ConcurrencySlot, IdempotencyKey, Run, RunTag, Step
from . import clock, rows


class ControlsMixin:
    """``create_runs``, ``get_runs``, idempotency keys, child notices and concurrency slots."""

    using: str

    # provided by DjangoStore
    def _runs(self) -> QuerySet[Run]: ...  # pragma: no cover
    def _holding(self, run_id: str, token: int) -> QuerySet[Run]: ...  # pragma: no cover
    def _locked(self, run_id: str) -> Run | None: ...  # pragma: no cover
    def _write_step(self, run_id: str, step: StepRecord,
                    now: float | None = None) -> None: ...  # pragma: no cover
    def _delete(self, ids: list[str]) -> None: ...  # pragma: no cover
    def _snapshot(self, run: Run) -> RunRecord: ...  # pragma: no cover

    def create_runs(self, runs: Sequence[NewRun], *, grace: float,
                    replace_finished: bool = False) -> list[bool]:
        """See :meth:`CheckpointStore.create_runs`: one INSERT … ON CONFLICT DO NOTHING.

        Concurrent creators of one run are told ``True`` exactly once on
        PostgreSQL and SQLite (the database says which rows the statement
        inserted). A backend without ``RETURNING`` reads first, so two
        concurrent creators may both be told ``True`` there (the run's message
        is then sent twice; the lease keeps it from running twice).
        """
        if not runs:
            return []
        with transaction.atomic(using=self.using):
            now = clock.read(self.using)
            stamp = rows.to_datetime(now)
            fresh = [Run(id=new.id, task=new.task, args=new.args, kwargs=new.kwargs,
                         options=dict(new.options), status=RunStatus.PENDING.value,
                         created_at=stamp, updated_at=stamp, due_at=now + grace,
                         parent=new.parent, idempotency_key=new.idempotency_key,
                         tags=list(new.tags), version=new.version, replay_of=new.replay_of)
                     for new in runs]
            if replace_finished:  # a task id used again: the finished run makes way
                finished = [r.value for r in RunStatus if r.finished]
                self._delete(list(self._runs().select_for_update()
                                  .filter(pk__in=[r.id for r in fresh], status__in=finished)
                                  .values_list("id", flat=True)))
            inserted = rows.insert_new_runs(connections[self.using], fresh)
            if inserted is None:  # no RETURNING here: read first (not exact under a race)
                existing = set(self._runs().filter(pk__in=[r.id for r in fresh])
                               .values_list("id", flat=True))
                self._runs().bulk_create([r for r in fresh if r.id not in existing],
                                         ignore_conflicts=True)
                inserted = {r.id for r in fresh} - existing
            made = [new for new in runs if new.id in inserted]
            RunTag.objects.using(self.using).bulk_create(
                [tag for new in made for tag in rows.tag_rows(new.id, new.tags, stamp)])
            Step.objects.using(self.using).bulk_create(
                [rows.step_row(new.id, step) for new in made for step in new.steps])
        return [new.id in inserted for new in runs]

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord | None]:
        """See :meth:`CheckpointStore.get_runs`: one query."""
        found = {r.pk: rows.run_record(r) for r in self._runs().filter(pk__in=list(run_ids))}
        return [found.get(run_id) for run_id in run_ids]

    def claim_idempotency_key(self, task: str, key: str, run_id: str, *, ttl: float) -> str:
        """See :meth:`CheckpointStore.claim_idempotency_key`: the unique constraint decides."""
        keys = IdempotencyKey.objects.using(self.using)
        with transaction.atomic(using=self.using):
            now = clock.read(self.using)
            keys.filter(task=task, key=key, expires_at__lte=now).delete()
            keys.bulk_create([IdempotencyKey(task=task, key=key, run_id=run_id,
                                             expires_at=now + ttl)], ignore_conflicts=True)
            return str(keys.filter(task=task, key=key).values_list("run_id", flat=True)[0])

    def purge_idempotency_keys(self, *, expired_before: float, limit: int = 1000) -> int:
        """See :meth:`CheckpointStore.purge_idempotency_keys`: one indexed batch."""
        keys = IdempotencyKey.objects.using(self.using)
        with transaction.atomic(using=self.using):
            ids = list(keys.filter(expires_at__lte=expired_before)
                       .values_list("pk", flat=True)[:limit])
            if ids:
                keys.filter(pk__in=ids, expires_at__lte=expired_before).delete()
        return len(ids)

    def notify_parent(self, parent_id: str, *, grace: float) -> RunRecord | None:
        """See :meth:`CheckpointStore.notify_parent`."""
        with transaction.atomic(using=self.using):
            run = self._locked(parent_id)
            if run is None or rows.STATUS_BY_VALUE.get(run.status, RunStatus.FAILED).finished:
                return None
            run.children_done += 1
            if (run.status == RunStatus.WAITING.value and run.wait_kind == "children"
                    and run.wait_resolution is None
                    and run.children_done >= run.children_needed):
                now = run.store_now
                run.wait_resolution = json.dumps({"how": "child", "wid": run.wait_id})
                run.status, run.not_before, run.due_at = RunStatus.PENDING.value, None, now + grace
                run.updated_at = rows.to_datetime(now)
                run.save(using=self.using, update_fields=[
                    "wait_resolution", "status", "not_before", "due_at", "updated_at",
                    "children_done"])
                return self._snapshot(run)
            run.save(using=self.using, update_fields=["children_done"])
            return None

    def suspend_children(self, run_id: str, token: int, *, wait: WaitInfo, recheck: float,
                         need: int, step: StepRecord | None = None) -> ParkOutcome:
        """See :meth:`CheckpointStore.suspend_children`."""
        with transaction.atomic(using=self.using):
            run = self._holding(run_id, token).select_for_update().first()
            if run is None:
                return "lost"
            if step is not None:
                self._write_step(run_id, step)
            if run.children_done >= need:
                return "notice"
            fields: dict[str, Any] = {
                "status": RunStatus.WAITING.value, "owner": "", "lease_expires": None,
                "not_before": None, "due_at": clock.later(recheck), "updated_at": Now(),
                "children_needed": need, **wait_fields(wait)}
            if step is not None:
                fields.update(current_step=step.key, attempts=step.attempts)
            self._holding(run_id, token).update(**fields)
            return "parked"

    # -- concurrency slots ---------------------------------------------------------------

    def _group(self, name: str) -> tuple[ConcurrencyGroup, QuerySet[ConcurrencySlot], float]:
        """The locked group row (created if missing), its live entries and the database's
        clock, read with the lock (in a transaction)."""
        groups = ConcurrencyGroup.objects.using(self.using)
        group = groups.select_for_update().filter(name=name).annotate(
            store_now=clock.StoreNow()).first()
        if group is None:
            groups.bulk_create([ConcurrencyGroup(name=name)], ignore_conflicts=True)
            group = groups.select_for_update().annotate(store_now=clock.StoreNow()).get(
                name=name)
        now = float(group.store_now)
        entries = ConcurrencySlot.objects.using(self.using).filter(group=group)
        entries.filter(expires_at__lte=now).delete()
        return group, entries, now

    def acquire_slot(self, group: str, run_id: str, *, limit: int, ttl: float) -> bool:
        """See :meth:`CheckpointStore.acquire_slot`."""
        with transaction.atomic(using=self.using):
            row, entries, now = self._group(group)
            mine = entries.filter(run_id=run_id).first()
            if mine is not None and not mine.queued:
                entries.filter(pk=mine.pk).update(expires_at=now + ttl)
                return True
            free = limit - entries.filter(queued=False).count()
            queued = entries.filter(queued=True)
            ahead = (queued.filter(seq__lt=mine.seq).count() if mine is not None
                     else queued.count())
            if free > 0 and ahead < free:
                if mine is not None:
                    entries.filter(pk=mine.pk).update(queued=False, expires_at=now + ttl)
                else:
                    ConcurrencySlot.objects.using(self.using).create(
                        group=row, run_id=run_id, queued=False, seq=now, expires_at=now + ttl)
                return True
            if mine is not None:
                entries.filter(pk=mine.pk).update(expires_at=now + 2 * ttl)
            else:
                ConcurrencySlot.objects.using(self.using).create(
                    group=row, run_id=run_id, queued=True, seq=now, expires_at=now + 2 * ttl)
            return False

    def release_slot(self, group: str, run_id: str, *, limit: int) -> list[str]:
        """See :meth:`CheckpointStore.release_slot`."""
        with transaction.atomic(using=self.using):
            _, entries, _ = self._group(group)
            entries.filter(run_id=run_id).delete()
            free = limit - entries.filter(queued=False).count()
            if free <= 0:
                return []
            return list(entries.filter(queued=True).order_by("seq", "id")
                        .values_list("run_id", flat=True)[:free])

    def renew_slots(self, slots: Mapping[str, Sequence[str]], ttl: float) -> None:
        """See :meth:`CheckpointStore.renew_slots`: one UPDATE per group."""
        for group, run_ids in slots.items():
            if run_ids:
                ConcurrencySlot.objects.using(self.using).filter(
                    group__name=group, run_id__in=list(run_ids), queued=False,
                    expires_at__gt=clock.StoreNow()).update(expires_at=clock.later(ttl))
