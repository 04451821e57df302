"""The async agent example (examples/async_agent, docs/async.md) with a real worker: the
three tools are called at once (the stand-in server, in this process, saw all three in
flight together) and each once; the run's steps are the three tools and the summary."""

from __future__ import annotations

import importlib
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from celery_durable import get_run, testing

pytestmark = pytest.mark.worker

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "async_agent"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_agent_calls_its_three_tools_at_once(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    if "REDIS_URL" not in os.environ:  # agent.py (and its worker) read REDIS_URL
        monkeypatch.setenv("REDIS_URL", os.environ["TEST_REDIS_URL"].rsplit("/", 1)[0])
    port = _free_port()
    monkeypatch.setenv("TOOLS_URL", f"http://127.0.0.1:{port}")
    sys.path.insert(0, str(EXAMPLE))
    try:
        agent = importlib.import_module("agent")
        standin = importlib.import_module("standin")
    finally:
        sys.path.remove(str(EXAMPLE))
    tools = standin.serve(port, delay=0.5)
    queue = f"agent-{uuid.uuid4().hex[:8]}"
    agent.app.conf.task_default_queue = queue
    worker = testing.start_worker("agent", queues=[queue], cwd=EXAMPLE,
                                  env={"TOOLS_URL": f"http://127.0.0.1:{port}"},
                                  log_path=tmp_path / "worker.log")
    try:
        result = agent.research.delay("celery", "Lisbon", "ACME")
        assert result.get(timeout=60) == ("search: 3 results for 'celery'; weather: sunny in "
                                          "Lisbon; stock: ACME at 42.0")
    finally:
        worker.stop()
        tools.shutdown()
    assert sorted(tools.served) == ["search", "stock", "weather"]  # each tool once
    assert tools.most_in_flight == 3  # all three at once
    run = get_run(result.id, app=agent.app)
    assert [s.key for s in run.steps] == ["search#0@0", "weather#0@1", "stock#0@2",
                                        "summarise#0"]
