"""Shared fixtures: real Redis, per-session isolation, worker subprocesses."""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Worker
from services import redis_server_url

SESSION = uuid.uuid4().hex[:8]


def pytest_configure(config: pytest.Config) -> None:
    """Point the test apps (``tests/apps``) at real servers before anything imports them."""
    base = redis_server_url()
    os.environ.setdefault("TEST_BROKER_URL", f"{base}/0")
    os.environ.setdefault("TEST_BACKEND_URL", f"{base}/0")
    os.environ.setdefault("TEST_REDIS_URL", f"{base}/0")
    os.environ.setdefault("TEST_QUEUE", f"durable-test-{SESSION}")
    os.environ.setdefault("TEST_PREFIX", f"durable-test-{SESSION}:")


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    """A unique tag for this test: namespaces side-effect counters in Redis."""
    return f"{request.node.name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_client():  # type: ignore[no-untyped-def]
    """A redis-py client on the test Redis."""
    import redis

    client = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    yield client
    client.close()


_worker_ids = itertools.count()


@pytest.fixture
def start_worker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:  # type: ignore[type-arg]
    """Factory: ``start_worker("apps.core_app", concurrency=2)`` → a ready Worker.

    Every worker is stopped at teardown; their logs are printed if the test failed.
    """
    workers: list[Worker] = []

    def start(app_module: str, *, concurrency: int = 2, env: dict[str, str] | None = None,
              wait: bool = True, **kwargs) -> Worker:  # type: ignore[no-untyped-def]
        n = next(_worker_ids)
        worker = Worker(app_module, name=f"w{n}-{SESSION}", queue=os.environ["TEST_QUEUE"],
                        log_path=tmp_path / f"worker{n}.log", concurrency=concurrency,
                        env=env, **kwargs)
        workers.append(worker)
        return worker.wait_ready() if wait else worker

    yield start
    failed = getattr(request.node, "rep_call", None)
    for worker in workers:
        worker.stop()
        if failed is not None and failed.failed:
            sys.stderr.write(f"\n----- log of {worker.name} -----\n{worker.log()[-8000:]}\n")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:  # type: ignore[type-arg]
    """Keep each phase's report on the item so fixtures can tell if the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
