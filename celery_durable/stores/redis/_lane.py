"""Redis connections kept for the checkpoint hot path (the "fast lane").

redis-py's client layer (``Redis.execute_command``: take a connection from the
pool, retry wrapper, response callbacks, give it back) costs about as much
client CPU as the round trip itself on a small machine. The hot path of a
durable run (``begin``, one ``save_step`` per step, ``finish``) sends
pre-packed commands over a connection the lane keeps, one per caller running
at the same moment, and reads the raw replies. Anything unusual (a dropped
connection, an interrupt between send and read, ``NOSCRIPT``) discards that
connection and raises, and the store falls back to the ordinary client path,
which has redis-py's reconnect and retry behaviour. The replies are the same
objects the client path returns for EVALSHA, so callers cannot tell the two
apart.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.exceptions import ResponseError

# -- The redis-py internals the lane relies on -------------------------------------------
# Everything below that is not redis-py's documented API, in one place. ``unsupported``
# checks them when a store is made (the lane stays off, and redis-py's client path is
# used, for a client that lacks any); CI runs the store tests on the oldest and the
# newest redis-py the ``redis`` extra allows.
#
# * ``client.connection_pool`` with ``connection_class`` and ``connection_kwargs``: a
#   connection made with the pool's own settings (host, auth, TLS, timeouts);
# * on that connection: ``send_packed_command(data, check_health=False)``,
#   ``read_response()`` (an error reply raises ``redis.exceptions.ResponseError``,
#   ``NoScriptError`` for NOSCRIPT) and ``disconnect()``.
POOL_ATTRIBUTES = ("connection_class", "connection_kwargs")
CONNECTION_METHODS = ("send_packed_command", "read_response", "disconnect")


def unsupported(client: Any) -> str | None:
    """Why the lane cannot serve ``client`` (None: it can)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None or not hasattr(pool, "get_connection"):
        return "the client has no plain connection pool (Redis Cluster?)"
    missing = [name for name in POOL_ATTRIBUTES if not hasattr(pool, name)]
    connection_class = getattr(pool, "connection_class", None)
    missing += [f"connection.{name}" for name in CONNECTION_METHODS
                if not callable(getattr(connection_class, name, None))]
    return f"redis-py lacks {', '.join(missing)}" if missing else None

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


def pack_python(*args: bytes | str | int | float) -> bytes:
    """One RESP command from ``args`` (str as UTF-8, numbers as ``repr``, as redis-py does)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else (
            arg if isinstance(arg, str) else repr(arg)).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


_pack_c: Callable[[tuple[Any, ...]], Any] | None
try:  # hiredis (the ``redis`` extra) packs the same bytes in C, ~3x faster (from 2.2 on)
    import hiredis

    _pack_c = cast(Callable[[tuple[Any, ...]], Any] | None,
                   getattr(hiredis, "pack_command", None))
except ImportError:  # pragma: no cover - depends on the environment
    _pack_c = None


def pack(*args: bytes | str | int | float) -> bytes:
    """:func:`pack_python`, done by hiredis when it is installed and takes the arguments."""
    if _pack_c is not None:
        try:
            return bytes(_pack_c(args))
        except TypeError:  # an argument hiredis does not pack (None, bool): as redis-py would
            pass
    return pack_python(*args)


class FastLane:
    """Send packed commands over connections the lane keeps, made from ``client``'s settings.

    Idle connections wait on a stack; a call takes one (or makes one) and puts
    it back when its replies are read, so there are as many as calls ever ran
    at once: one per prefork process, one per busy thread or greenlet. (A
    ``list`` pop/append is atomic, so this needs no lock.) Disabled (every
    call raises :class:`LaneUnavailable`) when ``enabled`` is False
    (``durable_redis_fast_lane``) or the client is one it cannot serve
    (:func:`unsupported`: Redis Cluster, a redis-py without the internals it uses).
    """

    def __init__(self, client: Any, *, enabled: bool = True) -> None:
        self.reason = "durable_redis_fast_lane is off" if not enabled else unsupported(client)
        self._pool = None if self.reason else client.connection_pool
        self._idle: list[tuple[int, Any]] = []

    @property
    def enabled(self) -> bool:
        """Whether calls can use the lane at all."""
        return self._pool is not None

    def _checkout(self) -> Any:
        while True:
            try:
                generation, conn = self._idle.pop()
            except IndexError:
                break
            if generation == _generation:
                return conn
            # Inherited across fork: the parent's socket. Never use or close it here.
        if self._pool is None:
            raise LaneUnavailable("no connection pool")
        # Made with the pool's settings but outside its accounting.
        return self._pool.connection_class(**self._pool.connection_kwargs)

    @staticmethod
    def _discard(conn: Any) -> None:
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
        conn = self._checkout()
        try:
            conn.send_packed_command([b"".join(commands)], check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except Exception as exc:
            self._discard(conn)
            raise LaneUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self._discard(conn)
            raise
        self._idle.append((_generation, conn))
        return replies

    def close(self) -> None:
        """Disconnect the idle lane connections."""
        while self._idle:
            generation, conn = self._idle.pop()
            if generation == _generation:
                self._discard(conn)
