"""``celery -A apps.ops_app durable ...``: the real command against real runs of a real worker.

Each test uses its own store key prefix (worker and command alike), so
``purge`` and the listings only ever see the runs of that test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from harness import ROOT, wait_for

pytestmark = pytest.mark.worker


class Cli:
    """Runs ``python -m celery -A apps.ops_app durable ...`` with one store prefix."""

    def __init__(self) -> None:
        self.env = {"TEST_PREFIX": f"{os.environ['TEST_PREFIX']}cli-{uuid.uuid4().hex[:8]}:"}
        path = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
        self.full_env = {**os.environ, "PYTHONPATH": path, **self.env}

    def __call__(self, *args: str, input: str | None = None,
                 expect: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "celery", "-A", "apps.ops_app", "durable",
                               *args], cwd=ROOT, env=self.full_env, input=input,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def status(self, run_id: str) -> str:
        return str(self.json("show", run_id)["status"])


def test_cli_runs_show_and_retry_on_real_runs(start_worker, tag, redis_client):
    """runs (filters, table, JSON), show (timeline and log lines), retry one run with new
    kwargs and bulk-retry dead letters with a confirmation; bad input exits non-zero."""
    from apps.ops_app import checkout, doomed, fixable

    cli = Cli()
    start_worker("apps.ops_app", env=cli.env)
    redis_client.set(f"{tag}:broken", 1)
    ok = checkout.delay(tag, 0)
    assert ok.get(timeout=30) == "done ch-1"
    dead = doomed.delay(tag)
    broken = [fixable.delay(tag, i) for i in range(3)]
    for run_id in [dead.id, *(b.id for b in broken)]:
        wait_for(lambda r=run_id: cli.status(r) == "FAILED", 30, 0.2, f"{run_id} to fail")

    listed = cli.json("runs", "--task", "apps.ops_app.doomed")
    assert [(r["id"], r["status"], r["failed_step"]) for r in listed] == [
        (dead.id, "FAILED", "explode#0")]
    assert listed[0]["error"]["message"] == f"card declined for {tag}"
    table = cli("runs", "--status", "failed").stdout
    assert table.splitlines()[0].split()[:3] == ["RUN", "ID", "TASK"]
    assert dead.id in table and ok.id not in table
    assert {r["id"] for r in cli.json("runs", "--newer-than", "1h")} == {
        ok.id, dead.id, *(b.id for b in broken)}
    assert cli.json("runs", "--older-than", "1h") == []
    assert len(cli.json("runs", "--limit", "2")) == 2

    shown = cli("show", dead.id).stdout
    assert "Status   FAILED" in shown and "prepare#0" in shown and "explode#0" in shown
    assert "Last 50 log line(s) of explode#0" in shown
    assert f"about to fail for {tag}" in shown and f"explode line 11 of {tag}\n" in shown
    assert f"explode line 10 of {tag}\n" not in shown  # only the last 50 lines are kept
    steps = cli.json("show", dead.id)["steps"]
    assert [s["key"] for s in steps] == ["prepare#0", "explode#0"]
    assert len(steps[1]["error"]["logs"]) == 50

    # bad input: clear messages, non-zero exit codes, nothing changed
    assert "no durable run 'nope'" in cli("show", "nope", expect=1).stderr
    assert "not valid JSON" in cli("retry", broken[0].id, "--args", "[1,", expect=2).stderr
    assert "must be a JSON object" in cli("retry", broken[0].id, "--kwargs", "[1]",
                                          expect=2).stderr
    assert "not an age" in cli("runs", "--older-than", "soon", expect=2).stderr
    assert "give a RUN_ID" in cli("retry", expect=2).stderr
    assert "needs --task" in cli("retry", "--dead-letter", expect=2).stderr
    assert "no durable run 'nope'" in cli("retry", "nope", expect=1).stderr
    assert "SUCCEEDED" in cli("retry", ok.id, expect=1).stderr
    assert cli.status(broken[0].id) == "FAILED"

    assert "arguments do not fit" in cli("retry", broken[0].id, "--kwargs", '{"nope": 1}',
                                         expect=2).stderr
    assert "has no step 'nope'" in cli("replay", broken[0].id, "--from", "nope",
                                       expect=2).stderr
    assert cli.status(broken[0].id) == "FAILED"

    redis_client.delete(f"{tag}:broken")
    said = cli("retry", broken[0].id, "--args", json.dumps([tag]), "--kwargs", '{"x": 70}').stdout
    replay_id = said.split(" as ")[-1].strip().rstrip(".")
    assert said.startswith(f"Replaying {broken[0].id} with the new arguments as ")
    assert replay_id != broken[0].id
    assert fixable.AsyncResult(replay_id).get(timeout=30) == {"flag": "fixed", "x": 70}
    assert cli.status(broken[0].id) == "FAILED"  # the original is kept as it was
    shown = cli.json("show", replay_id)
    assert shown["replay_of"] == broken[0].id and shown["args"] == [tag]
    assert cli.json("show", broken[0].id)["replayed_as"] == [replay_id]

    refused = cli("retry", "--dead-letter", "--task", "apps.ops_app.fixable", input="n\n",
                  expect=1)
    assert "Leaving 1 dead-lettered run(s) that were already replayed" in refused.stdout
    assert "Retry 2 dead-lettered run(s) of apps.ops_app.fixable?" in refused.stdout
    assert cli.status(broken[1].id) == "FAILED"
    done = cli("retry", "--dead-letter", "--task", "apps.ops_app.fixable", "--yes").stdout
    assert "Retried 2 run(s)." in done
    assert [b.get(timeout=30) for b in broken[1:]] == [{"flag": "fixed", "x": 1},
                                                       {"flag": "fixed", "x": 2}]


def test_cli_wake_send_event_cancel_and_purge(start_worker, tag):
    """wake, send-event, cancel and purge act on real parked and finished runs; repeated or
    unknown targets and bad JSON or ages exit non-zero."""
    from apps.ops_app import approver, napper

    cli = Cli()
    start_worker("apps.ops_app", env=cli.env)
    sleeping, waiting, doomed_nap = napper.delay(tag), approver.delay(tag), napper.delay(tag)
    wait_for(lambda: cli.status(sleeping.id) == "SLEEPING", 30, 0.2, "the run to sleep")
    wait_for(lambda: cli.status(waiting.id) == "WAITING", 30, 0.2, "the run to wait")
    wait_for(lambda: cli.status(doomed_nap.id) == "SLEEPING", 30, 0.2, "the run to sleep")
    assert "Waiting  sleep at sleep#0" in cli("show", sleeping.id).stdout

    assert cli("wake", sleeping.id).stdout.strip() == f"Woke {sleeping.id}."
    assert sleeping.get(timeout=30) == "rested"
    assert "not sleeping or waiting" in cli("wake", sleeping.id, expect=1).stderr
    assert "no durable run 'nope'" in cli("wake", "nope", expect=1).stderr

    assert "not valid JSON" in cli("send-event", "ops-approval", tag, "--payload", "{bad",
                                   expect=2).stderr
    sent = cli("send-event", "ops-approval", tag, "--payload", '{"by": "ann"}').stdout
    assert "resumed 1 run(s)" in sent
    assert waiting.get(timeout=30) == {"by": "ann"}

    assert cli("cancel", doomed_nap.id).stdout.strip() == f"Cancelled {doomed_nap.id}."
    assert cli.status(doomed_nap.id) == "CANCELLED"
    assert "nothing to cancel" in cli("cancel", doomed_nap.id, expect=1).stderr
    assert "no durable run 'nope'" in cli("cancel", "nope", expect=1).stderr

    assert "not an age" in cli("purge", "--finished-before", "later", "--yes", expect=2).stderr
    assert "Aborted" in cli("purge", "--finished-before", "0s", input="n\n", expect=1).stderr
    assert "Purged 0 run(s)." in cli("purge", "--finished-before", "1d", "--yes").stdout
    assert "Purged 3 run(s)." in cli("purge", "--finished-before", "0s", "--yes").stdout
    assert cli.json("runs") == []
    assert "no durable run" in cli("show", doomed_nap.id, expect=1).stderr
