"""``set_metadata``: what a run says about itself while it runs (progress, counters, links).

Each call writes under the run's lease (a holder that lost the run writes
nothing) into the run's metadata, apart from its checkpoints: ``get_run``,
``celery durable runs`` and the admin show it; a delivery never loads it.
Values are JSON (the admin shows them as such). Outside a durable run the
call does nothing, as a step outside a run is a plain call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import SerializationError
from ..stores.base import run_history_of
from ._flow import LeaseLost
from .context import active_run
from .leases import ensure_held

#: Longest JSON text of one metadata value, and longest key.
MAX_VALUE_BYTES = 64 * 1024
MAX_KEY_LENGTH = 128


def _encoded(run_id: str, key: Any, value: Any) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"run {run_id}: a metadata key is text of 1 to {MAX_KEY_LENGTH} "
                         f"characters, not {key!r:.140}")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"run {run_id}: metadata {key!r} is not JSON "
                                 f"({type(exc).__name__}: {exc})", run_id=run_id) from None
    if len(text.encode()) > MAX_VALUE_BYTES:
        raise SerializationError(f"run {run_id}: metadata {key!r} is {len(text.encode())} bytes "
                                 f"of JSON, over {MAX_VALUE_BYTES}", run_id=run_id)
    return text


def update_metadata(values: Mapping[str, Any]) -> None:
    """Set several metadata keys of the running durable run at once (one store write)."""
    ctx = active_run()
    if ctx is None or not values:
        return
    if ctx.fatal is not None:  # the body caught an error that ends the run
        raise ctx.fatal
    ensure_held(ctx.run_id)
    encoded = {key: _encoded(ctx.run_id, key, value) for key, value in values.items()}
    if not run_history_of(ctx.store).set_metadata(ctx.run_id, ctx.token, encoded):
        raise LeaseLost()


def set_metadata(key: str, value: Any) -> None:
    """Set metadata ``key`` of the running durable run to ``value`` (JSON), e.g. progress:
    ``set_metadata("progress", "page 3 of 10")``. Outside a durable run: does nothing."""
    update_metadata({key: value})


class RunMetadata:
    """``step.context().metadata``: ``metadata["page"] = "3 of 10"`` sets run metadata."""

    def __setitem__(self, key: str, value: Any) -> None:
        set_metadata(key, value)

    def set(self, key: str, value: Any) -> None:
        """Same as ``metadata[key] = value``."""
        set_metadata(key, value)

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several keys in one write."""
        update_metadata(values)
