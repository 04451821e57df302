"""Celery's soft time limit inside an ``async def`` body's event loop.

The prefork pool signals a soft time limit with ``SIGUSR1``, whose handler
raises ``SoftTimeLimitExceeded`` in whatever code the process is executing.
In an event loop that is usually the loop's own ``select()``, between two
steps: the exception would end the loop with the steps in flight cancelled and
nothing recorded, and the run would fail although its steps have retry
policies. So while an async body runs in the main thread, the signal is taken
by the loop instead (``loop.add_signal_handler``) and the handler's exception is
given to what is executing: each step attempt in flight fails with it (and is
retried under its policy, as a sync step interrupted by the limit is), or, when
no step executes, the body raises it at the ``await`` it is stopped at. The
limit is noticed at the next ``await``: a step computing without awaiting
finishes that computation first (the hard time limit still applies).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

#: The signal billiard's pool sends for a soft time limit (None where there is none).
SOFT_LIMIT_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR1", None)


def _handler() -> Callable[..., Any] | None:
    """The Python handler of the soft-limit signal in this thread, if it may be taken."""
    if SOFT_LIMIT_SIGNAL is None or threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(SOFT_LIMIT_SIGNAL)
    return handler if callable(handler) else None


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Around ``asyncio.run``: the soft-limit handler is put back afterwards (closing a loop
    resets the signals it handled to their defaults)."""
    handler = _handler()
    try:
        yield
    finally:
        if handler is not None and SOFT_LIMIT_SIGNAL is not None:
            signal.signal(SOFT_LIMIT_SIGNAL, handler)


def take(loop: asyncio.AbstractEventLoop, interrupt: Callable[[BaseException], None]) -> None:
    """Inside the body's loop: on the soft-limit signal, call the handler it had and hand
    what it raises to ``interrupt`` (in the loop, between two callbacks)."""
    handler = _handler()
    if handler is None or SOFT_LIMIT_SIGNAL is None:
        return
    sig = SOFT_LIMIT_SIGNAL

    def noticed() -> None:
        try:
            handler(sig, None)
        except BaseException as exc:  # SoftTimeLimitExceeded, from billiard's handler
            interrupt(exc)

    loop.add_signal_handler(sig, noticed)


__all__ = ["SOFT_LIMIT_SIGNAL", "kept", "take"]
