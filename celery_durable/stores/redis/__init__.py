"""The Redis store: one hash per run, Lua for every decision under the lease.

* :mod:`.store`: :class:`RedisStore` (runs, checkpoints, leases, the sweeper's
  claims, waits and events);
* :mod:`.controls`: its run-control half (child runs, cancel, idempotency keys,
  concurrency slots, retention);
* ``lua/``: the scripts, one file each, loaded by :mod:`._scripts`;
* :mod:`._codec` and :mod:`._checkpoints`: how a run hash becomes records;
* :mod:`._lane`: the checkpoint hot path's own connections
  (``durable_redis_fast_lane``).

Needs redis-py (``pip install 'celery-durable[redis]'``).
"""

from .store import RedisStore

__all__ = ["RedisStore"]
