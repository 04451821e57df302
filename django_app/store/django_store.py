"""``DjangoStore``: the checkpoint store contract on the Django database.

Runs are :class:`~celery_durable_django.models.Run` rows, checkpoints
:class:`~celery_durable_django.models.Step` rows. Every decision a method makes (take
the lease, count a recovery, dead-letter, claim a due run) happens in one
transaction holding the run's row lock (``SELECT … FOR UPDATE``; SQLite
serialises writers itself). A checkpoint written under the lease is one
statement on PostgreSQL (prepared, with psycopg 3) and SQLite (one short
transaction elsewhere); it does not update the run row, so it costs about one
plain INSERT. Loading a run's
checkpoints is one query. The run's changelist columns (``current_step``,
``attempts``) are refreshed when a delivery starts, parks or finishes.
Every time that decides (lease expiry, due and wake times, retention) is the
database's clock, read in the statement that uses it (see :mod:`.clock`).

Works on PostgreSQL and SQLite (give SQLite ``"transaction_mode":
"IMMEDIATE"`` in ``OPTIONS`` when several workers share the file).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.db.models import F as Col
from django.db.models import Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Now

from celery_durable.errors import InvalidRunStateError, StoreUnavailableError
from celery_durable.records import (
    Begin,
    Claim,
    ErrorInfo,
    HistoryEntry,
    RetryInfo,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    failed_attempt,
)
from celery_durable.stores import rowcodec, transitions
from celery_durable.stores.atomic import AtomicSteps
from celery_durable.stores.base import (
    CheckpointStore,
    ChildRuns,
    ConcurrencySlots,
    IdempotencyKeys,
    Retention,
    RunHistory,
    Waits,
    WaitTokens,
)

from ..models import HistoryRow, Run, RunTag, Step, WaitToken
from . import clock, rows
from ._connection import db_call
from ._event_loop import off_the_loop
from .atomic import AtomicMixin
from .controls import ControlsMixin
from .history import HistoryMixin
from .tokens import TokensMixin
from .waits import WaitsMixin

#: Seconds between two purges of expired finished runs (done by ``due_runs``).
PURGE_EVERY = 60.0
PURGE_BATCH = 500




def _control(run: Run) -> transitions.Control:
    """The fields of ``run`` that :mod:`celery_durable.stores.transitions` decides on."""
    return rowcodec.control(vars(run))


@off_the_loop  # async tasks' steps call it from their event loop
class DjangoStore(HistoryMixin, ControlsMixin, WaitsMixin, TokensMixin, AtomicMixin,
                  CheckpointStore, Waits, ChildRuns, IdempotencyKeys, ConcurrencySlots, Retention,
                  RunHistory, WaitTokens, AtomicSteps):
    """Durable runs in the Django database (``using`` names the alias; default: the router's)."""

    def __init__(self, using: str | None = None) -> None:
        self._using = using
        self._last_purge = -PURGE_EVERY  # (monotonic) purge at the first sweep

    @property
    def using(self) -> str:
        """The database alias the store reads and writes."""
        if self._using is None:
            self._using = router.db_for_write(Run) or "default"
        return self._using

    def _runs(self) -> QuerySet[Run]:
        return Run.objects.using(self.using)

    def _steps(self, run_id: str) -> QuerySet[Step]:
        return Step.objects.using(self.using).filter(run_id=run_id)

    def _locked(self, run_id: str) -> Run | None:
        """The row, locked, with ``store_now``: the database's clock, read in the same
        statement (every decision below is taken at that time)."""
        run: Run | None = clock.locked(self._runs(), run_id)
        return run

    def _holding(self, run_id: str, token: int) -> QuerySet[Run]:
        return self._runs().filter(pk=run_id, token=token).exclude(owner="")

    def _snapshot(self, run: Run) -> RunRecord:
        """The run with its checkpoints: one query for all of them."""
        return rows.run_record(run, rows.step_records(self.using, run.pk))

    @db_call
    def ping(self) -> None:
        """Raise StoreUnavailableError if the database or the app's tables are missing."""
        try:
            with connections[self.using].cursor() as cursor:
                cursor.execute(f"SELECT 1 FROM {Run._meta.db_table} WHERE 1 = 0")
        except DatabaseError as exc:
            raise StoreUnavailableError(
                f"Django store unusable (database {self.using!r}): {exc}; is the database "
                "reachable and has `manage.py migrate` been run?") from exc

    @db_call
    def begin(self, run_id: str, *, task: str, args: str, kwargs: str,
              options: Mapping[str, object], owner: str, lease_ttl: float,
              max_recoveries: int = 5, steal_from: str | None = None,
              tags: Sequence[str] = (), version: str | None = None) -> Begin:
        """See :meth:`CheckpointStore.begin`."""
        with transaction.atomic(using=self.using):
            run = self._locked(run_id)
            if run is not None and run.expires_at is not None and run.expires_at <= run.store_now:
                self._delete([run_id])  # past its retention: as good as gone
                run = None
            if run is None:
                stamp = rows.to_datetime(clock.read(self.using))
                ikey = options.get("idempotency_key")
                self._runs().bulk_create([Run(
                    id=run_id, task=task, args=args, kwargs=kwargs, options=dict(options),
                    status=RunStatus.PENDING.value, created_at=stamp, updated_at=stamp,
                    idempotency_key=str(ikey) if ikey else None, tags=list(tags),
                    version=version)], ignore_conflicts=True)
                run = self._locked(run_id)
                assert run is not None
                RunTag.objects.using(self.using).bulk_create(
                    rows.tag_rows(run_id, run.tags or [], run.created_at),
                    ignore_conflicts=True)
            elif (filled := transitions.merged_options(run.options or {}, options)) is not None:
                run.options = filled  # created before its first delivery (saved below)
            now = run.store_now
            if (bad := rows.unreadable_field(run)) is not None:
                self._dead_letter_corrupt(run, bad, now)
                return Begin("dead", self._snapshot(run))
            control = _control(run)
            outcome, changes = transitions.begin(
                control, now=now, owner=owner, lease_ttl=lease_ttl,
                max_recoveries=max_recoveries, steal_from=steal_from)
            self._note(run_id, transitions.recovery(control, changes, now=now, by="delivery"))
            if outcome in ("finished", "early", "busy"):
                return Begin(outcome, self._snapshot(run))
            if outcome == "dead":
                self._save(run, changes)
                return Begin("dead", self._snapshot(run))
            checkpoints = rows.checkpoints(self.using, run_id)
            run.current_step, run.attempts = checkpoints.last_step()
            self._save(run, changes, "current_step", "attempts", "options")
            return Begin("acquired", rows.run_record(run), run.token, checkpoints)

    def _dead_letter_corrupt(self, run: Run, field: str, now: float) -> None:
        """FAILED, naming the unreadable ``field`` (:func:`.transitions.unreadable`)."""
        self._save(run, transitions.unreadable(run.token, field, getattr(run, field), now=now))

    def _save(self, run: Run, changes: transitions.Changes, *also: str) -> None:
        """Apply a decision of :mod:`celery_durable.stores.transitions` to ``run`` and save it.

        ``also`` names further fields the caller changed on the row.
        """
        fields = list(also)
        for name, value in changes.items():
            if name == "error":
                for column, text in rows.error_fields(value).items():
                    setattr(run, column, text)
                    fields.append(column)
                continue
            if name == "status":
                value = value.value
            elif name in rows.DATETIME_FIELDS:
                value = rows.to_datetime(value)
            setattr(run, name, value)
            fields.append(name)
        run.save(using=self.using, update_fields=fields)

    @db_call
    def save_step(self, run_id: str, token: int, step: StepRecord) -> bool:
        """See :meth:`CheckpointStore.save_step`: one statement (PostgreSQL, SQLite,
        MySQL/MariaDB).

        On PostgreSQL with psycopg 3 the statement is prepared once per
        connection (see :func:`.rows.checkpoint_cursor`).
        """
        if failed_attempt(step):  # rare: the checkpoint and its history entry together
            with transaction.atomic(using=self.using):
                now = (self._holding(run_id, token).select_for_update()
                       .annotate(store_now=clock.StoreNow())
                       .values_list("store_now", flat=True).first())
                if now is None:
                    return False
                self._write_step(run_id, step, float(now))
                return True
        return self.save_step_locking(run_id, token, step, locking=False)

    def save_step_locking(self, run_id: str, token: int, step: StepRecord,
                          locking: bool) -> bool:
        """Write the success ``step`` if ``token`` holds the lease; ``locking``: and keep the
        run's row locked until the caller's transaction ends (a transactional step)."""
        conn = connections[self.using]
        if conn.vendor in ("postgresql", "sqlite", "mysql"):
            with rows.checkpoint_cursor(conn) as cursor:
                cursor.execute(rows.save_step_sql(conn, locking),
                               [run_id, *rows.step_values(step), run_id, token])
                return bool(cursor.rowcount)
        with transaction.atomic(using=self.using):
            if not self._holding(run_id, token).select_for_update().exists():
                return False
            self._upsert(run_id, step)
            return True

    def _upsert(self, run_id: str, step: StepRecord) -> None:
        # MySQL/MariaDB's ON DUPLICATE KEY UPDATE names no conflict target (any unique key).
        target = (["run", "position"] if connections[self.using].features
                  .supports_update_conflicts_with_target else None)
        Step.objects.using(self.using).bulk_create(
            [rows.step_row(run_id, step)], update_conflicts=True,
            unique_fields=target, update_fields=list(rows.STEP_COLUMNS[1:]))

    def _write_step(self, run_id: str, step: StepRecord, now: float | None = None) -> None:
        """Upsert checkpoint ``step`` (under a lease the caller holds, in its transaction);
        a failed attempt also goes to the history, at ``now`` (default: the database's clock).
        """
        self._upsert(run_id, step)
        if failed_attempt(step):
            kept = dataclasses.replace(step, value=None)
            self._note(run_id, HistoryEntry.attempt(
                clock.read(self.using) if now is None else now, kept))

    @db_call
    def park(self, run_id: str, token: int, *, status: RunStatus, delay: float,
             due_in: float, step: StepRecord | None = None, args: str | None = None,
             kwargs: str | None = None,
             options: Mapping[str, object] | None = None) -> bool:
        """See :meth:`CheckpointStore.park`."""
        fields: dict[str, Any] = {
            "status": status.value, "owner": "", "lease_expires": None,
            "not_before": clock.later(delay), "due_at": clock.later(due_in),
            "updated_at": Now()}
        replaced = {"args": args, "kwargs": kwargs,
                    "options": dict(options) if options is not None else None}
        fields.update({name: value for name, value in replaced.items() if value is not None})
        return self._park_row(run_id, token, fields, step)

    def _park_row(self, run_id: str, token: int, fields: dict[str, Any],
                  step: StepRecord | None) -> bool:
        """Under ``token``: update the run row with ``fields`` and write ``step``, atomically.

        Shared by :meth:`park` (retries, slots) and ``suspend`` (waits).
        """
        if step is not None:
            fields.update(current_step=step.key, attempts=step.attempts)
            if step.status is StepStatus.RETRYING:
                fields.update(retries=Col("retries") + 1,
                              retrying=RetryInfo.of(step).to_json())
        with transaction.atomic(using=self.using):
            if not self._holding(run_id, token).update(**fields):
                return False
            if step is not None:
                self._write_step(run_id, step)
            return True

    @db_call
    def finish(self, run_id: str, token: int, *, status: RunStatus,
               result: str | None = None, error: ErrorInfo | None = None,
               failed_step: str | None = None, retention: float = 0) -> bool:
        """See :meth:`CheckpointStore.finish`; expired runs are purged by ``due_runs``."""
        keep = retention > 0 and status is not RunStatus.FAILED
        last = self._steps(run_id).order_by("-position")
        return bool(self._holding(run_id, token).update(
            current_step=Coalesce(Subquery(last.values("key")[:1]), Value("")),
            attempts=Coalesce(Subquery(last.values("attempts")[:1]), Value(0)),
            status=status.value, result=result, failed_step=failed_step, owner="",
            lease_expires=None, due_at=None, not_before=None, finished_at=Now(),
            updated_at=Now(), expires_at=clock.later(retention) if keep else None,
            **rows.error_fields(error)))

    @db_call
    def renew(self, leases: Mapping[str, int], lease_ttl: float) -> set[str]:
        """See :meth:`CheckpointStore.renew`: one transaction for all leases."""
        if not leases:
            return set()
        lost: set[str] = set()
        with transaction.atomic(using=self.using):
            expires = clock.later(lease_ttl)
            for run_id, token in leases.items():
                if not self._holding(run_id, token).update(lease_expires=expires,
                                                           due_at=expires):
                    lost.add(run_id)
        return lost

    @db_call
    def due_runs(self, limit: int = 100) -> list[str]:
        """See :meth:`CheckpointStore.due_runs` (uses the partial index on ``due_at``)."""
        if time.monotonic() - self._last_purge > PURGE_EVERY:
            self._last_purge = time.monotonic()
            self.purge_expired()
        return list(self._runs().filter(due_at__lte=clock.StoreNow()).order_by("due_at")
                    .values_list("id", flat=True)[:limit])

    @db_call
    def claim_due(self, run_id: str, *, grace: float, max_recoveries: int) -> Claim:
        """See :meth:`CheckpointStore.claim_due`."""
        with transaction.atomic(using=self.using):
            run = self._locked(run_id)
            now = run.store_now if run is not None else 0.0
            if run is not None and (bad := rows.unreadable_field(run)) is not None:
                self._dead_letter_corrupt(run, bad, now)
                return Claim("dead", self._snapshot(run))
            control = None if run is None else _control(run)
            action, changes = transitions.claim_due(control, now=now, grace=grace,
                                                    max_recoveries=max_recoveries)
            if run is None or control is None or action == "gone":
                return Claim("gone")
            self._note(run_id, transitions.recovery(control, changes, now=now, by="sweeper"))
            if action == "later":
                if changes["due_at"] != run.due_at:
                    self._save(run, changes)
                return Claim("later", due_at=run.due_at)
            self._save(run, changes)
            return Claim(action, self._snapshot(run))

    @db_call
    def get_run(self, run_id: str) -> RunRecord | None:
        """See :meth:`CheckpointStore.get_run`."""
        run = self._runs().filter(pk=run_id).annotate(store_now=clock.StoreNow()).first()
        if run is None or (run.expires_at is not None and run.expires_at <= run.store_now):
            return None
        return self._snapshot(run)

    @db_call
    def list_runs(self, *, status: RunStatus | None = None, task: str | None = None,
                  tag: str | None = None, version: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        """See :meth:`CheckpointStore.list_runs` (a tag through the RunTag index)."""
        qs = self._runs().filter(Q(expires_at__isnull=True)
                                 | Q(expires_at__gt=clock.StoreNow()))
        if status is not None:
            qs = qs.filter(status=status.value)
        if task is not None:
            qs = qs.filter(task=task)
        if version is not None:
            qs = qs.filter(version=version)
        if tag is not None:
            qs = qs.filter(pk__in=RunTag.objects.using(self.using).filter(tag=tag)
                           .values("run_id"))
        return [rows.run_record(r) for r in qs.order_by("-created_at", "-id")[:limit]]

    @db_call
    def reset_run(self, run_id: str, *, from_start: bool, args: str | None = None,
                  kwargs: str | None = None, grace: float = 300.0,
                  version: str | None = None) -> RunRecord | None:
        """See :meth:`CheckpointStore.reset_run`."""
        with transaction.atomic(using=self.using):
            run = self._locked(run_id)
            if run is None:
                return None
            changes = transitions.reset(run_id, _control(run), now=run.store_now, grace=grace,
                                        args=args, kwargs=kwargs, version=version)
            steps = self._steps(run_id)
            if not from_start:  # transitions.keeps_step: successes survive
                steps = steps.exclude(status=StepStatus.SUCCEEDED.value)
            steps.delete()
            last = self._steps(run_id).order_by("-position").first()
            run.expires_at = None
            run.current_step = last.key if last else ""
            run.attempts = last.attempts if last else 0
            self._save(run, changes, "expires_at", "current_step", "attempts")
            self._note(run_id, HistoryEntry("retry", run.store_now, detail=transitions.reset_note(
                from_start=from_start, new_args=args is not None or kwargs is not None,
                version=version)))
            return self._snapshot(run)

    # -- cancel (see CheckpointStore.cancel) and purging ---------------------------------

    @db_call
    def cancel(self, run_id: str, *, create_missing: bool = False) -> RunRecord | None:
        """Mark a run that has not succeeded CANCELLED and fence out any holder.

        A running delivery loses its lease (its next checkpoint is refused);
        a queued message finds the run finished and is ignored. Returns None
        if the run does not exist (unless ``create_missing``: see
        :meth:`CheckpointStore.cancel`); raises InvalidRunStateError if it
        already succeeded or was cancelled.
        """
        with transaction.atomic(using=self.using):
            run = self._locked(run_id)
            if run is None and create_missing:
                stamp = rows.to_datetime(clock.read(self.using))
                self._runs().bulk_create([Run(
                    id=run_id, task="", status=RunStatus.PENDING.value,
                    created_at=stamp, updated_at=stamp)], ignore_conflicts=True)
                run = self._locked(run_id)
            if run is None:
                return None
            if run.status in (RunStatus.SUCCEEDED.value, RunStatus.CANCELLED.value,
                              RunStatus.REPLACED.value):
                raise InvalidRunStateError(f"run {run_id} is {run.status}; it cannot be "
                                           "cancelled", run_id=run_id)
            run.token += 1
            run.status, run.owner, run.lease_expires = RunStatus.CANCELLED.value, "", None
            run.due_at = run.not_before = run.expires_at = None
            run.finished_at = run.updated_at = rows.to_datetime(run.store_now)
            run.save(using=self.using)
            self._note(run_id, HistoryEntry("cancel", run.store_now,
                                            detail=transitions.CANCEL_NOTE))
            return rows.run_record(run)

    @db_call
    def purge_expired(self, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` finished runs past their retention; return how many."""
        ids = list(self._runs().filter(expires_at__lte=clock.StoreNow())
                   .values_list("id", flat=True)[:limit])
        if ids:
            with transaction.atomic(using=self.using):
                self._delete(ids)
        return len(ids)

    @db_call
    def purge_runs(self, *, finished_before: float, statuses: Collection[RunStatus],
                   limit: int = 1000) -> list[str]:
        """See :meth:`CheckpointStore.purge_runs` (rows locked, re-checked, deleted)."""
        wanted = [RunStatus(s).value for s in statuses]
        with transaction.atomic(using=self.using):
            ids = list(self._runs().select_for_update()
                       .filter(status__in=wanted,
                               finished_at__lt=rows.to_datetime(finished_before))
                       .values_list("id", flat=True)[:limit])
            if ids:
                self._delete(ids)
        return ids

    def _delete(self, ids: list[str]) -> None:
        for model in (Step, HistoryRow, RunTag, WaitToken):
            model.objects.using(self.using).filter(run_id__in=ids).delete()
        self._runs().filter(pk__in=ids).delete()

    def close(self) -> None:
        """Close this thread's connection to the store's database."""
        connections[self.using].close()
