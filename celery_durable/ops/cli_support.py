"""What every ``celery -A proj durable`` command shares: the app, clean errors, options."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from celery import Celery

from ..config import app_or_current
from ..errors import DurableError, InvalidRunStateError, RunNotFoundError
from .retention import parse_age


def app_of(ctx: click.Context) -> Celery:
    """The ``-A`` app, with its task modules imported (and Django set up, as for a worker)."""
    obj = ctx.find_root().obj
    app = getattr(obj, "app", None)
    app = app if isinstance(app, Celery) else app_or_current(None)
    if not getattr(app, "_durable_cli_ready", False):
        app.loader.import_default_modules()  # runs Celery's Django fixup: django.setup()
        app._durable_cli_ready = True  # type: ignore[attr-defined]
    return app


@contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the engine's errors into clean messages with exit code 1."""
    try:
        yield
    except RunNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    except (InvalidRunStateError, DurableError, NotImplementedError) as exc:
        raise click.ClickException(str(exc)) from None
    except (click.ClickException, click.Abort):
        raise
    except Exception as exc:  # the store or broker: say what, without a traceback
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


@contextmanager
def refused_input() -> Iterator[None]:
    """Arguments the task's signature refuses, or an unknown step: bad input (exit code 2)."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None


def json_option(value: str | None, what: str, kind: type | None = None) -> Any:
    """``--option JSON`` parsed (None when not given); a bad one is a usage error."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None
    if kind is not None and not isinstance(parsed, kind):
        expected = "a JSON array" if kind is list else "a JSON object"
        raise click.BadParameter(f"must be {expected}", param_hint=what)
    return parsed


def age_option(value: str | None, what: str) -> float | None:
    """``--option 7d`` in seconds (None when not given); a bad one is a usage error."""
    if value is None:
        return None
    try:
        return parse_age(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (None stays None)."""
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows as a plain text table, columns padded to their widest cell."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


__all__ = ["age_option", "app_of", "clean_errors", "iso", "json_option", "refused_input",
           "table"]
