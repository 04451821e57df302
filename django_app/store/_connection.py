"""The one wrapper every ``DjangoStore`` method that talks to the database goes through."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, connections

F = TypeVar("F", bound=Callable[..., Any])


def db_call(method: F) -> F:
    """Close a connection that broke during ``method`` so the next call reconnects."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except DatabaseError:
            conn = connections[self.using]
            if not conn.in_atomic_block:
                conn.close_if_unusable_or_obsolete()
            raise
    return wrapper  # type: ignore[return-value]
