"""Minimal Django settings for the DjangoStore contenders.

``BENCH_DB`` is ``mysql`` (``BENCH_MYSQL_URL``, a ``mysql+pymysql://`` URL: MariaDB
or MySQL), ``postgres`` (``BENCH_PG_URL`` names the database, as a
libpq URL or conninfo; ``BENCH_PG_SERVER_SIDE_BINDING=1`` turns on Django's
server-side binding for experiments) or ``sqlite`` (``BENCH_SQLITE_PATH``; WAL
and ``BEGIN IMMEDIATE`` so two pool processes can write, as Django recommends).
"""

from __future__ import annotations

import os
from typing import Any


def _postgres(url: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(url)
    options = ({"server_side_binding": True}
               if os.environ.get("BENCH_PG_SERVER_SIDE_BINDING") == "1" else {})
    return {"ENGINE": "django.db.backends.postgresql", "NAME": p.get("dbname", "postgres"),
            "USER": p.get("user", ""), "PASSWORD": p.get("password", "") or "",
            "HOST": p.get("host", ""), "PORT": str(p.get("port", "") or ""), "OPTIONS": options}


def _sqlite(path: str) -> dict[str, Any]:
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": path,
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL;"}}


def _mysql(url: str) -> dict[str, Any]:
    """MySQL/MariaDB through PyMySQL (standing in for mysqlclient, as in the tests)."""
    import pymysql
    from sqlalchemy import make_url

    pymysql.install_as_MySQLdb()
    u = make_url(url)
    return {"ENGINE": "django.db.backends.mysql", "NAME": u.database, "USER": u.username or "",
            "PASSWORD": u.password or "", "HOST": u.host or "", "PORT": str(u.port or ""),
            "OPTIONS": {"charset": "utf8mb4"}}


def _database() -> dict[str, Any]:
    kind = os.environ.get("BENCH_DB", "sqlite")
    if kind == "postgres":
        return _postgres(os.environ["BENCH_PG_URL"])
    if kind == "mysql":
        return _mysql(os.environ["BENCH_MYSQL_URL"])
    return _sqlite(os.environ.get("BENCH_SQLITE_PATH", "bench.sqlite3"))


SECRET_KEY = "bench-not-secret"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django_celery_results",
    "celery_durable_django",
]
MIDDLEWARE: list[str] = []
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": [
                  "django.contrib.auth.context_processors.auth",
                  "django.contrib.messages.context_processors.messages",
                  "django.template.context_processors.request"]}}]
# Persistent connections, as a Celery worker running Django should use: with the
# default CONN_MAX_AGE=0 every task opens a new connection and a new PostgreSQL
# backend whose catalog caches are cold (the raw-INSERT reference keeps its own).
# Celery's Django fixup also closes them around every task unless
# CELERY_DB_REUSE_MAX is set, which bench/worker_app.py does.
CONN_MAX_AGE = 600
CONN_HEALTH_CHECKS = True
DATABASES = {"default": {
    **_database(),
    "CONN_MAX_AGE": CONN_MAX_AGE, "CONN_HEALTH_CHECKS": CONN_HEALTH_CHECKS}}
