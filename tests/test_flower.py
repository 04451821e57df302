"""Flower monitors durable runs like any Celery task (real Flower, real worker)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import ROOT, wait_for

pytestmark = pytest.mark.worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _task_state(base: str, task_id: str) -> str | None:
    """The state Flower shows for ``task_id``, or None before Flower has seen it."""
    try:
        info = _get(f"{base}/api/task/info/{task_id}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    assert isinstance(info, dict)
    return info.get("state")


def states_until_success(base: str, task_id: str, timeout: float = 30) -> list[str]:
    """Poll Flower until ``task_id`` is SUCCESS; return the distinct states seen, in order."""
    seen: list[str] = []

    def finished() -> bool:
        state = _task_state(base, task_id)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return state == "SUCCESS"

    wait_for(finished, timeout, 0.05, "Flower to see the run succeed")
    return seen


@pytest.fixture
def flower(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real Flower process for ``apps.core_app``; yields its base URL."""
    port = _free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "apps.core_app", "flower",
         "--address=127.0.0.1", f"--port={port}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": path, "FLOWER_UNAUTHENTICATED_API": "true"})
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "flower.log").read_text())
        try:
            with urllib.request.urlopen(f"{base}/healthcheck", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(up, 30, 0.2, "Flower to answer")
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_flower_shows_retry_then_success(start_worker, flower, tag):
    """A run whose step fails twice is listed by task name, seen in RETRY, then SUCCESS."""
    from apps.core_app import four_steps

    start_worker("apps.core_app", extra_args=["-E"])
    time.sleep(1.0)  # let Flower's event consumer attach before the run starts
    result = four_steps.delay(tag, 1, 2)
    seen = states_until_success(flower, result.id)
    assert "RETRY" in seen, seen
    assert seen[-1] == "SUCCESS"
    info = _get(f"{flower}/api/task/info/{result.id}")
    assert isinstance(info, dict)
    assert info["name"] == "apps.core_app.four_steps"
    assert info["retried"] is not None
    tasks = _get(f"{flower}/api/tasks?taskname=apps.core_app.four_steps")
    assert isinstance(tasks, dict) and result.id in tasks


def _queue_length(base: str, queue: str) -> int | None:
    """Messages Flower reports waiting in ``queue``, or None while it does not list it.

    Flower lists the queues its workers consume; on a broker shared with other
    test sessions other queues may be listed too, and ours only once our
    worker answers Flower's ``active_queues`` broadcast.
    """
    lengths = _get(f"{base}/api/queues/length")
    assert isinstance(lengths, dict)
    for q in lengths["active_queues"]:
        if q["name"] == queue:
            return int(q["messages"])
    return None


def test_flower_reports_queue_length(start_worker, flower, tag):
    """Flower's queue-length API lists the durable tasks' queue with the runs waiting in it,
    and the count drops to zero once the worker has run them."""
    from apps.core_app import five_with_slow, quick

    queue = os.environ["TEST_QUEUE"]
    start_worker("apps.core_app", concurrency=1, extra_args=["--prefetch-multiplier=1"])
    wait_for(lambda: _queue_length(flower, queue) is not None, 30, 0.2,
             f"Flower to list the queue {queue}")
    busy = five_with_slow.delay(tag, 3.0)  # holds the only worker process for ~3 s
    queued = [quick.delay(f"{tag}-{i}") for i in range(3)]
    wait_for(lambda: (_queue_length(flower, queue) or 0) >= 2, 10, 0.1,
             "Flower to report the queued runs")
    busy.get(timeout=30)
    for result in queued:
        result.get(timeout=30)
    # (Flower reads the broker when asked; on a loaded machine the worker's acks of the
    # last deliveries can take a while to land, so the wait is generous.)
    wait_for(lambda: _queue_length(flower, queue) == 0, 30, 0.2,
             "Flower to report the queue drained")
