"""Deploying new code under in-flight runs, with real workers (docs/deploying.md).

``apps.versions_app`` holds an order task in two code versions. Runs are
started by sender processes of a version (``apps.versions_send``), as a
web process of that deploy would; steps count their executions and record
the worker that ran them in Redis, read here from outside the workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from celery.result import AsyncResult
from harness import ROOT, wait_for

pytestmark = pytest.mark.worker

QUEUE = os.environ.get("TEST_QUEUE", "")


def _env(version: str, *, pin: bool) -> dict[str, str]:
    return {"VERSIONS_CODE": version, "VERSIONS_PIN": "1" if pin else "0",
            "VERSIONS_WORKER": f"worker-{version}"}


def _run(args: list[str], version: str, *, pin: bool) -> str:
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, **_env(version, pin=pin)},
                          timeout=60)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def send(version: str, action: str, tag: str, *, pin: bool = False) -> str:
    """``start`` an order (its run id) or send its ``packed`` event from a ``version`` process."""
    return _run(["-m", "apps.versions_send", action, tag], version, pin=pin).strip()


def status(run_id: str) -> str:
    from apps.versions_app import app

    from celery_durable import get_run

    return str(get_run(run_id, app=app).status)


def until(run_id: str, state: str, timeout: float = 20.0) -> None:
    wait_for(lambda: status(run_id) == state, timeout, 0.05, f"{run_id} to be {state}")


def counts(redis_client: Any, tag: str) -> dict[str, int]:
    names = ("charge", "audit", "fraud", "notify", "ship")
    return {n: int(redis_client.get(f"{tag}:{n}") or 0) for n in names}


def ran_by(redis_client: Any, tag: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis_client.hgetall(f"{tag}:ran_by").items()}


def step_keys(run_id: str) -> list[str]:
    from apps.versions_app import app

    from celery_durable import get_run

    return [s.key for s in get_run(run_id, app=app).steps]


def test_a_v1_run_waiting_through_the_deploy_of_v2_finishes_on_the_old_path(
        start_worker, tag, redis_client):
    """v1 run suspended in a wait; the worker restarts on v2 (a step inserted behind
    patched(), one removed, an old patch deprecated); the old run keeps v1's path, a new
    run takes v2's, and no completed step runs twice."""
    from apps.versions_app import app

    from celery_durable import get_run

    old_tag, new_tag = f"{tag}-old", f"{tag}-new"
    v1 = start_worker("apps.versions_app", env=_env("v1", pin=False))
    old = send("v1", "start", old_tag)
    until(old, "WAITING")
    assert step_keys(old) == ["charge#0", "patched:audit#0", "audit#0", "notify#0",
                              "wait_for_event:packed#0"]
    v1.stop()

    start_worker("apps.versions_app", env=_env("v2", pin=False))
    new = send("v2", "start", new_tag)
    until(new, "WAITING")
    send("v2", "packed", old_tag)
    send("v2", "packed", new_tag)

    assert AsyncResult(old, app=app).get(timeout=30) == ["charge", "audit", "notify", "ship"]
    assert AsyncResult(new, app=app).get(timeout=30) == ["charge", "audit", "fraud", "ship"]
    assert counts(redis_client, old_tag) == {"charge": 1, "audit": 1, "fraud": 0, "notify": 1,
                                             "ship": 1}
    assert counts(redis_client, new_tag) == {"charge": 1, "audit": 1, "fraud": 1, "notify": 0,
                                             "ship": 1}
    assert ran_by(redis_client, old_tag) == {"charge": "worker-v1", "audit": "worker-v1",
                                             "notify": "worker-v1", "ship": "worker-v2"}
    assert step_keys(new) == ["charge#0", "audit#0", "patched:fraud#0", "fraud#0",
                              "patched:drop-notify#0", "wait_for_event:packed#0", "ship#0"]
    assert get_run(old, app=app).version == "v1"
    assert get_run(new, app=app).version == "v2"


def _in_flight(version: str) -> list[str]:
    """``celery durable runs --version V --status RUNNING,...`` (the drain check of the docs)."""
    out = _run(["-m", "celery", "-A", "apps.versions_app", "durable", "runs", "--version",
                version, "--status", "PENDING,RUNNING,SLEEPING,WAITING,RETRYING", "--json"],
               version, pin=True)
    return [r["id"] for r in json.loads(out)]


def test_pinned_runs_finish_on_their_own_versions_workers(start_worker, tag, redis_client):
    """durable_pin_version: a v1 and a v2 worker run side by side; each run's steps all run
    on its version's worker, a message that reaches the other version's worker is handed
    back, and a v1 run waits for a v1 worker while none is running."""
    from apps.versions_app import app

    a_tag, b_tag = f"{tag}-a", f"{tag}-b"
    v1 = start_worker("apps.versions_app", env=_env("v1", pin=True))
    v2 = start_worker("apps.versions_app", env=_env("v2", pin=True))
    assert f"{QUEUE}@v1" in v1.log() and f"{QUEUE}@v2" in v2.log()
    a = send("v1", "start", a_tag, pin=True)
    b = send("v2", "start", b_tag, pin=True)
    until(a, "WAITING")
    until(b, "WAITING")
    assert ran_by(redis_client, a_tag) == dict.fromkeys(["charge", "audit", "notify"],
                                                        "worker-v1")
    assert ran_by(redis_client, b_tag) == dict.fromkeys(["charge", "audit", "fraud"],
                                                        "worker-v2")
    assert a in _in_flight("v1") and a not in _in_flight("v2")

    # The v1 workers are stopped. A process without pinning wakes the v1 run: its message
    # goes to the run's own queue (the base queue: the version is not part of the run's
    # recorded routing), where only the v2 worker listens; it hands the run back, unrun.
    v1.stop()
    send("v1", "packed", a_tag, pin=False)
    wait_for(lambda: "sent to its version's queue" in v2.log(), 20, 0.1, "the hand-back")
    time.sleep(1.0)  # room for a wrong worker to run it: nothing may
    assert status(a) == "PENDING" and counts(redis_client, a_tag)["ship"] == 0
    assert a in _in_flight("v1")

    send("v2", "packed", b_tag, pin=True)
    assert AsyncResult(b, app=app).get(timeout=30) == ["charge", "audit", "fraud", "ship"]
    start_worker("apps.versions_app", env=_env("v1", pin=True))
    assert AsyncResult(a, app=app).get(timeout=30) == ["charge", "audit", "notify", "ship"]

    assert ran_by(redis_client, a_tag) == dict.fromkeys(["charge", "audit", "notify", "ship"],
                                                        "worker-v1")
    assert ran_by(redis_client, b_tag) == dict.fromkeys(["charge", "audit", "fraud", "ship"],
                                                        "worker-v2")
    assert counts(redis_client, a_tag) == {"charge": 1, "audit": 1, "fraud": 0, "notify": 1,
                                           "ship": 1}
    assert counts(redis_client, b_tag) == {"charge": 1, "audit": 1, "fraud": 1, "notify": 0,
                                           "ship": 1}
    assert _in_flight("v1") == []
