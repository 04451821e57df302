"""Wait tokens of :class:`~celery_durable.stores.memory.MemoryStore`: a dict under its lock."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence

from .tokens import TokenOutcome, WaitTokenRecord, completion


class MemoryTokens:
    """``WaitTokens`` for the in-process store (mixed into MemoryStore)."""

    _lock: threading.RLock

    def _init_tokens(self) -> None:
        """The token state (called by ``MemoryStore.__init__``)."""
        self._tokens: dict[str, WaitTokenRecord] = {}

    def _forget_tokens(self, run_id: str) -> None:
        """Drop the tokens of a run that is purged or replaced."""
        with self._lock:
            for token_id in [i for i, t in self._tokens.items() if t.run_id == run_id]:
                del self._tokens[token_id]

    def _read(self, record: WaitTokenRecord | None, now: float) -> WaitTokenRecord | None:
        if record is None:
            return None
        out = copy.deepcopy(record)
        out.now = now
        return out

    def create_wait_token(self, token_id: str, run_id: str, *, timeout: float | None,
                          tags: Sequence[str] = ()) -> WaitTokenRecord:
        """See :meth:`WaitTokens.create_wait_token`."""
        now = time.time()
        with self._lock:
            record = self._tokens.get(token_id)
            if record is None:
                record = self._tokens[token_id] = WaitTokenRecord(
                    token_id, run_id, now, None if timeout is None else now + timeout,
                    tags=list(tags))
            created = self._read(record, now)
        assert created is not None
        return created

    def complete_wait_token(self, token_id: str,
                            payload: str) -> tuple[TokenOutcome, WaitTokenRecord | None]:
        """See :meth:`WaitTokens.complete_wait_token`."""
        now = time.time()
        with self._lock:
            record = self._tokens.get(token_id)
            outcome = completion(record, now)
            if outcome == "completed" and record is not None:
                record.completed_at, record.payload = now, payload
            return outcome, self._read(record, now)

    def get_wait_token(self, token_id: str) -> WaitTokenRecord | None:
        """See :meth:`WaitTokens.get_wait_token`."""
        with self._lock:
            return self._read(self._tokens.get(token_id), time.time())

    def list_wait_tokens(self, *, run_id: str | None = None,
                         limit: int = 100) -> list[WaitTokenRecord]:
        """See :meth:`WaitTokens.list_wait_tokens`."""
        now = time.time()
        with self._lock:
            found = [t for t in self._tokens.values() if run_id is None or t.run_id == run_id]
            found.sort(key=lambda t: (t.created_at, t.id), reverse=True)
            return [r for t in found[:limit] if (r := self._read(t, now)) is not None]
