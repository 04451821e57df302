"""The run page's step table (:func:`timeline`), and what it says beyond a checkpoint.

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
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery_durable.ops.inspection import WaitState, wait_state
from celery_durable.records import HistoryEntry, readable_history
from celery_durable.redact import redact_json_text, redact_text

from ..models import HistoryRow, Run, Step
from ..store.rows import step_logs
from .changelist import format_duration, from_epoch, pretty_json, status_badge


def when(seconds: float | None, missing: str = "no timeout") -> str:
    """Epoch seconds (the store's clock) as ``2026-12-04 03:21:25 UTC``, or ``missing``."""
    moment = from_epoch(seconds)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z") if moment else missing


@dataclass
class Recorded:
    """What the run page draws from, read once: the run's checkpoint rows (by position) and
    its readable history, oldest first (the step table and the waterfall share them)."""

    steps: list[Step]
    history: list[HistoryEntry]

    @cached_property
    def attempts(self) -> dict[tuple[int, str], list[HistoryEntry]]:
        """The failed attempts of each step, by (position, key), oldest first."""
        found: dict[tuple[int, str], list[HistoryEntry]] = {}
        for entry in self.history:
            if entry.kind == "attempt" and entry.step is not None:
                found.setdefault((entry.step.position, entry.step.key), []).append(entry)
        return found


def recorded(run: Run) -> Recorded:
    """The run's checkpoints and history: two queries."""
    stored = HistoryRow.objects.using(run._state.db or "default").filter(
        run_id=run.pk).order_by("id").values_list("pk", "entry")
    return Recorded(list(run.steps.all().order_by("position")),
                    list(readable_history(run.pk, stored)))


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
            return f"sleeping until {when(wait.until)}"
        if wait.kind == "children":
            return f"waiting for {len(wait.children)} child run(s)"
        return f"waiting for {awaited} until {when(wait.until)}"
    if wait.outcome == "event":
        payload = redact_json_text(json.dumps(wait.payload, ensure_ascii=False), names)
        return f"got {awaited}; payload: {payload}"
    return {
        "elapsed": f"slept until {when(wait.until)} (elapsed)",
        "woken": "ended early by an operator (woken)",
        "timeout": f"timed out at {when(wait.until)} waiting for {awaited}",
        "done": f"all {len(wait.children)} child run(s) finished",
    }.get(str(wait.outcome), f"ended ({wait.outcome})")


def run_wait_text(run: Run) -> str:
    """The run's current or last sleep / event wait, its wake time or timeout, and how it
    ended (from the wait's checkpoint) or "pending"."""
    if not run.wait_kind:
        return "—"
    what = (f"event {run.wait_event!r} key {run.wait_key!r}" if run.wait_kind == "event"
            else "sleep")
    if run.status in ("SLEEPING", "WAITING"):
        outcome = "pending"
    else:
        value = run.steps.filter(position=run.wait_position).values_list(
            "value", flat=True).first()
        wait = stored_wait(value) if value else None
        outcome = f"ended: {wait.outcome}" if wait is not None and wait.outcome else "ended"
    return f"{what} at step {run.wait_step}, until {when(run.wait_until)}; {outcome}"


def _attempt(entry: HistoryEntry, names: frozenset[str]) -> dict[str, Any]:
    step = entry.step
    assert step is not None
    error = step.error
    took = (step.finished_at - step.started_at if step.started_at is not None
            and step.finished_at is not None else None)
    of = f" of {step.max_attempts}" if step.max_attempts else ""
    return {"number": f"{step.attempts}{of}", "status": step.status.value,
            "started": when(step.started_at) if step.started_at else "—",
            "duration": format_duration(took),
            "retry_delay": (format_duration(step.retry_delay)
                            if step.retry_delay is not None else ""),
            "error": (f"{error.type}: {redact_text(error.message, names)}" if error else ""),
            "traceback": redact_text(error.traceback, names) if error else "",
            "logs": "\n".join(redact_text(line, names) for line in (error.logs if error else []))}


def timeline(record: Recorded, names: frozenset[str]) -> list[dict[str, Any]]:
    """The run's steps for the step table, each with its earlier failed attempts (the
    attempt that is the checkpoint itself, a step that failed for good, is left out: its
    row shows it); the template escapes them."""
    out = []
    for s in record.steps:
        duration = (s.finished_at - s.started_at if s.started_at is not None
                    and s.finished_at is not None else None)
        wait = stored_wait(s.value) if s.status == "succeeded" else None
        status = s.status
        if wait is not None and wait.pending:
            status = "sleeping" if wait.kind == "sleep" else "waiting"
        earlier = [_attempt(a, names) for a in record.attempts.get((s.position, s.key), [])
                   if status == "succeeded" or a.step is None or a.step.attempts != s.attempts]
        out.append({"position": s.position, "key": s.key, "name": s.name,
                    "atomic": s.atomic, "status": status, "status_badge": status_badge(status),
                    "attempts": s.attempts, "started": from_epoch(s.started_at),
                    "duration": format_duration(duration), "failures": earlier,
                    "output": (wait_text(wait, names) if wait is not None
                               else pretty_json(redact_json_text(s.value, names))
                               if s.value is not None else ""),
                    "error_type": s.error_type,
                    "error_message": redact_text(s.error_message, names),
                    "traceback": redact_text(s.error_traceback, names),
                    "logs": [redact_text(line, names) for line in step_logs(s.error_logs)]})
        out[-1]["logs_text"] = "\n".join(out[-1]["logs"])
    return out
