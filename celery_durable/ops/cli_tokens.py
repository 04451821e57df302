"""``celery -A proj durable tokens / complete-token``: wait tokens from the shell."""

from __future__ import annotations

import json

import click

from ..controls.tokens import complete_wait_token
from ..stores import get_store
from ..stores.base import wait_tokens_of
from .cli_support import app_of, clean_errors, iso, json_option, table


@click.command()
@click.option("--run", "run_id", metavar="RUN_ID", help="Only the tokens of this run.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
def tokens(ctx: click.Context, run_id: str | None, limit: int, as_json: bool) -> None:
    """List wait tokens, newest first: pending, completed or expired, with their run."""
    with clean_errors():
        found = wait_tokens_of(get_store(app_of(ctx))).list_wait_tokens(run_id=run_id,
                                                                        limit=limit)
    if as_json:
        click.echo(json.dumps([{"id": t.id, "run": t.run_id, "status": t.status,
                                "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
                                "completed_at": iso(t.completed_at), "tags": t.tags}
                               for t in found], indent=2))
    elif not found:
        click.echo("No wait tokens.")
    else:
        click.echo(table(["TOKEN", "RUN", "STATUS", "CREATED", "EXPIRES", "COMPLETED"],
                         [[t.id, t.run_id, t.status, iso(t.created_at) or "-",
                           iso(t.expires_at) or "never", iso(t.completed_at) or "-"]
                          for t in found]))


@click.command(name="complete-token")
@click.argument("token_id")
@click.option("--payload", "payload_json", metavar="JSON", help="The payload (JSON).")
@click.pass_context
def complete_token(ctx: click.Context, token_id: str, payload_json: str | None) -> None:
    """Complete a wait token; its run resumes with the payload (``complete_wait_token``)."""
    payload = json_option(payload_json, "--payload")
    with clean_errors():  # an unknown or expired token: its message, exit code 1
        done = complete_wait_token(token_id, payload, app=app_of(ctx))
    if done.first:
        click.echo(f"Completed {token_id}; {done.resumed} run(s) resumed.")
    else:
        click.echo(f"{token_id} was completed already (at {iso(done.completed_at)}); its "
                   "first payload is kept and sent to the run again.")


__all__ = ["complete_token", "tokens"]
