"""What the run page's step table says beyond a checkpoint: waits and failed attempts.

* A durable wait's checkpoint holds its wake time, not an outcome, until the
  wait ends: a pending wait is shown as *Sleeping* or *Waiting* with its wake
  time (or timeout), event name and key, never as a succeeded step; an ended
  one says how it ended (elapsed, woken, got its event, timed out, children done).
* Every failed attempt of a step, from the run's history (``HistoryRow``), is
  listed under the step: when, how long, the error, traceback and log lines,
  and the delay chosen before the next attempt.

Everything returned is plain text or ``format_html`` output; the template escapes text.
"""

from __future__ import annotations

import json
from typing import Any

from celery_durable.ops.inspection import WaitState, wait_state
from celery_durable.records import HistoryEntry, readable_history
from celery_durable.redact import redact_json_text, redact_text

from ..models import HistoryRow, Run
from .changelist import format_duration, from_epoch


def _when(seconds: float | None) -> str:
    moment = from_epoch(seconds)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "no timeout"


def stored_wait(value: str | None) -> WaitState | None:
    """The wait a succeeded checkpoint's stored JSON ``value`` holds, or None."""
    try:
        return wait_state(json.loads(value or "null"))
    except ValueError:
        return None


def wait_text(wait: WaitState, names: frozenset[str]) -> str:
    """The wait in words: pending (until when, for what) or how it ended."""
    awaited = f"event {wait.event!r} key {wait.key!r}"
    if wait.pending:
        if wait.kind == "sleep":
            return f"sleeping until {_when(wait.until)}"
        if wait.kind == "children":
            return f"waiting for {len(wait.children)} child run(s)"
        return f"waiting for {awaited} until {_when(wait.until)}"
    if wait.outcome == "event":
        payload = redact_json_text(json.dumps(wait.payload, ensure_ascii=False), names)
        return f"got {awaited}; payload: {payload}"
    return {
        "elapsed": f"slept until {_when(wait.until)} (elapsed)",
        "woken": "ended early by an operator (woken)",
        "timeout": f"timed out at {_when(wait.until)} waiting for {awaited}",
        "done": f"all {len(wait.children)} child run(s) finished",
    }.get(str(wait.outcome), f"ended ({wait.outcome})")


def failed_attempts(run: Run, names: frozenset[str]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """The failed attempts of each step (by position and key), oldest first, for the template.

    The attempt that is the checkpoint itself (a step that failed for good) is
    left out: the step's row shows it.
    """
    stored = HistoryRow.objects.using(run._state.db or "default").filter(
        run_id=run.pk, kind="attempt").order_by("id").values_list("pk", "entry")
    out: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for entry in readable_history(run.pk, stored):
        if entry.step is not None:
            out.setdefault((entry.step.position, entry.step.key), []).append(
                _attempt(entry, names))
    return out


def _attempt(entry: HistoryEntry, names: frozenset[str]) -> dict[str, Any]:
    step = entry.step
    assert step is not None
    error = step.error
    took = (step.finished_at - step.started_at if step.started_at is not None
            and step.finished_at is not None else None)
    of = f" of {step.max_attempts}" if step.max_attempts else ""
    return {"attempt": step.attempts, "number": f"{step.attempts}{of}", "status": step.status.value,
            "started": _when(step.started_at) if step.started_at else "—",
            "duration": format_duration(took),
            "retry_delay": (format_duration(step.retry_delay)
                            if step.retry_delay is not None else ""),
            "error": (f"{error.type}: {redact_text(error.message, names)}" if error else ""),
            "traceback": redact_text(error.traceback, names) if error else "",
            "logs": "\n".join(redact_text(line, names) for line in (error.logs if error else []))}
