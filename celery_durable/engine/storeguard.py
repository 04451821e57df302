"""A run's view of its store: an outage is a :class:`StoreUnavailableError`, not a step error.

Inside a delivery every store call goes through :class:`GuardedStore`. An
exception that is not a :class:`DurableError` (a dropped Redis connection, a
PostgreSQL restart) becomes ``StoreUnavailableError``, which the runner
treats like a crash of this delivery: the run is *not* dead-lettered with a
``ConnectionError`` as if the user's code had failed; it keeps its last
checkpoint and lease, and the sweeper republishes it once the lease expires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from ..errors import DurableError, StoreUnavailableError
from ..stores.base import CheckpointStore


class GuardedStore:
    """Wraps a CheckpointStore; methods raise StoreUnavailableError on infrastructure errors."""

    def __init__(self, store: Any) -> None:
        #: The store seen through this guard.
        self.wrapped = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.wrapped, name)
        if not callable(attr):
            return attr
        wrapped = _guard(name, attr)
        setattr(self, name, wrapped)  # next lookups skip __getattr__
        return wrapped


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (DurableError, NotImplementedError):
            raise  # ours, or a store without this feature: not an outage
        except Exception as exc:
            raise StoreUnavailableError(
                f"the checkpoint store failed in {name}: {type(exc).__name__}: {exc}") from exc
    call.__name__ = name
    return call


def guard(store: CheckpointStore) -> CheckpointStore:
    """``store`` seen through :class:`GuardedStore` (typed as the store it wraps)."""
    return cast(CheckpointStore, GuardedStore(store))
