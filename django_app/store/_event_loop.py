"""The Django store called from an ``async def`` durable task's event loop.

The steps of an async task run in an event loop in the worker's thread, and call the
store there. Django's ORM refuses that (``SynchronousOnlyOperation``: a query would block
the loop). :func:`off_the_loop` makes each public method of the store, called from a
thread running an event loop, run in a helper thread instead (one per calling thread,
kept for the next call, with its own database connection, recycled between deliveries as
Django recycles a request's) and waits for it: the loop is
blocked for the call, as it is by any other store's call, and Django is satisfied.
Called from anywhere else, a method runs as it is (one check, no thread).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import types
from asyncio import events
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections

T = TypeVar("T", bound=type)

_helpers = threading.local()


def _helper() -> ThreadPoolExecutor:
    """This thread's helper thread (made on first use)."""
    helper: ThreadPoolExecutor | None = getattr(_helpers, "executor", None)
    if helper is None:
        helper = _helpers.executor = ThreadPoolExecutor(
            1, thread_name_prefix="durable-django-store")
    return helper


def _in_helper(loop: int, call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call`` on the helper thread; at the first call of each event loop (a delivery), its
    old connections are closed as Django closes them between requests (``CONN_MAX_AGE``,
    a broken connection)."""
    if getattr(_helpers, "loop", None) != loop:
        close_old_connections()
        _helpers.loop = loop
    return call(*args, **kwargs)


def _hopping(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        loop = events._get_running_loop()
        if loop is None:
            return method(self, *args, **kwargs)
        context = contextvars.copy_context()  # the run, the step: as the caller sees them
        return _helper().submit(context.run, _in_helper, id(loop), method, self, *args,
                                **kwargs).result()
    return wrapper


def off_the_loop(cls: T) -> T:
    """Class decorator: every public method of ``cls`` (its bases' included) runs in a
    helper thread when called from a thread running an event loop."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        method = inspect.getattr_static(cls, name)
        if isinstance(method, types.FunctionType):
            setattr(cls, name, _hopping(method))
    return cls


__all__ = ["off_the_loop"]
