"""A RedisStore on the test Redis under a fresh key prefix, its keys removed afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

from celery_durable.stores.redis import RedisStore


@contextlib.contextmanager
def redis_store(client: Any, label: str) -> Iterator[RedisStore]:
    """A store over ``client`` whose keys start with the session prefix and ``label``."""
    prefix = f"{os.environ['TEST_PREFIX']}{label}-{uuid.uuid4().hex[:10]}:"
    store = RedisStore(client, prefix=prefix)
    try:
        yield store
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        store.close()
