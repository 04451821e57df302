"""The wait-token half of ``SqlStore``: rows of ``durable_wait_tokens`` (schema version 2).

Creation inserts the row unless it exists (the database's clock sets the times);
completion locks the row (``SELECT … FOR UPDATE``) and applies
:func:`celery_durable.stores.tokens.completion` with the clock read in that
statement, so of concurrent completions exactly one wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from ..tokens import TokenOutcome, WaitTokenRecord, completion
from .schema import wait_tokens
from .statements import Statements


def _record(row: Any, now: float) -> WaitTokenRecord | None:
    if row is None:
        return None
    tags = row["tags"]
    return WaitTokenRecord(
        id=row["id"], run_id=row["run_id"], created_at=float(row["created_at"]),
        expires_at=row["expires_at"], completed_at=row["completed_at"],
        payload=row["payload"], tags=list(json.loads(tags) if isinstance(tags, str) else tags),
        now=now)


class TokensMixin:
    """``WaitTokens`` on the SQL database."""

    engine: Engine
    sql: Statements

    # provided by SqlStore
    _read_clock: Callable[[Connection], float]

    def _token_row(self, conn: Connection, token_id: str, *,
                   lock: bool = False) -> tuple[Any, float]:
        query = select(wait_tokens, self.sql.now.label("store_now")).where(
            wait_tokens.c.id == token_id)
        row = conn.execute(query.with_for_update() if lock else query).mappings().first()
        return row, float(row["store_now"]) if row is not None else self._read_clock(conn)

    def create_wait_token(self, token_id: str, run_id: str, *, timeout: float | None,
                          tags: Sequence[str] = ()) -> WaitTokenRecord:
        """See :meth:`WaitTokens.create_wait_token`."""
        with self.engine.begin() as conn:
            now = self._read_clock(conn)
            self.sql.insert_missing(conn, wait_tokens, [{
                "id": token_id, "run_id": run_id, "created_at": now,
                "expires_at": None if timeout is None else now + timeout,
                "completed_at": None, "payload": None, "tags": list(tags)}])
            row, now = self._token_row(conn, token_id)
            record = _record(row, now)
        assert record is not None  # just created (or found)
        return record

    def complete_wait_token(self, token_id: str,
                            payload: str) -> tuple[TokenOutcome, WaitTokenRecord | None]:
        """See :meth:`WaitTokens.complete_wait_token`: the row locked, then decided."""
        with self.engine.begin() as conn:
            row, now = self._token_row(conn, token_id, lock=True)
            record = _record(row, now)
            outcome = completion(record, now)
            if outcome == "completed" and record is not None:
                conn.execute(update(wait_tokens).where(wait_tokens.c.id == token_id)
                             .values(completed_at=now, payload=payload))
                record.completed_at, record.payload = now, payload
            return outcome, record

    def get_wait_token(self, token_id: str) -> WaitTokenRecord | None:
        """See :meth:`WaitTokens.get_wait_token`."""
        with self.engine.connect() as conn:
            return _record(*self._token_row(conn, token_id))

    def list_wait_tokens(self, *, run_id: str | None = None,
                         limit: int = 100) -> list[WaitTokenRecord]:
        """See :meth:`WaitTokens.list_wait_tokens`."""
        query = select(wait_tokens, self.sql.now.label("store_now")).order_by(
            wait_tokens.c.created_at.desc(), wait_tokens.c.id.desc()).limit(limit)
        if run_id is not None:
            query = query.where(wait_tokens.c.run_id == run_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [r for row in rows if (r := _record(row, float(row["store_now"]))) is not None]
