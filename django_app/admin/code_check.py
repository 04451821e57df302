"""A run that died of ``NonDeterministicStepError``, checked against the code deployed now.

The run page of such a run replays this process's code of the task against
the run's recorded history (:func:`celery_durable.ops.history_replay.check_current_code`:
nothing is called or written) and shows the recorded step sequence beside
the current code's, the first difference marked. Once the code is patched
and replays the history, "Retry with the current code"
(:func:`celery_durable.retry_with_current_code`) resumes the run in place from
its failed position under the current code version.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from celery_durable import (
    DurableError,
    NonDeterministicStepError,
    check_current_code,
    retry_with_current_code,
)
from celery_durable.config import settings_for

from ..models import Run
from .actions import RETRIABLE, celery_app, each_run

#: The error type a run dead-lettered by a divergence records.
DIVERGED = "NonDeterministicStepError"


def diverged(run: Run) -> bool:
    """True for a FAILED run whose error is ``NonDeterministicStepError``."""
    return run.status == "FAILED" and (run.error_type or "").rsplit(".", 1)[-1] == DIVERGED


@dataclass
class CodeCheck:
    """The recorded sequence beside the current code's (what the run page shows)."""

    #: The run's recorded step keys, in order.
    recorded: list[str]
    #: The current code's step keys up to the first difference (None: it replays them all).
    current: list[str] | None = None
    #: Index of the first difference in both lists (None: none).
    differs_at: int | None = None
    #: The code version of this process (None: unversioned) and the run's.
    current_version: str | None = None
    run_version: str | None = None
    #: Why the code could not be checked here (the task is not registered, the body raised).
    problem: str | None = None
    #: Where a compatible replay stopped (the position the run resumes at).
    resumes_at: str | None = None

    @property
    def rows(self) -> list[tuple[str, str, bool]]:
        """(recorded step, the current code's step, whether they first differ here) per
        position; the current column is empty where the code could not be replayed."""
        now = (self.current if self.current is not None
               else self.recorded if self.problem is None else [])
        return [(rec, cur, i == self.differs_at) for i, (rec, cur)
                in enumerate(zip_longest(self.recorded, now, fillvalue=""))]

    @property
    def compatible(self) -> bool:
        """The current code replays the run's whole recorded history."""
        return self.problem is None and self.differs_at is None


def check(run: Run) -> CodeCheck:
    """Replay the current code of ``run``'s task against its history (reads only)."""
    app = celery_app(run.task)
    recorded = list(run.steps.order_by("position").values_list("key", flat=True))
    task = app.tasks.get(run.task)
    result = CodeCheck(recorded=recorded, run_version=run.version,
                       current_version=(getattr(task, "version", None)
                                        or settings_for(app).version))
    try:
        replayed = check_current_code(run.pk, app=app)
    except NonDeterministicStepError as exc:
        result.current = list(exc.current_steps or [])
        result.differs_at = exc.position
    except Exception as exc:  # the page goes on; the operator sees why
        result.problem = f"{type(exc).__name__}: {exc}"
    else:
        result.resumes_at = replayed.ended_at
    return result


@admin.action(permissions=["retry"], description="Retry selected runs with the current code")
def retry_with_the_current_code(modeladmin: admin.ModelAdmin[Any], request: HttpRequest,
                                queryset: QuerySet[Run]) -> HttpResponse | None:
    """Resume each failed run at its failed position under the code deployed now, once that
    code replays its history (a run it does not replay is left as it is, with the reason)."""
    def retry(run: Run) -> str | None:
        if run.status not in RETRIABLE:
            return f"{run.pk} is {run.status.lower()}"
        try:
            retry_with_current_code(run.pk, app=celery_app(run.task))
        except NonDeterministicStepError as exc:
            at, recorded = exc.position or 0, exc.recorded_steps or []
            return (f"{run.pk}: the current code still diverges at position {at} (recorded "
                    f"{recorded[at] if at < len(recorded) else '—'}, now "
                    f"{(exc.current_steps or ['—'])[-1]})")
        except LookupError as exc:
            raise DurableError(str(exc)) from None
        modeladmin.log_change(request, run, "Re-triggered from the failed step with the "
                              "current code.")
        return None

    return each_run(modeladmin, request, queryset, "re-triggered with the current code", retry,
                    "Retry {count} {runs} with the current code? Each resumes at its failed "
                    "position once the current code replays its recorded steps.")


ACTIONS = [retry_with_the_current_code]
