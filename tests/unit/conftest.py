"""Shared fixtures of the in-process tests."""

from __future__ import annotations

import pytest
from celery import Celery


@pytest.fixture
def eager_app(request: pytest.FixtureRequest) -> Celery:
    """A Celery app in eager mode (in-memory broker and results; the MemoryStore), named
    after the test module."""
    app = Celery(request.module.__name__.rpartition(".")[2], set_as_current=False)
    app.conf.update(task_always_eager=True, broker_url="memory://",
                    result_backend="cache+memory://")
    return app
