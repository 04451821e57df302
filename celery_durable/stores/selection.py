"""Which checkpoint store an app uses.

The store is derived from the app's result backend (Redis backend →
:class:`RedisStore`, Celery's SQL database backend ``db+…`` → the SQL store,
django-celery-results' ``django-db`` → ``DjangoStore``, eager mode →
:class:`MemoryStore`) unless ``durable_store`` names one.
"""

from __future__ import annotations

import importlib
from typing import Any

from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from ..config import DurableSettings, settings_for
from ..errors import StoreUnavailableError
from .base import CheckpointStore
from .memory import MemoryStore
from .redis import RedisStore  # imports without redis-py; raises StoreUnavailableError on use


def _import(path: str) -> Any:
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def _redis_store(settings: DurableSettings, *, url: str | None = None, client: Any = None,
                 prefix: str) -> CheckpointStore:
    if url is not None:
        return RedisStore.from_url(url, prefix=prefix, fast_lane=settings.redis_fast_lane)
    return RedisStore(client, prefix=prefix, fast_lane=settings.redis_fast_lane)


def _django_store() -> CheckpointStore:
    try:  # deferred: the Django app is an optional dependency (the ``django`` extra)
        from celery_durable_django.store import DjangoStore
    except ImportError as exc:
        raise StoreUnavailableError("the Django store needs the Django app: pip install "
                                    "'celery-durable[django]' and add 'celery_durable_django' to "
                                    "INSTALLED_APPS") from exc
    store: CheckpointStore = DjangoStore()
    return store


def _sql_store(settings: DurableSettings, url: str,
               engine_options: Any = None) -> CheckpointStore:
    try:  # deferred: SQLAlchemy is an optional dependency (the ``sql`` extra)
        from .sql.store import SqlStore
    except ImportError as exc:
        raise StoreUnavailableError("the SQL store needs SQLAlchemy: pip install "
                                    "'celery-durable[sql]'") from exc
    store: CheckpointStore = SqlStore.from_url(url, engine_options=engine_options,
                                               create_tables=bool(settings.sql_create_tables))
    return store


def store_from_spec(app: Celery, spec: Any) -> CheckpointStore:
    """Build a store from a ``durable_store`` value (instance, URL, dotted path or factory)."""
    settings = settings_for(app)
    if isinstance(spec, CheckpointStore):
        return spec
    if isinstance(spec, str):
        if spec.startswith(("redis+cluster://", "rediss+cluster://")):
            return RedisStore.from_cluster_url(spec, prefix=settings.key_prefix,
                                               fast_lane=settings.redis_fast_lane)
        if spec.startswith(("redis://", "rediss://", "unix://")):
            return _redis_store(settings, url=spec, prefix=settings.key_prefix)
        if spec.startswith("db+"):
            return _sql_store(settings, spec)
        if spec.startswith("memory:"):
            return MemoryStore()
        if spec.startswith("django"):
            return _django_store()
        spec = _import(spec)
    if callable(spec):
        store = spec(app)
        if isinstance(store, CheckpointStore):
            return store
    raise StoreUnavailableError(f"durable_store={spec!r} is not a store, a store URL "
                                "(redis://, redis+cluster://, db+postgresql://, memory://, "
                                "django://) or a factory of one")


def _derive(app: Celery) -> CheckpointStore:
    """Pick the store that matches the app's result backend."""
    settings = settings_for(app)
    if app.conf.task_always_eager:
        return MemoryStore()
    backend_name = type(app.backend).__name__
    module = type(app.backend).__module__
    if module.startswith("celery.backends.redis"):
        options = app.conf.result_backend_transport_options or {}
        prefix = str(options.get("global_keyprefix", "")) + settings.key_prefix
        return _redis_store(settings, client=app.backend.client, prefix=prefix)
    if module.startswith("celery.backends.database"):
        return _sql_store(settings, app.backend.url, app.backend.engine_options)
    if module.startswith("django_celery_results"):
        return _django_store()
    raise no_store_for(app, backend_name)


#: Where the docs say which store goes with which result backend.
WHICH_STORE = "docs/getting-started.md#which-store-keeps-the-checkpoints"


def _masked(url: str) -> str:
    """``url`` with its password shown as ``**`` (unchanged when it has none)."""
    return str(maybe_sanitize_url(url)) if "@" in url else url


def no_store_for(app: Celery, backend_name: str) -> StoreUnavailableError:
    """The start-up error when no store matches the result backend: it names the backend
    and the line to add for this app (its Redis broker, if it has one)."""
    backend = _masked(str(app.conf.result_backend or "none"))
    broker = str(app.conf.broker_url or "")
    if broker.startswith(("redis://", "rediss://")):
        url = _masked(broker)
        because = "your broker is Redis: the same server can keep the checkpoints"
        if url != broker:
            because += "; put your password back in place of **"
    else:
        url, because = "redis://localhost:6379/0", "any Redis server can keep the checkpoints"
    return StoreUnavailableError(
        f"celery_durable cannot keep checkpoints in the {backend_name} result backend "
        f"(result_backend={backend!r}). Add this line where you configure Celery "
        f"({because}):\n\n    app.conf.durable_store = {url!r}\n\n"
        "or, in a Django project, keep results with django-celery-results "
        "(CELERY_RESULT_BACKEND = 'django-db') and add 'celery_durable_django' to "
        f"INSTALLED_APPS. Which store goes with which result backend: {WHICH_STORE}")


def get_store(app: Celery) -> CheckpointStore:
    """The store of ``app``, built once per app."""
    store: CheckpointStore | None = app.__dict__.get("_durable_store")
    if store is None:
        spec = settings_for(app).store
        store = store_from_spec(app, spec) if spec is not None else _derive(app)
        app.__dict__["_durable_store"] = store
    return store
