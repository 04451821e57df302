"""gevent and eventlet workers: async bodies take turns within a worker process.

asyncio keeps "the running event loop" per OS thread, and the greenlets of a
gevent or eventlet worker share one OS thread. While one delivery's loop waits
in its ``select()`` (which yields to the other greenlets), a second delivery's
``asyncio.run()`` would meet that loop and fail (``RuntimeError: asyncio.run()
cannot be called from a running event loop``). So in such a worker an async body
waits for its turn (a lock of the patched, cooperative kind) while another
runs; sync tasks, and everything else the worker does, go on meanwhile. The
steps gathered inside one async body still run at once.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: Made at the first async delivery, after the pool monkey-patched ``threading``.
_turns: Any = None


def green() -> bool:
    """True in a process whose threads gevent or eventlet turned into greenlets."""
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None and gevent.is_module_patched("threading"):
        return True
    eventlet = sys.modules.get("eventlet.patcher")
    return eventlet is not None and bool(eventlet.is_monkey_patched("thread"))


@contextlib.contextmanager
def turn() -> Iterator[None]:
    """Around an async body's event loop: in a gevent or eventlet worker, one at a time."""
    global _turns
    if not green():
        yield
        return
    if _turns is None:  # (no switch to another greenlet can happen in between)
        _turns = threading.RLock()
    with _turns:
        yield


__all__ = ["green", "turn"]
