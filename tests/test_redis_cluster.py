"""Redis Cluster, first class: ``durable_store = "redis+cluster://host:port"``.

A real 3-master cluster started by the suite (``services.redis_cluster_url``); the broker
and the result backend stay on the standalone test Redis (Celery's Redis transport does not
run on a cluster). The store contract tests run against the cluster too
(``tests/stores/conftest.py``).
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import pytest
import services
from harness import wait_for

from celery_durable import RunStatus
from celery_durable.stores.redis import RedisStore

pytestmark = pytest.mark.worker


def count(redis_client, tag: str, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(f"{tag}:{name}") or 0)


def test_a_run_on_a_cluster_resumes_after_its_worker_is_killed(start_worker, tag,
                                                               redis_client) -> None:
    """SIGKILL the worker in step 3 of 5: a new worker resumes there, the completed steps
    never run again, and the run's keys live on the cluster."""
    from apps.core_app import app, five_with_crash_point

    cluster = services.redis_cluster_url()
    env = {"TEST_APP_CONF": json.dumps({"durable_store": cluster})}
    first = start_worker("apps.core_app", concurrency=1, env=env)
    result = five_with_crash_point.delay(tag, 60)
    wait_for(lambda: count(redis_client, tag, "crash_point") == 1, 20, message="step 3 running")
    first.kill()
    start_worker("apps.core_app", concurrency=1, env=env)
    assert result.get(timeout=60) == [1, 2, 2, 3, 4]
    assert count(redis_client, tag, "add_one") == 4
    store = RedisStore.from_cluster_url(cluster, prefix=app.conf.durable_key_prefix)
    run = store.get_run(result.id)
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.recoveries == 1
    assert [s.attempts for s in run.steps] == [1, 1, 1, 1, 1]
    store.close()


def test_a_cluster_node_named_as_a_plain_redis_is_an_error_at_worker_start(
        start_worker) -> None:
    """``durable_store = "redis://<a cluster node>"`` stops the worker at start with the line to
    write instead (it passed the start check, then every run on another node failed with
    MOVED)."""
    node = urlparse(services.redis_cluster_url().replace("+cluster", ""))
    env = {"TEST_APP_CONF": json.dumps({"durable_store": f"redis://{node.netloc}"})}
    worker = start_worker("apps.core_app", concurrency=1, env=env, wait=False)
    wait_for(lambda: "redis+cluster://" in worker.log(), 30, message="the start-up error")
    time.sleep(0.5)
    assert "Redis Cluster node" in worker.log()
