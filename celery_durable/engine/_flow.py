"""Internal control-flow signals that unwind a task body.

They derive from BaseException so a user's ``except Exception`` in the task
body cannot swallow them (the same choice DBOS makes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..records import RunRecord, WaitInfo


class ControlSignal(BaseException):
    """Base of the internal unwinding signals."""


class Reenqueue(ControlSignal):
    """The run was parked in the store for a retry in ``delay`` seconds.

    ``broker``: the delivery sends the message with that countdown; else the
    delay waits in the store and the sweeper publishes the run when it is due.
    """

    def __init__(self, delay: float, cause: BaseException | None = None, *,
                 broker: bool = True) -> None:
        super().__init__(delay)
        self.delay = delay
        self.cause = cause
        self.broker = broker


class LeaseLost(ControlSignal):
    """Another delivery took over this run; stop without writing anything."""


class Suspend(ControlSignal):
    """The run was parked at a durable wait (``SLEEPING`` or ``WAITING``).

    The delivery ends cleanly (Celery ``Ignore``: no failure, no retry
    counted). ``publish`` is a run record to publish again at once (the wait
    was resolved while it was being parked).
    """

    def __init__(self, status: str, publish: RunRecord | None = None,
                 wait: WaitInfo | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.publish = publish
        self.wait = wait


class HistoryEnded(ControlSignal):
    """Replaying a recorded history (``testing.replay``): the code went past its end (a
    step without a checkpoint, a wait not yet resolved, anything that writes)."""

    def __init__(self, what: str, position: int) -> None:
        super().__init__(what)
        self.what = what
        self.position = position
