"""The run page's waterfall: one bar per step attempt on the run's time axis.

Each failed attempt (from the run's history) and each step's checkpointed
attempt is a bar from its start to its end; a sleep or an event wait is a bar
from the moment the run parked until it went on (the next step's start, the
run's end, or now while it waits); a wait for child runs has one bar per
child, linked to its page; recoveries (a lost worker, a lease taken over)
and operators' retries, cancels and wakes are marks on the axis. The step's
log lines sit under its bar.

Server-rendered: this module computes positions as percentages of the run's
span; the template draws them with the admin's CSS variables (dark mode
included). Labels and titles are plain text, escaped by the template.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.urls import reverse

from celery_durable.records import HistoryEntry
from celery_durable.redact import redact_text

from ..models import Run, Step
from ..store.rows import step_logs
from .changelist import format_duration
from .run_steps import Recorded, stored_wait, when

#: Most child runs drawn under a wait (the rest are counted).
MOST_CHILDREN = 50
#: The narrowest bar drawn, in percent of the span (an instant step stays visible).
MIN_WIDTH = 0.4


@dataclass
class Bar:
    """One row of the waterfall: a label and a bar at ``left``% of ``width``%."""

    label: str
    detail: str
    kind: str  # succeeded, failed, running, retrying, sleeping, waiting, waited, child-<status>
    left: float
    width: float
    title: str
    url: str = ""
    logs: list[str] = field(default_factory=list)
    child: bool = False

    @property
    def logs_text(self) -> str:
        """The log lines, one per line."""
        return "\n".join(self.logs)

    @property
    def style(self) -> str:
        """The bar's position (numbers only)."""
        return f"left: {self.left:.3f}%; width: {self.width:.3f}%"


@dataclass
class Mark:
    """A moment on the axis: a recovery or an operator's action."""

    left: float
    label: str
    when: str

    @property
    def style(self) -> str:
        """The mark's position (numbers only)."""
        return f"left: {self.left:.3f}%"


@dataclass
class Waterfall:
    """What the template draws: bars, marks and the axis ticks (position, text)."""

    bars: list[Bar]
    marks: list[Mark]
    ticks: list[tuple[str, str]]
    more_children: int = 0


class _Axis:
    """Epoch seconds → percent of the run's span."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.span = start, max(end - start, 1e-3)

    def left(self, moment: float) -> float:
        return min(max((moment - self.start) / self.span * 100, 0.0), 100.0)

    def width(self, begin: float, end: float) -> float:
        left = self.left(begin)
        return max(min(self.left(end) - left, 100.0 - left), MIN_WIDTH)


def build(run: Run, record: Recorded, names: frozenset[str],
          admin_site: str = "admin") -> Waterfall | None:
    """The run's waterfall from what the run page read (``record``), or None when no step
    has a start time yet."""
    steps = record.steps
    timed = [s for s in steps if s.started_at is not None]
    if not timed:
        return None
    now = time.time()
    start = min([run.started_at.timestamp() if run.started_at else timed[0].started_at,
                 timed[0].started_at, *(e.at for e in record.history if e.kind == "attempt")])
    end = run.finished_at.timestamp() if run.finished_at else now
    axis = _Axis(start, max(end, *(s.finished_at or s.started_at for s in timed)))
    bars: list[Bar] = []
    more = 0
    for index, step in enumerate(steps):
        for entry in record.attempts.get((step.position, step.key), []):
            bars.append(_attempt_bar(entry, axis, names))
        if step.started_at is None:
            continue
        wait = stored_wait(step.value) if step.status == "succeeded" else None
        if wait is None:
            bars.append(_step_bar(step, axis, names))
            continue
        following = next((s.started_at for s in steps[index + 1:] if s.started_at), None)
        until = following or end
        kind = ("sleeping" if wait.kind == "sleep" else "waiting") if wait.pending else "waited"
        bars.append(Bar(step.key, f"{wait.kind}, {'pending' if wait.pending else wait.outcome}",
                        kind, axis.left(step.started_at), axis.width(step.started_at, until),
                        f"{step.key}: parked {format_duration(until - step.started_at)}"))
        children, extra = _children(run, wait.children, axis, now, admin_site)
        bars += children
        more += extra
    marks = [Mark(axis.left(e.at), _mark_label(e), when(e.at, "")) for e in record.history
             if e.kind != "attempt"]
    ticks = [(f"left: {p}%", format_duration(axis.span * p / 100)) for p in (0, 25, 50, 75, 100)]
    return Waterfall(bars, marks, ticks, more)


def _attempt_bar(entry: HistoryEntry, axis: _Axis, names: frozenset[str]) -> Bar:
    step = entry.step
    assert step is not None
    begin = step.started_at if step.started_at is not None else entry.at
    finish = step.finished_at if step.finished_at is not None else entry.at
    error = f"{step.error.type}: {redact_text(step.error.message, names)}" if step.error else ""
    return Bar(step.key, f"attempt {step.attempts} failed", "failed", axis.left(begin),
               axis.width(begin, finish), f"{step.key} attempt {step.attempts}: {error} "
               f"({format_duration(finish - begin)})",
               logs=[redact_text(line, names) for line in (step.error.logs if step.error else [])])


def _step_bar(step: Step, axis: _Axis, names: frozenset[str]) -> Bar:
    begin = step.started_at
    assert begin is not None
    finish = step.finished_at if step.finished_at is not None else time.time()
    error = (f": {step.error_type}: {redact_text(step.error_message, names)}"
             if step.error_type else "")
    kind = ", transactional" if step.atomic else ""
    return Bar(step.key, f"attempt {step.attempts} {step.status}{kind}", step.status,
               axis.left(begin), axis.width(begin, finish),
               f"{step.key} {step.status}{error} ({format_duration(finish - begin)})",
               logs=[redact_text(line, names) for line in step_logs(step.error_logs)])


def _children(run: Run, ids: list[str], axis: _Axis, now: float,
              admin_site: str) -> tuple[list[Bar], int]:
    if not ids:
        return [], 0
    shown = ids[:MOST_CHILDREN]
    rows = {r["id"]: r for r in Run.objects.using(run._state.db or "default").filter(
        pk__in=shown).values("id", "task", "status", "created_at", "started_at", "finished_at")}
    bars = []
    for child_id in shown:
        row = rows.get(child_id)
        if row is None:
            continue
        begin = (row["started_at"] or row["created_at"]).timestamp()
        finish = row["finished_at"].timestamp() if row["finished_at"] else now
        url = reverse(f"{admin_site}:celery_durable_run_change", args=[child_id])
        bars.append(Bar(row["task"].rsplit(".", 1)[-1], f"child run {child_id}",
                        f"child-{str(row['status']).lower()}", axis.left(begin),
                        axis.width(begin, finish),
                        f"child run {child_id} ({row['task']}): {row['status']}, "
                        f"{format_duration(finish - begin)}", url=url, child=True))
    return bars, len(ids) - len(shown)


def _mark_label(entry: HistoryEntry) -> str:
    what = {"recovery": "recovered", "retry": "retried", "cancel": "cancelled",
            "wake": "woken"}.get(entry.kind, entry.kind)
    return f"{what}: {entry.detail}" if entry.detail else what
