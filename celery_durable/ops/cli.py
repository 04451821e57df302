"""``celery -A proj durable ...``: inspect and operate durable runs from a shell.

Installed as a Celery subcommand (entry point group ``celery.commands``), so
it uses the project's own app, settings and store::

    celery -A proj durable runs --status FAILED --older-than 1h
    celery -A proj durable show RUN_ID
    celery -A proj durable retry RUN_ID [--from-start] [--args JSON] [--kwargs JSON]
    celery -A proj durable retry --dead-letter --task proj.tasks.charge [--yes]
    celery -A proj durable replay RUN_ID [--from STEP] [--args JSON] [--kwargs JSON]
    celery -A proj durable cancel RUN_ID [--terminate]
    celery -A proj durable wake RUN_ID
    celery -A proj durable send-event NAME KEY [--payload JSON]
    celery -A proj durable purge --finished-before 30d [--status FAILED] [--yes]
    celery -A proj durable migrate
    celery -A proj durable export RUN_ID [--output FILE]
    celery -A proj durable export --task T [--status S] [--limit N] --output DIR
    celery -A proj durable check-replay --task T [--limit N]

Exit codes: 0 done; 1 the command could not be carried out (unknown run, a run
in the wrong state, nothing to wake, store unreachable); 2 bad input (bad
JSON, bad age, unknown status, missing argument).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click
from celery import Celery

from ..controls.cancel import cancel_run
from ..controls.waits import send_event, wake_run
from ..errors import (
    InvalidRunStateError,
    RunNotFoundError,
)
from ..records import RunRecord, RunStatus
from ..stores import get_store
from .cli_history import check_replay, export, migrate
from .cli_support import age_option, app_of, clean_errors, iso, json_option, refused_input, table
from .cli_tokens import complete_token, tokens
from .inspection import get_run, select_runs, statuses
from .replay import replay_run, retry_run, retry_with_current_code
from .retention import DEFAULT_PURGE_STATUSES, purge_runs

_FINAL = [s.value for s in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)]
_app, _errors, _refused_input, _iso, _table = app_of, clean_errors, refused_input, iso, table
_json_option, _age = json_option, age_option


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    s = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{int(s)}s ago"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {"id": run.id, "task": run.task, "status": run.status.value,
            "created_at": _iso(run.created_at), "updated_at": _iso(run.updated_at),
            "finished_at": _iso(run.finished_at), "failed_step": run.failed_step,
            "error": None if run.error is None else {"type": run.error.type,
                                                     "message": run.error.message},
            "recoveries": run.recoveries, "parent": run.parent,
            "idempotency_key": run.idempotency_key, "tags": list(run.tags),
            "version": run.version, "replay_of": run.replay_of}


@click.group(name="durable")
def durable() -> None:
    """Inspect and operate durable runs (celery_durable)."""


def _select(app: Celery, status: str | None, task: str | None, older: float | None,
            newer: float | None, limit: int, tag: str | None = None,
            version: str | None = None) -> list[RunRecord]:
    fetch = limit if older is None and newer is None else max(limit, 10_000)
    runs = select_runs(get_store(app), statuses(status), task=task, tag=tag, version=version,
                       limit=fetch)
    now = time.time()
    if older is not None:
        runs = [r for r in runs if r.created_at is not None and r.created_at <= now - older]
    if newer is not None:
        runs = [r for r in runs if r.created_at is not None and r.created_at >= now - newer]
    return runs[:limit]


def _status_list(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--status``: one run state, or several separated by commas (``RUNNING,WAITING``)."""
    try:
        return ",".join(s.value for s in statuses(value)) if value else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@durable.command()
@click.option("--status", callback=_status_list, metavar="STATUS[,STATUS...]",
              help="Only runs in this state (or these: RUNNING,SLEEPING,WAITING).")
@click.option("--task", help="Only runs of this task (its registered name).")
@click.option("--older-than", "older", metavar="AGE",
              help="Only runs created longer ago than AGE (90s, 15m, 2h, 7d, 1w).")
@click.option("--newer-than", "newer", metavar="AGE", help="Only runs created within AGE.")
@click.option("--tag", help="Only runs carrying this tag.")
@click.option("--version", "code_version", metavar="VERSION",
              help="Only runs started under this code version.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
def runs(ctx: click.Context, status: str | None, task: str | None, older: str | None,
         newer: str | None, tag: str | None, code_version: str | None, limit: int,
         as_json: bool) -> None:
    """List runs, newest first."""
    older_s, newer_s = _age(older, "--older-than"), _age(newer, "--newer-than")
    with _errors():
        found = _select(_app(ctx), status, task, older_s, newer_s, limit, tag, code_version)
    if as_json:
        click.echo(json.dumps([_run_json(r) for r in found], indent=2))
        return
    if not found:
        click.echo("No runs.")
        return
    now = time.time()
    rows = [[r.id, r.task, r.status.value, _ago(r.created_at, now), _ago(r.updated_at, now),
             r.failed_step or "", _short(f"{r.error.type.rsplit('.', 1)[-1]}: {r.error.message}",
                                         60) if r.error else ""] for r in found]
    click.echo(_table(["RUN ID", "TASK", "STATUS", "CREATED", "UPDATED", "FAILED STEP",
                       "ERROR"], rows))


def _show_text(info: Any) -> str:
    out = [f"Run      {info.id}", f"Task     {info.task}", f"Status   {info.status.value}",
           f"Created  {_when(info.created_at)}", f"Started  {_when(info.started_at)}",
           f"Finished {_when(info.finished_at)}",
           f"Args     {_short(json.dumps(info.args, default=str), 200)}",
           f"Kwargs   {_short(json.dumps(info.kwargs, default=str), 200)}"]
    if info.parent:
        out.append(f"Parent   {info.parent}")
    if info.tags:
        out.append(f"Tags     {', '.join(info.tags)}")
    if info.version:
        out.append(f"Version  {info.version}")
    if info.replay_of:
        out.append(f"Replays  {info.replay_of}")
    if info.replayed_as:
        out.append(f"Replayed as {', '.join(info.replayed_as)}")
    for name, value in info.metadata.items():
        out.append(f"Metadata {name} = {_short(json.dumps(value, default=str), 160)}")
    if info.recoveries:
        out.append(f"Recovered {info.recoveries} time(s) from a lost worker")
    if info.wait is not None and info.status.value in ("SLEEPING", "WAITING"):
        w = info.wait
        what = f"event {w.event!r} key {w.key!r}" if w.kind == "event" else w.kind
        out.append(f"Waiting  {what} at {w.step}, until {_when(w.until)}")
    if info.status is RunStatus.SUCCEEDED:
        out.append(f"Result   {_short(json.dumps(info.result, default=str), 200)}")
    if info.error is not None:
        out.append(f"Error    {info.error.type}: {info.error.message}")
        if info.failed_step:
            out.append(f"Failed step {info.failed_step}")
    out.append("")
    if not info.steps:
        out.append("No step has been checkpointed yet.")
        return "\n".join(out)
    rows = []
    for s in info.steps:
        took = (f"{s.finished_at - s.started_at:.3f}s" if s.started_at is not None
                and s.finished_at is not None else "-")
        detail = (f"{s.error.type.rsplit('.', 1)[-1]}: {s.error.message}" if s.error
                  else json.dumps(s.value, default=str))
        rows.append([str(s.position), s.key + (" (transactional)" if s.atomic else ""),
                     s.status.value, str(s.attempts),
                     _when(s.started_at), took, _short(detail, 70)])
    out.append(_table(["#", "STEP", "STATUS", "ATTEMPTS", "STARTED", "TOOK", "OUTPUT / ERROR"],
                      rows))
    for s in info.steps:
        if s.error is not None and s.error.logs:
            out += ["", f"Last {len(s.error.logs)} log line(s) of {s.key} "
                        f"(attempt {s.attempts}):"]
            out += [f"  {line}" for line in s.error.logs]
    if info.history:
        out += ["", "History:"]
        for entry in info.history:
            what = entry.detail
            if entry.step is not None:
                err = entry.step.error
                what = (f"{entry.step.key} attempt {entry.step.attempts}"
                        + (f": {err.type.rsplit('.', 1)[-1]}: {err.message}" if err else ""))
            out.append(f"  {_when(entry.at)}  {entry.kind:<8}  {_short(what, 100)}")
    if info.error is not None and info.error.traceback:
        out += ["", "Traceback of the failure:", info.error.traceback.rstrip()]
    return "\n".join(out)


def _step_json(s: Any) -> dict[str, Any]:
    return {"position": s.position, "key": s.key, "name": s.name, "status": s.status.value,
            "attempts": s.attempts, "value": s.value, "started_at": _iso(s.started_at),
            "finished_at": _iso(s.finished_at), "atomic": s.atomic,
            "error": None if s.error is None else {
                "type": s.error.type, "message": s.error.message,
                "traceback": s.error.traceback, "logs": list(s.error.logs)}}


@durable.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The run and its steps as JSON.")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show a run and its step timeline (with a failed step's last log lines)."""
    with _errors():
        info = get_run(run_id, app=_app(ctx))
    if not as_json:
        click.echo(_show_text(info))
        return
    record = {"id": info.id, "task": info.task, "status": info.status.value,
              "args": info.args, "kwargs": info.kwargs, "result": info.result,
              "error": None if info.error is None else {
                  "type": info.error.type, "message": info.error.message,
                  "traceback": info.error.traceback},
              "failed_step": info.failed_step, "recoveries": info.recoveries,
              "created_at": _iso(info.created_at), "started_at": _iso(info.started_at),
              "finished_at": _iso(info.finished_at), "parent": info.parent,
              "tags": info.tags, "version": info.version, "metadata": info.metadata,
              "retries": info.retries, "replay_of": info.replay_of,
              "replayed_as": info.replayed_as,
              "steps": [_step_json(s) for s in info.steps],
              "history": [{"kind": h.kind, "at": _iso(h.at), "detail": h.detail,
                           "step": None if h.step is None else _step_json(h.step)}
                          for h in info.history]}
    click.echo(json.dumps(record, indent=2, default=str))


@durable.command()
@click.argument("run_id", required=False)
@click.option("--from-start", is_flag=True, help="Drop every checkpoint and run from scratch.")
@click.option("--args", "args_json", metavar="JSON", help="Replace the arguments (a JSON array).")
@click.option("--kwargs", "kwargs_json", metavar="JSON",
              help="Replace the keyword arguments (a JSON object).")
@click.option("--dead-letter", is_flag=True,
              help="Retry every dead-lettered run of --task (but those already replayed).")
@click.option("--task", help="With --dead-letter: the task whose dead letters to retry.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1),
              help="With --dead-letter: at most this many runs.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--current-code", is_flag=True,
              help="Resume from the failed position under this code and its version, once "
                   "this code replays the run's history (after NonDeterministicStepError).")
@click.pass_context
def retry(ctx: click.Context, run_id: str | None, from_start: bool, args_json: str | None,
          kwargs_json: str | None, dead_letter: bool, task: str | None, limit: int,
          yes: bool, current_code: bool) -> None:
    """Re-trigger a FAILED or CANCELLED run, or (--dead-letter) every dead letter of a task.

    With --args/--kwargs the run is replayed into a new run (see ``replay``);
    the original stays as it is, linked to the new one.
    """
    app = _app(ctx)
    if current_code:
        if not run_id or dead_letter or from_start or args_json or kwargs_json:
            raise click.UsageError("--current-code takes a RUN_ID and no other option")
        with _errors():
            retry_with_current_code(run_id, app=app)
        click.echo(f"Retrying {run_id} from its failed position with the current code.")
        return
    from_step = "start" if from_start else "failed"
    if dead_letter:
        if run_id or args_json or kwargs_json:
            raise click.UsageError("--dead-letter takes neither RUN_ID nor --args/--kwargs")
        if not task:
            raise click.UsageError("--dead-letter needs --task NAME")
        with _errors():
            dead = _select(app, RunStatus.FAILED.value, task, None, None, limit)
        replayed = [r for r in dead if r.replayed_as]
        dead = [r for r in dead if not r.replayed_as]
        if replayed:
            click.echo(f"Leaving {len(replayed)} dead-lettered run(s) that were already "
                       f"replayed as new runs.")
        if not dead:
            click.echo(f"No dead-lettered runs of {task}{' left' if replayed else ''}.")
            return
        if not yes:
            click.confirm(f"Retry {len(dead)} dead-lettered run(s) of {task}"
                          f"{' from the start' if from_start else ''}?", abort=True)
        retried = 0
        for run in dead:
            try:
                retry_run(run.id, from_step=from_step, app=app)
                retried += 1
            except (InvalidRunStateError, RunNotFoundError) as exc:  # retried meanwhile
                click.echo(f"skipped {run.id}: {exc}", err=True)
        click.echo(f"Retried {retried} run(s).")
        return
    if not run_id:
        raise click.UsageError("give a RUN_ID, or --dead-letter --task NAME")
    args = _json_option(args_json, "--args", list)
    kwargs = _json_option(kwargs_json, "--kwargs", dict)
    if args is not None or kwargs is not None:
        with _errors(), _refused_input():
            new = replay_run(run_id, args=args, kwargs=kwargs, app=app)
        click.echo(f"Replaying {run_id} with the new arguments as {new.id}.")
        return
    with _errors():
        retry_run(run_id, from_step=from_step, app=app)
    click.echo(f"Retrying {run_id}{' from the start' if from_start else ''}.")


@durable.command()
@click.argument("run_id")
@click.option("--from", "from_step", default="start", show_default=True, metavar="STEP",
              help="'start', 'failed' (keep every step that succeeded) or a step key "
                   "(keep the steps before it).")
@click.option("--args", "args_json", metavar="JSON",
              help="New arguments (a JSON array); default: the original's.")
@click.option("--kwargs", "kwargs_json", metavar="JSON",
              help="New keyword arguments (a JSON object); default: the original's.")
@click.option("--idempotency-key", metavar="KEY",
              help="A second replay under the same key starts nothing new.")
@click.pass_context
def replay(ctx: click.Context, run_id: str, from_step: str, args_json: str | None,
           kwargs_json: str | None, idempotency_key: str | None) -> None:
    """Start a new run that replays RUN_ID (any state); the original is kept and linked."""
    app = _app(ctx)
    args = _json_option(args_json, "--args", list)
    kwargs = _json_option(kwargs_json, "--kwargs", dict)
    with _errors(), _refused_input():
        new = replay_run(run_id, args=args, kwargs=kwargs, from_step=from_step,
                         idempotency_key=idempotency_key, app=app)
    click.echo(f"Replaying {run_id} as {new.id}.")


@durable.command()
@click.argument("run_id")
@click.option("--terminate", is_flag=True, help="Also kill the step in flight (revoke).")
@click.pass_context
def cancel(ctx: click.Context, run_id: str, terminate: bool) -> None:
    """Cancel a run and its child runs."""
    app = _app(ctx)
    with _errors():
        run = get_store(app).get_run(run_id)
        if run is None:
            raise RunNotFoundError(f"no durable run {run_id!r}", run_id=run_id)
        if not cancel_run(run_id, terminate=terminate, app=app):
            raise click.ClickException(f"run {run_id} is {run.status.value}: nothing to cancel")
    click.echo(f"Cancelled {run_id}.")


@durable.command()
@click.argument("run_id")
@click.pass_context
def wake(ctx: click.Context, run_id: str) -> None:
    """Resume a SLEEPING or WAITING run now (a wait then returns None)."""
    with _errors():
        if not wake_run(run_id, app=_app(ctx)):
            raise click.ClickException(f"run {run_id} is not sleeping or waiting")
    click.echo(f"Woke {run_id}.")


@durable.command(name="send-event")
@click.argument("name")
@click.argument("key")
@click.option("--payload", metavar="JSON", help="The event's payload (JSON; default null).")
@click.pass_context
def send_event_command(ctx: click.Context, name: str, key: str, payload: str | None) -> None:
    """Send event NAME with KEY: resumes the runs waiting for it."""
    value = _json_option(payload, "--payload")
    with _errors():
        resumed = send_event(name, key, value, app=_app(ctx))
    click.echo(f"Event {name}[{key}] sent; resumed {resumed} run(s).")


@durable.command()
@click.option("--finished-before", "age", required=True, metavar="AGE",
              help="Purge runs that finished longer ago than AGE (e.g. 7d).")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(_FINAL, case_sensitive=False),
              help="Statuses to purge (repeatable; default SUCCEEDED and CANCELLED: dead "
                   "letters only when named).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, age: str, statuses: tuple[str, ...], yes: bool) -> None:
    """Delete finished runs and their checkpoints."""
    seconds = _age(age, "--finished-before")
    assert seconds is not None
    chosen = [s.upper() for s in statuses] or [s.value for s in DEFAULT_PURGE_STATUSES]
    if not yes:
        click.confirm(f"Purge {', '.join(chosen)} runs that finished more than {age} ago?",
                      abort=True)
    with _errors():
        purged = purge_runs(finished_before=time.time() - seconds, status=chosen,
                            app=_app(ctx))
    click.echo(f"Purged {purged} run(s).")


for _command in (export, check_replay, migrate, tokens, complete_token):
    durable.add_command(_command)

__all__ = ["durable"]
