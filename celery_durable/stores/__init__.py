"""Checkpoint stores: where runs, their checkpoints, leases and timers live.

* :mod:`.base`: the contract, :class:`CheckpointStore` (read it to write a store);
* :mod:`.transitions`: the decisions every store makes, written once;
* :mod:`.memory`: :class:`MemoryStore`, in-process (eager mode, unit tests);
* :mod:`.redis`: ``RedisStore`` (imported on use: it needs redis-py);
* :mod:`.selection`: which store an app uses (:func:`get_store`).

The Django store lives in the Django app: ``celery_durable_django.store.DjangoStore``.
"""

from .base import CheckpointStore
from .memory import MemoryStore
from .selection import get_store, store_from_spec

__all__ = ["CheckpointStore", "MemoryStore", "get_store", "store_from_spec"]
