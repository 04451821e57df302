"""``celery -A proj durable export / check-replay / migrate``: histories and tables.

``export`` writes a run's recorded history as JSON (:mod:`.history_doc`);
``check-replay`` replays the current code against a task's in-flight runs and exits 1
on any divergence (the deploy gate, :mod:`.history_replay`); ``migrate`` creates or
updates the SQL store's tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from celery import Celery

from ..errors import NonDeterministicStepError
from ..records import RunRecord, RunStatus
from ..stores import get_store
from .cli_support import app_of as _app
from .cli_support import clean_errors as _errors
from .history_doc import export_run
from .history_replay import check_current_code
from .history_replay import replay as replay_history
from .inspection import select_runs, statuses

_STATUSES = [s.value for s in RunStatus]
_IN_FLIGHT = [s.value for s in RunStatus if not s.finished]


@click.command()
@click.argument("run_id", required=False)
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="File (one run) or folder (--task) to write; default: standard output.")
@click.option("--task", "task_name", help="Export a sample of this task's runs (to a folder).")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(_STATUSES, case_sensitive=False),
              help="With --task: only runs in these statuses (repeatable; default: any).")
@click.option("--limit", default=20, show_default=True, help="With --task: how many runs.")
@click.pass_context
def export(ctx: click.Context, run_id: str | None, output: Path | None,
           task_name: str | None, statuses: tuple[str, ...], limit: int) -> None:
    """Write a run's recorded history as JSON (for check-replay and testing.replay)."""
    if (run_id is None) == (task_name is None):
        raise click.UsageError("give a RUN_ID, or --task with --output DIR")
    app = _app(ctx)
    with _errors():
        if run_id is not None:
            text = json.dumps(export_run(run_id, app=app), indent=1)
            if output is None:
                click.echo(text)
            else:
                output.write_text(text + "\n", encoding="utf-8")
                click.echo(f"Wrote the history of {run_id} to {output}.")
            return
        if output is None:
            raise click.UsageError("--task needs --output DIR")
        output.mkdir(parents=True, exist_ok=True)
        runs = _sample(app, task_name or "", statuses, limit)
        for run in runs:
            (output / f"{run.id}.json").write_text(
                json.dumps(export_run(run.id, app=app), indent=1) + "\n", encoding="utf-8")
    click.echo(f"Wrote {len(runs)} histories of {task_name} to {output}.")


def _sample(app: Celery, task: str, wanted: Sequence[str], limit: int) -> list[RunRecord]:
    return select_runs(get_store(app), statuses(list(wanted)), task=task, tag=None,
                       version=None, limit=limit)


@click.command(name="check-replay")
@click.argument("run_id", required=False)
@click.option("--task", "task_name", help="The task whose in-flight runs to replay.")
@click.option("--limit", default=100, show_default=True, help="How many in-flight runs.")
@click.pass_context
def check_replay(ctx: click.Context, run_id: str | None, task_name: str | None,
                 limit: int) -> None:
    """Replay this code against the task's in-flight runs (or one run, in any state);
    exit 1 on any divergence.

    Reads the runs from the store and writes nothing; no step is called. Run it in a
    deploy pipeline with the new code before switching workers to it.
    """
    app = _app(ctx)
    if run_id is not None:
        if task_name is not None:
            raise click.UsageError("give a RUN_ID or --task, not both")
        with _errors():
            result = check_current_code(run_id, app=app)
        click.echo(f"Run {run_id} replays on this code: "
                   + ("it finishes." if result.finished else f"{result.replayed} recorded "
                      f"position(s), then {result.ended_at}."))
        return
    if task_name is None:
        raise click.UsageError("give a RUN_ID or --task NAME")
    task = app.tasks.get(task_name)
    if task is None:
        raise click.UsageError(f"no task {task_name!r} in this app")
    with _errors():
        runs = _sample(app, task_name, _IN_FLIGHT, limit)
    failures, errors = [], []
    for run in runs:  # one run that cannot be replayed does not stop the others
        try:
            replay_history(task, export_run(run.id, app=app))
        except NonDeterministicStepError as exc:
            failures.append(str(exc))
        except Exception as exc:
            errors.append(f"run {run.id}: could not be replayed: {type(exc).__name__}: {exc}")
    for text in [*failures, *errors]:
        click.echo(text, err=True)
    compatible = len(runs) - len(failures) - len(errors)
    click.echo(f"Replayed {len(runs)} in-flight run(s) of {task_name}: {compatible} "
               f"compatible, {len(failures)} diverge"
               + (f", {len(errors)} could not be replayed." if errors else "."))
    if failures or errors:
        ctx.exit(1)


@click.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or update the SQL store's tables (idempotent; safe to run on every deploy)."""
    with _errors():
        store: Any = get_store(_app(ctx))
        if not callable(getattr(store, "migrate", None)):
            raise click.ClickException(
                f"the checkpoint store is {type(store).__name__}, which has no tables to "
                "migrate (the SQL store of a db+... result backend has; the Django store's "
                "tables come with `manage.py migrate`)")
        applied = store.migrate()
    if applied:
        click.echo(f"Applied schema version(s) {', '.join(map(str, applied))} to {store!r}.")
    else:
        click.echo(f"{store!r} is up to date (schema version {store.schema_version()}).")


__all__ = ["check_replay", "export", "migrate"]
