"""Settings of the example project, from environment variables with local defaults.

* ``DATABASE_URL``: ``postgres://user:pass@host:5432/name`` or
  ``sqlite:////absolute/path.sqlite3``; default: SQLite in ``DEMO_STATE_DIR``.
* ``REDIS_URL``: the broker (default ``redis://127.0.0.1:6379``, database 0).
* ``DEMO_STATE_DIR``: where the SQLite database and the e-mail outbox live
  (default ``example_project/.demo``).
* ``STANDIN_URL``: the local stand-in services (payment API, model, tools),
  started by ``python manage.py standins`` (the demo starts them for you).

This is a development configuration (``DEBUG``, a fixed secret key, bound to
127.0.0.1): do not deploy it as is.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("DEMO_STATE_DIR") or BASE_DIR / ".demo")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",   # CELERY_RESULT_BACKEND = "django-db"
    "celery_durable_django",   # celery_durable: runs in the database, and their admin
    "workflows",               # the example durable tasks
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/admin/login/"


def database(url: str) -> dict[str, object]:
    """A ``DATABASES`` entry for a ``postgres://`` or ``sqlite:///`` URL."""
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return {"ENGINE": "django.db.backends.postgresql", "NAME": parsed.path.lstrip("/"),
                "USER": unquote(parsed.username or ""), "PASSWORD": unquote(parsed.password or ""),
                "HOST": query.get("host") or parsed.hostname or "",
                "PORT": query.get("port") or str(parsed.port or ""), "CONN_MAX_AGE": 60,
                "CONN_HEALTH_CHECKS": True}
    if parsed.scheme == "sqlite":
        return sqlite(parsed.path)
    raise ValueError(f"DATABASE_URL: unsupported scheme {parsed.scheme!r} "
                     "(use postgres://… or sqlite:///…)")


def sqlite(path: str) -> dict[str, object]:
    """SQLite shared by the worker, the dev server and the demo without "database is locked".

    WAL lets readers run alongside the one writer, ``IMMEDIATE`` transactions
    take the write lock up front (no deadlocked upgrades), and ``timeout``
    is how long a writer waits for the lock.
    """
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": path,
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30,
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}}


if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": database(os.environ["DATABASE_URL"])}
else:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {"default": sqlite(str(STATE_DIR / "db.sqlite3"))}

# -- Celery (read by mysite/celery.py with namespace="CELERY") -------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
CELERY_BROKER_URL = REDIS_URL if urlparse(REDIS_URL).path.strip("/") else f"{REDIS_URL}/0"
CELERY_RESULT_BACKEND = "django-db"         # django-celery-results; durable runs go there too
CELERY_RESULT_EXTENDED = True               # task name and arguments in the TaskResult admin
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "durable-example")
CELERY_TASK_SEND_SENT_EVENT = True          # Flower shows queued runs as RECEIVED/PENDING
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes every DB connection before and after each task unless
# this is set; with it, CONN_MAX_AGE and CONN_HEALTH_CHECKS decide (docs/django-admin.md).
CELERY_DB_REUSE_MAX = 1000
# celery_durable settings (docs/configuration.md lists them all): a short lease so
# that a killed worker's run is picked up quickly in the demo.
CELERY_DURABLE_LEASE_TTL = 10
#: Where this site serves celery_durable's endpoints (mysite/urls.py): wait tokens' URLs.
DEMO_BASE_URL = os.environ.get("DEMO_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
CELERY_DURABLE_PUBLIC_URL = f"{DEMO_BASE_URL}/durable/"
# The signed event endpoint the payment stand-in calls back (docs/webhooks.md).
DURABLE_WEBHOOK_SECRETS = {
    "payment.succeeded": os.environ.get("DEMO_WEBHOOK_SECRET", "demo-payment-secret")}

# -- the example workflows ------------------------------------------------------------
#: The stand-in services (``python manage.py standins``).
STANDIN_URL = os.environ.get("STANDIN_URL", "http://127.0.0.1:8765").rstrip("/")
#: Seconds between shipping an order and the follow-up e-mail (days, in a real shop).
FOLLOW_UP_DELAY = float(os.environ.get("DEMO_FOLLOW_UP_SECONDS", "5"))
#: Hours a document waits for approval before it is withdrawn.
APPROVAL_TIMEOUT_HOURS = float(os.environ.get("DEMO_APPROVAL_TIMEOUT_HOURS", "72"))

# E-mails are written to files: open them to see what a customer would get.
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = STATE_DIR / "outbox"
DEFAULT_FROM_EMAIL = "shop@example.com"

