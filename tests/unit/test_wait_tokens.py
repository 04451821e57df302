"""Wait tokens in one process with a MemoryStore: a delivery of a run is a request pushed on
the task (as a worker's), and a published message is read back from the memory broker."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore

from celery_durable import (
    WaitTokenExpiredError,
    WaitTokenNotFoundError,
    WaitTokenTimeoutError,
    complete_wait_token,
    create_wait_token,
    durable_task,
    get_run,
    step,
    wait_for_token,
)

app = Celery("wait-tokens", broker="memory://", backend="cache+memory://",
             set_as_current=False)
app.conf.durable_store = "memory://"
app.conf.durable_public_url = "https://shop.example.com/durable/"
handed: dict[str, Any] = {}


@step
def hand_out(url: str) -> str:
    handed.setdefault("urls", []).append(url)
    return url


@durable_task(app=app, name="tokens.approval")
def approval(timeout: float, strict: bool = False) -> dict[str, Any]:
    token = create_wait_token(timeout=timeout, tags=["approval"])
    hand_out(token.url)
    handed["token"] = token
    decision = wait_for_token(token, timeout_error=strict)
    return {"token": token.id, "decision": decision}


def deliver(run_id: str, *args: Any) -> Any:
    approval.push_request(id=run_id, is_eager=False, called_directly=False, delivery_info={},
                          retries=0, hostname="unit@test")
    try:
        return approval(*args)
    except Ignore:
        return None
    finally:
        approval.pop_request()


def test_a_run_waits_for_its_token_and_resumes_with_the_payload() -> None:
    run_id = str(uuid.uuid4())
    handed.clear()
    assert deliver(run_id, 600.0) is None  # suspended
    run = get_run(run_id, app=app)
    token = handed["token"]
    assert run.status == "WAITING" and run.wait is not None
    assert run.wait.event == "durable.token" and run.wait.key == token.id
    assert token.url == f"https://shop.example.com/durable/tokens/{token.id}"
    assert run.wait.until == pytest.approx(token.expires_at)
    done = complete_wait_token(token.id, {"approved": True}, app=app)
    assert done.first and done.resumed == 1 and done.run_id == run_id
    assert deliver(run_id, 600.0) == {"token": token.id, "decision": {"approved": True}}
    assert handed["urls"] == [token.url]  # the replay returned the same token: handed once
    again = complete_wait_token(token.id, {"approved": False}, app=app)
    assert not again.first and again.completed_at == done.completed_at


def test_a_token_completed_before_the_run_waits_is_received() -> None:
    """Completed between its creation and the wait (the run crashed in between, say)."""
    run_id = str(uuid.uuid4())

    @durable_task(app=app, name="tokens.early")
    def early() -> Any:
        token = create_wait_token(timeout=600)
        complete_wait_token(token.id, "early", app=app)  # (as if from elsewhere, in time)
        return wait_for_token(token)

    early.push_request(id=run_id, is_eager=False, called_directly=False, delivery_info={},
                       retries=0, hostname="unit@test")
    try:
        assert early() == "early"
    finally:
        early.pop_request()


def test_an_expired_token_times_the_wait_out_and_refuses_completion() -> None:
    handed.clear()
    run_id, strict_id = str(uuid.uuid4()), str(uuid.uuid4())
    deliver(run_id, 0.2)
    token = handed["token"]
    deliver(strict_id, 0.2, True)
    time.sleep(0.4)
    with pytest.raises(WaitTokenExpiredError) as caught:
        complete_wait_token(token.id, "late", app=app)
    assert caught.value.expired_at == pytest.approx(token.expires_at)
    assert deliver(run_id, 0.2) == {"token": token.id, "decision": None}
    with pytest.raises(WaitTokenTimeoutError):
        deliver(strict_id, 0.2, True)
    with pytest.raises(WaitTokenNotFoundError):
        complete_wait_token("no-such-token", 1, app=app)


def test_tokens_only_work_inside_a_run() -> None:
    with pytest.raises(RuntimeError, match="only works inside a durable run"):
        create_wait_token(timeout=1)
    with pytest.raises(RuntimeError, match="only works inside a durable run"):
        wait_for_token({"id": "x"})


def test_the_cli_lists_tokens_and_completes_one() -> None:
    from types import SimpleNamespace

    from click.testing import CliRunner

    from celery_durable.ops.cli import durable

    handed.clear()
    run_id = str(uuid.uuid4())
    deliver(run_id, 600.0)
    token = handed["token"]
    runner, obj = CliRunner(), SimpleNamespace(app=app)
    listed = runner.invoke(durable, ["tokens", "--run", run_id, "--json"], obj=obj)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["id"], r["status"]) for r in rows] == [(token.id, "pending")]
    done = runner.invoke(durable, ["complete-token", token.id, "--payload", '{"ok": 1}'],
                         obj=obj)
    assert done.exit_code == 0 and "1 run(s) resumed" in done.output, done.output
    again = runner.invoke(durable, ["complete-token", token.id], obj=obj)
    assert again.exit_code == 0 and "was completed already" in again.output
    unknown = runner.invoke(durable, ["complete-token", "nope"], obj=obj)
    assert unknown.exit_code == 1 and "no wait token 'nope'" in unknown.output
    table = runner.invoke(durable, ["tokens", "--run", run_id], obj=obj)
    assert token.id in table.output and "completed" in table.output
    assert deliver(run_id, 600.0)["decision"] == {"ok": 1}
