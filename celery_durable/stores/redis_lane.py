"""A per-thread Redis connection for the checkpoint hot path.

redis-py's client layer (``Redis.execute_command``: take a connection from the
pool, retry wrapper, response callbacks, give it back) costs about as much
client CPU as the round trip itself on a small machine. The hot path of a
durable run — ``begin``, one ``save_step`` per step, ``finish`` — sends
pre-packed commands over a connection this thread keeps, and reads the raw
replies. Anything unusual (a dropped connection, an interrupt between send and
read, ``NOSCRIPT``) discards that connection and raises, and the store falls
back to the ordinary client path, which has redis-py's reconnect and retry
behaviour. The replies are the same objects the client path returns for
EVALSHA, so callers cannot tell the two apart.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

#: Bumped in a child after every fork: a lane connection made in an earlier
#: generation belongs to the parent's socket. (Cheaper than ``os.getpid()``,
#: which is a system call, on every checkpoint.)
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)


class LaneUnavailable(Exception):
    """The fast lane could not complete a call; use the client path instead."""


def pack(*args: bytes | str | int | float) -> bytes:
    """One RESP command from ``args`` (str as UTF-8, numbers as ``repr``, as redis-py does)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else (
            arg if isinstance(arg, str) else repr(arg)).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class FastLane:
    """Send packed commands over this thread's own connection from ``client``'s pool.

    Disabled (every call raises :class:`LaneUnavailable`) for clients without a
    plain connection pool, such as Redis Cluster.
    """

    def __init__(self, client: Any) -> None:
        pool = getattr(client, "connection_pool", None)
        self._pool = pool if hasattr(pool, "get_connection") else None
        self._local = threading.local()

    @property
    def enabled(self) -> bool:
        """Whether calls can use the lane at all."""
        return self._pool is not None

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation == _generation:
            return conn
        if self._pool is None:
            raise LaneUnavailable("no connection pool")
        # A connection inherited across fork is the parent's socket: never reuse it.
        # Made with the pool's settings but outside its accounting: the lane
        # holds it for the thread's lifetime instead of borrowing per command.
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        self._local.conn, self._local.generation = conn, _generation
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.generation == _generation:
            with contextlib.suppress(Exception):  # already failing; the socket is discarded
                conn.disconnect()

    def call(self, commands: Sequence[bytes]) -> list[Any]:
        """Send ``commands`` (packed) in one write and return their replies in order.

        An error reply is returned in place as the ``ResponseError`` redis-py
        builds for it (every reply is read, so the connection stays in step).
        Connection trouble discards the connection and raises
        :class:`LaneUnavailable`; an interrupt (any other ``BaseException``)
        discards it and propagates, so no reply is ever read out of turn.
        """
        try:
            conn = self._connection()
            conn.send_packed_command([b"".join(commands)], check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except LaneUnavailable:
            raise
        except Exception as exc:
            self._drop()
            raise LaneUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self._drop()
            raise

    def close(self) -> None:
        """Disconnect this thread's lane connection (other threads' close with the pool)."""
        self._drop()
