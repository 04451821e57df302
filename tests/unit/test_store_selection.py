"""Which checkpoint store an app gets: derived from its result backend unless overridden."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from celery_durable import StoreUnavailableError
from celery_durable.stores import MemoryStore, get_store
from celery_durable.stores.redis import RedisStore


def make(**conf: object) -> Celery:
    app = Celery("unit-stores", set_as_current=False)
    app.conf.update(conf)
    return app


def test_redis_result_backend_gives_a_redis_store_with_the_default_prefix() -> None:
    """A Redis result backend gives a RedisStore on the backend client, prefix ``durable:``."""
    app = make(result_backend="redis://127.0.0.1:6379/3")
    store = get_store(app)
    assert isinstance(store, RedisStore)
    assert store.prefix == "durable:"
    assert store.client is app.backend.client
    assert store.run_key("abc") == "durable:run:{abc}"
    assert get_store(app) is store  # built once per app


def test_redis_store_honours_global_keyprefix_and_durable_key_prefix() -> None:
    """The backend's ``global_keyprefix`` comes first, then ``durable_key_prefix``."""
    app = make(result_backend="redis://127.0.0.1:6379/3", durable_key_prefix="cd:",
               result_backend_transport_options={"global_keyprefix": "tenant1:"})
    store = get_store(app)
    assert isinstance(store, RedisStore)
    assert store.prefix == "tenant1:cd:"


def test_durable_store_setting_overrides_the_backend() -> None:
    """``durable_store`` picks the store whatever the result backend is."""
    assert isinstance(get_store(make(result_backend="redis://127.0.0.1:6379/3",
                                      durable_store="memory://")), MemoryStore)
    store = get_store(make(result_backend="rpc://", durable_store="redis://127.0.0.1:6379/4"))
    assert isinstance(store, RedisStore)
    mine = MemoryStore()
    assert get_store(make(durable_store=mine)) is mine
    assert get_store(make(durable_store=lambda app: mine)) is mine


def test_eager_mode_uses_the_memory_store() -> None:
    """With ``task_always_eager`` runs are kept in memory."""
    app = make(result_backend="redis://127.0.0.1:6379/3", task_always_eager=True)
    assert isinstance(get_store(app), MemoryStore)


def test_unsupported_backend_raises_a_clear_error() -> None:
    """A result backend with no matching store raises StoreUnavailableError naming the fix."""
    with pytest.raises(StoreUnavailableError, match="durable_store"):
        get_store(make(result_backend="rpc://"))
    with pytest.raises(StoreUnavailableError, match="not a store"):
        get_store(make(durable_store=42))


def test_unreachable_redis_store_fails_ping() -> None:
    """``ping`` on a Redis that does not answer raises StoreUnavailableError."""
    store = get_store(make(durable_store="redis://127.0.0.1:1/0"))
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        store.ping()


def test_the_no_store_error_names_the_backend_and_the_line_to_add() -> None:
    """No store for the result backend: the error names it and gives the exact line for the
    app's situation (its Redis broker, password masked and said so; else a local Redis),
    the Django alternative and where the docs explain it."""
    app = make(result_backend="rpc://", broker_url="redis://:s3cret@cache.internal:6379/2")
    with pytest.raises(StoreUnavailableError) as caught:
        get_store(app)
    text = str(caught.value)
    assert "the RPCBackend result backend (result_backend='rpc://')" in text
    assert "app.conf.durable_store = 'redis://:**@cache.internal:6379/2'" in text
    assert "your broker is Redis" in text and "put your password back" in text
    assert "s3cret" not in text
    assert "'django-db'" in text and "celery_durable_django" in text
    assert "docs/getting-started.md#which-store-keeps-the-checkpoints" in text

    app = make(result_backend="cache+memory://", broker_url="amqp://guest:guest@mq:5672//")
    with pytest.raises(StoreUnavailableError) as caught:
        get_store(app)
    text = str(caught.value)
    assert "CacheBackend" in text and "app.conf.durable_store = 'redis://localhost:6379/0'" in text
    assert "guest" not in text


def test_a_sql_database_backend_gets_the_sql_store_on_its_database(tmp_path: Path) -> None:
    """Celery's SQLAlchemy backend (``db+…``, as in Celery's Django example) keeps the
    checkpoints in the same database, through the SQL store; ``durable_store = "db+…"``
    names one directly. Neither connects until used."""
    from celery_durable.stores.sql import SqlStore

    url = f"db+sqlite:///{tmp_path / 'results.sqlite'}"
    store = get_store(make(result_backend=url, broker_url="amqp://"))
    assert isinstance(store, SqlStore)
    assert str(store.engine.url) == url.removeprefix("db+")
    named = get_store(make(result_backend="rpc://", durable_store=url))
    assert isinstance(named, SqlStore) and str(named.engine.url) == str(store.engine.url)
