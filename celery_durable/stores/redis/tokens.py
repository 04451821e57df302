"""The wait-token half of the RedisStore.

Key layout (``P`` = the prefix)::

    P token:<id>         hash: run, created, expires, completed, payload, tags (JSON)
    P tokens             sorted set: token id -> creation time (listing)
    P tokens:<run id>    sorted set: that run's tokens

Creation and completion are Lua scripts on the token's one key (times from
``TIME``); the listing indexes are written after them and read through the
hashes, so a token whose hash expired drops out. A token's hash expires
``KEEP`` seconds past its expiry, or past its completion.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..tokens import TokenOutcome, WaitTokenRecord
from ._codec import text

#: Seconds a token is kept past its expiry or its completion (its 409 answers, the admin).
KEEP = 7 * 24 * 3600.0
_OUTCOMES: dict[str, TokenOutcome] = {o: o for o in ("completed", "already", "expired",
                                                      "unknown")}  # type: ignore[misc]


def _number(value: str) -> float | None:
    return float(value) if value else None


def _record(token_id: str, flat: Sequence[Any], now: float) -> WaitTokenRecord | None:
    fields = {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}
    if not fields.get("run"):
        return None
    return WaitTokenRecord(
        id=token_id, run_id=fields["run"], created_at=float(fields.get("created") or 0.0),
        expires_at=_number(fields.get("expires", "")),
        completed_at=_number(fields.get("completed", "")),
        payload=fields.get("payload") if fields.get("completed") else None,
        tags=json.loads(fields.get("tags") or "[]"), now=now)


class RedisTokens:
    """``WaitTokens`` on Redis (mixed into RedisStore)."""

    prefix: str
    client: Any
    _scripts: dict[str, Any]
    clock: Callable[[], float]

    def _token_key(self, token_id: str) -> str:
        return f"{self.prefix}token:{token_id}"

    def create_wait_token(self, token_id: str, run_id: str, *, timeout: float | None,
                          tags: Sequence[str] = ()) -> WaitTokenRecord:
        """See :meth:`WaitTokens.create_wait_token`."""
        reply = self._scripts["CREATE_TOKEN"](
            keys=[self._token_key(token_id)],
            args=[run_id, "" if timeout is None else repr(float(timeout)),
                  json.dumps(list(tags)), KEEP])
        record = _record(token_id, reply[1], float(text(reply[0])))
        assert record is not None  # just created (or found)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(f"{self.prefix}tokens", {token_id: record.created_at})
        pipe.zadd(f"{self.prefix}tokens:{run_id}", {token_id: record.created_at})
        pipe.execute()
        return record

    def complete_wait_token(self, token_id: str,
                            payload: str) -> tuple[TokenOutcome, WaitTokenRecord | None]:
        """See :meth:`WaitTokens.complete_wait_token`: one script on the token's key."""
        reply = self._scripts["COMPLETE_TOKEN"](keys=[self._token_key(token_id)],
                                                args=[payload, KEEP])
        outcome = _OUTCOMES[text(reply[0])]
        return outcome, _record(token_id, reply[2], float(text(reply[1])))

    def get_wait_token(self, token_id: str) -> WaitTokenRecord | None:
        """See :meth:`WaitTokens.get_wait_token`."""
        fields = self.client.hgetall(self._token_key(token_id))
        return _record(token_id, [x for pair in fields.items() for x in pair], self.clock())

    def _forget_tokens(self, run_ids: Sequence[str]) -> None:
        """Drop the tokens of purged runs (their hashes and index entries)."""
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.zrange(f"{self.prefix}tokens:{run_id}", 0, -1)
        owned = pipe.execute()
        gone = [text(t) for ids in owned for t in ids]
        if not gone:
            return
        pipe = self.client.pipeline(transaction=False)
        for token_id in gone:
            pipe.delete(self._token_key(token_id))
        for run_id in run_ids:
            pipe.delete(f"{self.prefix}tokens:{run_id}")
        pipe.zrem(f"{self.prefix}tokens", *gone)
        pipe.execute()

    def list_wait_tokens(self, *, run_id: str | None = None,
                         limit: int = 100) -> list[WaitTokenRecord]:
        """See :meth:`WaitTokens.list_wait_tokens`: the index, newest first, read through
        the hashes; ``now`` is the store's clock (:meth:`RedisStore.clock`)."""
        index = f"{self.prefix}tokens:{run_id}" if run_id else f"{self.prefix}tokens"
        ids = [text(i) for i in self.client.zrevrange(index, 0, max(limit, 1) - 1)]
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for token_id in ids:
            pipe.hgetall(self._token_key(token_id))
        rows, now = pipe.execute(), self.clock()
        found = (_record(i, [x for pair in row.items() for x in pair], now)
                 for i, row in zip(ids, rows, strict=True))
        return [r for r in found if r is not None]
