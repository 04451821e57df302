"""``patched(change_id)`` and ``deprecate_patch(change_id)``: change a task's code under
runs that are in flight.

A run replays its recorded steps by position. Inserting a step in the code would
shift every later position of a run recorded before the change, and its next
delivery would stop with :class:`~celery_durable.errors.NonDeterministicStepError`.
Guard the new code instead::

    if patched("fraud-check-2026-12"):
        fraud_check(order)

* A run that reaches this point with nothing recorded there (a new run, or a run
  going past its recorded history) records a *marker* at that position and gets
  True: it runs the new code, and every replay of it gets True again.
* A run whose history holds another step at this position was recorded by the
  old code: it gets False, and the marker takes no position, so the rest of its
  history still lines up.

Once no run older than the patch is in flight, the second deploy replaces the
``if`` by its body and leaves ``deprecate_patch("fraud-check-2026-12")`` at its
place: it records nothing, and skips the marker of a run recorded with it.
Inside loops each call is counted like a step (``patched:<id>#0``, ``#1``…).
Outside a run ``patched()`` is True (the new code is simply the code).
"""

from __future__ import annotations

from ..engine.context import RunContext, body_context
from ..engine.steps import recorded_at, write_checkpoint
from ..records import StepRecord, StepStatus

#: The prefix of a marker's step name: ``patched:<change id>``.
MARKER = "patched:"


def _change(change_id: object, what: str) -> str:
    if not isinstance(change_id, str) or not change_id.strip():
        raise ValueError(f"{what}() needs a non-empty string change id, got {change_id!r}")
    return change_id


def _marker_at(ctx: RunContext, name: str) -> tuple[str, StepRecord | None]:
    """The key of this call's marker and the checkpoint at the run's next position."""
    return ctx.name_key(name), recorded_at(ctx, ctx.peek())


def patched(change_id: str) -> bool:
    """True where the run executes the code behind ``change_id``, False where it was recorded
    by the code before it (see the module's documentation)."""
    name = MARKER + _change(change_id, "patched")
    ctx = body_context("patched")
    if ctx is None:
        return True
    key, recorded = _marker_at(ctx, name)
    if recorded is not None:
        if recorded.key != key:
            return False  # the old code's next step is recorded here
        ctx.advance()
        return True
    marker = StepRecord(ctx.peek(), key, name, StepStatus.SUCCEEDED, 1, "true")
    write_checkpoint(ctx, marker)
    ctx.advance()
    return True


def deprecate_patch(change_id: str) -> None:
    """The second deploy of ``patched(change_id)``: records nothing, and skips the marker
    where a run recorded one."""
    name = MARKER + _change(change_id, "deprecate_patch")
    ctx = body_context("deprecate_patch")
    if ctx is None:
        return
    key, recorded = _marker_at(ctx, name)
    if recorded is not None and recorded.key == key:
        ctx.advance()


__all__ = ["deprecate_patch", "patched"]
