"""The error for a replay that meets another step than the one the run recorded."""

from __future__ import annotations

from ..errors import NonDeterministicStepError
from .context import RunContext

#: How many steps around the first difference :func:`diverged` lists.
SHOWN = 6


def _sequence(keys: list[str], position: int) -> str:
    """``keys`` around ``position``, the one at ``position`` marked ``>>key<<``."""
    start = max(0, position - SHOWN)
    shown = [f">>{k}<<" if start + i == position else k
             for i, k in enumerate(keys[start:position + SHOWN])]
    head = "… " if start else ""
    tail = " …" if position + SHOWN < len(keys) else ""
    return head + ", ".join(shown) + tail


def _history(ctx: RunContext) -> list[str]:
    keys = []
    for p in sorted(ctx.checkpoints):
        try:
            keys.append(ctx.checkpoints[p].key)
        except Exception:  # an unreadable record: shown as such, the error is about order
            keys.append("?")
    return keys


def diverged(ctx: RunContext, position: int, recorded: str,
             now: str) -> NonDeterministicStepError:
    """The error for a replay that met ``now`` where the run recorded ``recorded``: both
    step sequences (of the branch, in an async body) with the first difference marked,
    both code versions, what to do."""
    where, index = "", position
    if ctx.branches is not None:  # an async body: the sequences of that branch
        branch, history, index = ctx.branches.sequence(position)
        where = f" (in the branch {branch} of the async body)" if branch else ""
    else:
        history = _history(ctx)
    called = [*history[:index], now]  # the code matched the record up to here
    versions = (f"recorded under version {ctx.run_version or '(none)'}, replayed by "
                f"version {ctx.code_version or '(none)'}")
    error = NonDeterministicStepError(
        f"run {ctx.run_id}: at position {position}{where} the run recorded step "
        f"{recorded!r} but the code now calls {now!r} ({versions}).\n"
        f"  recorded: {_sequence(history, index)}\n"
        f"  now:      {_sequence(called, index)}\n"
        "The task's code changed under this in-flight run, or its body branches on "
        "something that is not a step. Insert new steps behind patched(\"<change id>\"), "
        "add them after the last step, or deploy the change under a new task name "
        "(docs/deploying.md); then retry the run.", run_id=ctx.run_id, step=now)
    error.position, error.recorded_steps, error.current_steps = position, history, called
    error.recorded_version, error.current_version = ctx.run_version, ctx.code_version
    return error


__all__ = ["diverged"]
