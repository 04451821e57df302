"""The run-history half of ``DjangoStore``: history rows, metadata and replay links.

History entries are :class:`~celery_durable_django.models.HistoryRow` rows, written
by the store in the transaction of the change they record (a failed attempt, a
recovery, a retry, a cancel, a wake); ``begin`` never reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from django.db import transaction
from django.db.models import QuerySet

from celery_durable.records import HistoryEntry, readable_history

from ..models import HistoryRow, Run
from . import rows
from ._connection import db_call


class HistoryMixin:
    """``history``, ``set_metadata``, ``link_replay`` and the ``_note`` the store writes with."""

    using: str

    # provided by DjangoStore
    def _runs(self) -> QuerySet[Run]: ...  # pragma: no cover
    def _holding(self, run_id: str, token: int) -> QuerySet[Run]: ...  # pragma: no cover

    def _note(self, run_id: str, entry: HistoryEntry | None) -> None:
        """Append ``entry`` to the run's history (in the caller's transaction)."""
        if entry is not None:
            HistoryRow.objects.using(self.using).bulk_create([rows.history_row(run_id, entry)])

    @db_call
    def history(self, run_id: str) -> list[HistoryEntry]:
        """See :meth:`RunHistory.history`: one query, oldest first."""
        return readable_history(run_id, HistoryRow.objects.using(self.using).filter(
            run_id=run_id).order_by("id").values_list("pk", "entry"))

    @db_call
    def set_metadata(self, run_id: str, token: int, values: Mapping[str, str]) -> bool:
        """See :meth:`RunHistory.set_metadata`: the row locked, the keys merged."""
        decoded = {name: json.loads(text) for name, text in values.items()}
        with transaction.atomic(using=self.using):
            run = self._holding(run_id, token).select_for_update().only("metadata").first()
            if run is None:
                return False
            merged = dict(run.metadata) if isinstance(run.metadata, dict) else {}
            merged.update(decoded)
            return bool(self._holding(run_id, token).update(metadata=merged))

    @db_call
    def link_replay(self, original_id: str, replay_id: str) -> bool:
        """See :meth:`RunHistory.link_replay`."""
        with transaction.atomic(using=self.using):
            run = self._runs().select_for_update().filter(pk=original_id).only(
                "replayed_as").first()
            if run is None:
                return False
            linked = [str(v) for v in run.replayed_as] if isinstance(run.replayed_as,
                                                                     list) else []
            if replay_id not in linked:
                self._runs().filter(pk=original_id).update(replayed_as=[*linked, replay_id])
            return True
