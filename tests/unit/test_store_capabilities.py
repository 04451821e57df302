"""Store capabilities: a store declares what it offers beyond the core contract.

A store that implements only :class:`CheckpointStore` still runs durable
tasks with steps; a feature that needs a capability it lacks fails with an
error naming the store and the feature, instead of an AttributeError deep
inside the engine.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from celery_durable import durable_task, send_event, step, wait_for_event
from celery_durable.stores import MemoryStore
from celery_durable.stores.base import (
    CAPABILITIES,
    CheckpointStore,
    UnsupportedCapability,
    waits_of,
)
from celery_durable.stores.redis import RedisStore


def _core_only() -> CheckpointStore:
    """A store with the core contract only: every core method delegates to a MemoryStore."""
    inner = MemoryStore()

    def delegate(name: str) -> Any:
        return lambda self, *args, **kwargs: getattr(inner, name)(*args, **kwargs)

    cls = type("CoreOnlyStore", (CheckpointStore,),
               {name: delegate(name) for name in CheckpointStore.__abstractmethods__})
    store: CheckpointStore = cls()
    return store


@pytest.mark.parametrize("store_class", [MemoryStore, RedisStore])
def test_the_engine_stores_declare_every_capability(store_class: type) -> None:
    """The memory and Redis stores declare every capability (the Django store: its tests)."""
    assert all(issubclass(store_class, capability) for capability in CAPABILITIES)


def test_a_core_only_store_runs_steps_but_names_what_it_lacks() -> None:
    """Steps work on a core-only store; ``wait_for_event`` and ``send_event`` say which
    capability is missing and from which store."""
    store = _core_only()
    app = Celery("core-only", set_as_current=False)
    app.conf.update(task_always_eager=True, broker_url="memory://",
                    result_backend="cache+memory://", durable_store=store)

    @step
    def add(a: int, b: int) -> int:
        return a + b

    @durable_task(app=app, name="core.steps")
    def steps_only(x: int) -> int:
        return add(x, 1) + add(x, 2)

    @durable_task(app=app, name="core.waits")
    def waits() -> None:
        wait_for_event("approval", key=1, timeout=1)

    assert steps_only.delay(1).get() == 5
    with pytest.raises(Exception, match="CoreOnlyStore does not support durable waits"):
        waits.delay().get()
    declare = r"inheriting celery_durable\.stores\.base\.Waits"
    with pytest.raises(UnsupportedCapability, match=declare):
        send_event("approval", key=1, app=app)
    with pytest.raises(UnsupportedCapability):
        waits_of(store)
