"""Wait tokens as every store keeps them: the record, and the completion rule, written once.

A wait token is created by a run (``create_wait_token``), handed to someone
else as an id or a URL, and completed once with a payload
(``complete_wait_token``, ``POST /durable/tokens/<id>``). The store keeps the
token, decides its completion atomically by its own clock (the first
completion of a pending, unexpired token wins), and keeps the first payload;
delivering the payload to the run is an event (``durable.token``, keyed by the
token id), so a token completed before its run waits is received as an early
event is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: The event a completed token sends (its key is the token id).
TOKEN_EVENT = "durable.token"

#: What a completion did: ``completed`` (this call), ``already`` (an earlier one did; its
#: payload is kept), ``expired`` (past its expiry), ``unknown`` (no such token).
TokenOutcome = Literal["completed", "already", "expired", "unknown"]


@dataclass
class WaitTokenRecord:
    """A stored wait token; ``now`` is the store's clock when it was read."""

    id: str
    run_id: str
    created_at: float
    expires_at: float | None = None
    completed_at: float | None = None
    #: The first completion's payload, serialized (None until completed).
    payload: str | None = None
    tags: list[str] = field(default_factory=list)
    now: float | None = None

    @property
    def status(self) -> str:
        """``completed``, ``expired`` (pending past its expiry) or ``pending``."""
        if self.completed_at is not None:
            return "completed"
        if self.expires_at is not None and self.now is not None and self.now >= self.expires_at:
            return "expired"
        return "pending"


def completion(record: WaitTokenRecord | None, now: float) -> TokenOutcome:
    """The outcome of completing ``record`` at the store's time ``now`` (the decision every
    store takes under its lock, or in its script)."""
    if record is None:
        return "unknown"
    if record.completed_at is not None:
        return "already"
    if record.expires_at is not None and now >= record.expires_at:
        return "expired"
    return "completed"


__all__ = ["TOKEN_EVENT", "TokenOutcome", "WaitTokenRecord", "completion"]
