"""The wait-token half of ``DjangoStore``: :class:`~celery_durable_django.models.WaitToken` rows.

Creation inserts the row unless it exists, its times from the database's clock;
completion locks the row with that clock read in the same statement
(:func:`.clock.locked`) and applies :func:`celery_durable.stores.tokens.completion`,
so of concurrent completions exactly one wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from celery_durable.stores.tokens import TokenOutcome, WaitTokenRecord, completion

from ..models import WaitToken
from . import clock


def _record(row: WaitToken | None, now: float) -> WaitTokenRecord | None:
    if row is None:
        return None
    return WaitTokenRecord(id=row.pk, run_id=row.run_id, created_at=row.created_at,
                           expires_at=row.expires_at, completed_at=row.completed_at,
                           payload=row.payload, tags=list(row.tags or []), now=now)


class TokensMixin:
    """``WaitTokens`` in the Django database."""

    using: str

    def _tokens(self) -> QuerySet[WaitToken]:
        return WaitToken.objects.using(self.using)

    def create_wait_token(self, token_id: str, run_id: str, *, timeout: float | None,
                          tags: Sequence[str] = ()) -> WaitTokenRecord:
        """See :meth:`WaitTokens.create_wait_token`."""
        with transaction.atomic(using=self.using):
            now = clock.read(self.using)
            self._tokens().bulk_create([WaitToken(
                id=token_id, run_id=run_id, created_at=now,
                expires_at=None if timeout is None else now + timeout,
                tags=list(tags))], ignore_conflicts=True)
            row = self._tokens().filter(pk=token_id).first()
        record = _record(row, now)
        assert record is not None  # just created (or found)
        return record

    def complete_wait_token(self, token_id: str,
                            payload: str) -> tuple[TokenOutcome, WaitTokenRecord | None]:
        """See :meth:`WaitTokens.complete_wait_token`: the row locked with the clock."""
        with transaction.atomic(using=self.using):
            row: Any = clock.locked(self._tokens(), token_id)
            now = float(row.store_now) if row is not None else clock.read(self.using)
            record = _record(row, now)
            outcome = completion(record, now)
            if outcome == "completed" and record is not None:
                self._tokens().filter(pk=token_id).update(completed_at=now, payload=payload)
                record.completed_at, record.payload = now, payload
            return outcome, record

    def get_wait_token(self, token_id: str) -> WaitTokenRecord | None:
        """See :meth:`WaitTokens.get_wait_token`."""
        row: Any = self._tokens().filter(pk=token_id).annotate(
            store_now=clock.StoreNow()).first()
        return _record(row, float(row.store_now)) if row is not None else None

    def list_wait_tokens(self, *, run_id: str | None = None,
                         limit: int = 100) -> list[WaitTokenRecord]:
        """See :meth:`WaitTokens.list_wait_tokens`."""
        rows = self._tokens().annotate(store_now=clock.StoreNow()).order_by(
            "-created_at", "-id")
        if run_id is not None:
            rows = rows.filter(run_id=run_id)
        return [r for row in rows[:limit]
                if (r := _record(row, float(row.store_now))) is not None]
