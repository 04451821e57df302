"""Settings of the test project: both test databases and the test broker, from env variables.

* ``default``: PostgreSQL at ``DURABLE_TEST_DATABASE_URL`` (set by
  ``tests/django_support.py``), else a SQLite file.
* ``sqlite``: a SQLite file at ``DURABLE_TEST_SQLITE_PATH``.

The in-process tests, the ``celery worker`` subprocesses and the live server
all read these, so they share one database.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

SECRET_KEY = "celery-durable-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "celery_durable_django",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "django_project.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "/static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _postgres(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    return {"ENGINE": "django.db.backends.postgresql", "NAME": parsed.path.lstrip("/"),
            "USER": unquote(parsed.username or ""), "PASSWORD": unquote(parsed.password or ""),
            "HOST": query.get("host") or parsed.hostname or "",
            "PORT": query.get("port") or str(parsed.port or "")}


def _sqlite(path: str) -> dict[str, object]:
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": path,
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20,
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}}


_SQLITE = os.environ.get("DURABLE_TEST_SQLITE_PATH") or str(
    Path(tempfile.gettempdir()) / f"celery-durable-{os.getpid()}.sqlite3")
_PG = os.environ.get("DURABLE_TEST_DATABASE_URL", "")
DATABASES = {
    "default": _postgres(_PG) if _PG else _sqlite(_SQLITE),
    "sqlite": _sqlite(_SQLITE),
}
if os.environ.get("DURABLE_TEST_DEFAULT_MYSQL_URL"):  # bench/admin_changelist.py --database
    from django_support import mysql_settings

    DATABASES["default"] = mysql_settings(os.environ["DURABLE_TEST_DEFAULT_MYSQL_URL"])

CELERY_BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("TEST_QUEUE", "durable-django-test")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_DURABLE_LEASE_TTL = float(os.environ.get("TEST_LEASE_TTL", "3"))
CELERY_DURABLE_SWEEP_INTERVAL = 0.2

# celery_durable's webhook endpoints (celery_durable_django.urls, docs/webhooks.md).
DURABLE_WEBHOOK_SECRETS = {
    "shipped": ["old-shipped-secret", "shipped-secret"],  # rotated: both verify
    "approval": {"verifier": "stripe", "secrets": "whsec_test_approval",
                 "key": "data.object.metadata.doc_id"},  # (POST events/approval: from the body)
    "github.push": {"verifier": "github", "secrets": "github-secret"},
    "django_project.tasks.order": "order-trigger-secret",
    "django_project.tasks.approval": "not-on-the-allow-list",
    "@status": "status-secret",
}
DURABLE_WEBHOOK_TASKS = ["django_project.tasks.order"]
