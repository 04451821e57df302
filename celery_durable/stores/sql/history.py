"""The run-history half of ``SqlStore``: history rows, metadata and replay links.

History entries are rows of ``durable_history``, written by the store in the
transaction of the change they record; ``begin`` never reads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.sql.elements import ColumnElement

from ...records import HistoryEntry, readable_history
from ..rowcodec import strings
from .schema import history, runs


class HistoryMixin:
    """``history``, ``set_metadata`` and ``link_replay``."""

    engine: Engine

    # provided by SqlStore
    _holding: Callable[[str, int], ColumnElement[bool]]
    _locked: Callable[[Connection, str], dict[str, Any] | None]

    def history(self, run_id: str) -> list[HistoryEntry]:
        """See :meth:`RunHistory.history`: one query, oldest first."""
        with self.engine.connect() as conn:
            stored = conn.execute(select(history.c.id, history.c.entry)
                                  .where(history.c.run_id == run_id)
                                  .order_by(history.c.id))
            return readable_history(run_id, list(stored))

    def set_metadata(self, run_id: str, token: int, values: Mapping[str, str]) -> bool:
        """See :meth:`RunHistory.set_metadata`: the row locked, the keys merged."""
        decoded = {name: json.loads(text) for name, text in values.items()}
        with self.engine.begin() as conn:
            found = conn.execute(select(runs.c.metadata).where(self._holding(run_id, token))
                                 .with_for_update()).first()
            if found is None:
                return False
            merged = dict(found[0]) if isinstance(found[0], dict) else {}
            merged.update(decoded)
            conn.execute(update(runs).where(runs.c.id == run_id).values(metadata=merged))
            return True

    def link_replay(self, original_id: str, replay_id: str) -> bool:
        """See :meth:`RunHistory.link_replay`."""
        with self.engine.begin() as conn:
            row = self._locked(conn, original_id)
            if row is None:
                return False
            linked = strings(row["replayed_as"])
            if replay_id not in linked:
                conn.execute(update(runs).where(runs.c.id == original_id)
                             .values(replayed_as=[*linked, replay_id]))
            return True
