"""The durable waits in an ``async def`` body: called or awaited, both right.

``sleep``, ``sleep_until``, ``wait_for_event``, ``wait_for_token``, ``call``, ``gather``
and ``map`` park the run by raising (the delivery ends) and, on the delivery that
resumes it, return the wait's value at once. In an async body a user may write
``await sleep(5)`` as well as ``sleep(5)``: :func:`as_awaited` returns the value itself to
a plain call and an awaitable giving it to an awaited one. Which one it is, is read from
the caller's code: whether the instruction after the call is ``GET_AWAITABLE`` (CPython
3.11 to 3.13), once per call site. Nothing of this runs in a sync body.
"""

from __future__ import annotations

import dis
import inspect
import sys
from collections.abc import Generator
from types import CodeType, FrameType
from typing import Any

from .context import current_loop

#: Whether the call at (code, last instruction) is awaited, by call site.
_AWAITED: dict[tuple[CodeType, int], bool] = {}


class Ready:
    """An awaitable that gives ``value`` at once (an awaited durable wait's result)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[None, None, Any]:
        return self.value
        yield  # (unreachable: makes this a generator, which ``await`` needs)


def awaited(frame: FrameType) -> bool:
    """Whether the call ``frame`` is making is the operand of an ``await``."""
    code, lasti = frame.f_code, frame.f_lasti
    found = _AWAITED.get((code, lasti))
    if found is None:
        found = bool(code.co_flags & inspect.CO_COROUTINE) and next(
            (i.opname for i in dis.get_instructions(code) if i.offset > lasti),
            None) == "GET_AWAITABLE"
        _AWAITED[code, lasti] = found
    return found


def as_awaited(value: Any) -> Any:
    """``value`` for the caller of the durable wait that calls this, or an awaitable giving
    it when that caller awaits the call (in an async body)."""
    if current_loop.get() is None or not awaited(sys._getframe(2)):
        return value
    return Ready(value)


__all__ = ["Ready", "as_awaited", "awaited"]
