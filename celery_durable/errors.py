"""Exceptions raised by celery_durable.

The hierarchy, rooted at :class:`DurableError`::

    DurableError
     ├── PermanentError            raise it in a step: fail the run now, no retry
     ├── RetryAfter                raise it in a step: retry after exactly N seconds
     ├── StepFailedError           a step failed for good (attempts exhausted or permanent)
     ├── NonDeterministicStepError replay met a different step than the one recorded
     ├── SerializationError        a value cannot be stored as a checkpoint
     │    └── CheckpointTooLargeError
     ├── ChildRunError             a child run (call/gather/map) failed
     │    └── ChildCancelledError  … or was cancelled (also a PermanentError: no retry)
     ├── WorkerLostError           the run's worker died more often than allowed
     ├── RunNotFoundError          no run with that id in the store
     ├── InvalidRunStateError      the run is not in a state that allows the operation
     └── StoreUnavailableError     the checkpoint store cannot be reached or is misconfigured

Every error accepts a positional message (so Celery can rebuild it from a
result backend) and carries context as keyword-only attributes: ``run_id``
and ``step`` where they are known.

Control-flow signals used internally to unwind a task body (suspend, retry,
lost lease) derive from :class:`BaseException` so that a user's
``except Exception`` cannot swallow them; they live in ``_signals.py``.
"""

from __future__ import annotations


class DurableError(Exception):
    """Base class of every celery_durable error."""

    def __init__(self, message: str = "", *, run_id: str | None = None,
                 step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.step = step

    def __str__(self) -> str:
        return self.message


class PermanentError(DurableError):
    """Raise inside a step to fail the run at once, without retrying.

    Use it for errors that retrying cannot fix: a declined card, bad input,
    an authentication failure.
    """


class RetryAfter(DurableError):
    """Raise inside a step to retry it after exactly ``seconds`` (rate limits).

    The attempt counts against the step's ``max_attempts``.
    """

    def __init__(self, seconds: float = 0.0, message: str = "", *,
                 run_id: str | None = None, step: str | None = None) -> None:
        self.seconds = float(seconds)
        super().__init__(message or f"retry after {self.seconds:g}s", run_id=run_id, step=step)


class StepFailedError(DurableError):
    """A step failed for good: its attempts are exhausted or its error is permanent.

    Raised into the task body at the step's call site, on the first run and on
    every replay alike. ``error_type`` and ``error_message`` describe the
    original exception; ``traceback`` is its formatted traceback.
    """

    def __init__(self, message: str = "", *, run_id: str | None = None,
                 step: str | None = None, error_type: str = "", error_message: str = "",
                 traceback: str = "", attempts: int = 0) -> None:
        super().__init__(message, run_id=run_id, step=step)
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback
        self.attempts = attempts


class NonDeterministicStepError(DurableError):
    """Replay met a different step at a position than the one recorded.

    The task's code changed under an in-flight run, or the body branches on
    something that is not a step (time, randomness, I/O outside a step). When raised by
    replay it carries ``position``, ``recorded_steps`` and ``current_steps`` (step keys),
    ``recorded_version`` and ``current_version``.
    """

    position: int | None = None
    recorded_steps: list[str] | None = None
    current_steps: list[str] | None = None
    recorded_version: str | None = None
    current_version: str | None = None


class SerializationError(DurableError):
    """A value (step result, argument, task result) cannot be serialized."""


class CheckpointTooLargeError(SerializationError):
    """A serialized value exceeds ``durable_max_checkpoint_bytes``."""


class CorruptCheckpointError(SerializationError):
    """A stored run or checkpoint cannot be read back (truncated, edited, wrong format).

    The run is dead-lettered with this error instead of being retried, since
    no retry can make the stored bytes readable.
    """


class ChildRunError(DurableError):
    """A child run started with ``call``, ``gather`` or ``map`` ended without success.

    Raised at the call site as the step error of the parent, so the parent's
    retry policy applies: a retry re-triggers each failed child from its
    failed step (its completed steps are kept, as with ``retry_run``).
    ``children`` maps each failed child's run id to its status and error.
    """

    def __init__(self, message: str = "", *, run_id: str | None = None,
                 step: str | None = None, children: dict[str, str] | None = None) -> None:
        super().__init__(message, run_id=run_id, step=step)
        self.children = dict(children or {})


class ChildCancelledError(ChildRunError, PermanentError):
    """A child run was cancelled: the parent's step fails at once, without retry."""


class WorkerLostError(DurableError):
    """The run's worker was lost more than ``durable_max_recoveries`` times."""


class RunNotFoundError(DurableError):
    """No run with the given id exists in the store."""


class InvalidRunStateError(DurableError):
    """The run's state does not allow the requested operation."""


class StoreUnavailableError(DurableError):
    """The checkpoint store cannot be reached or is not configured."""


class WaitTokenError(DurableError):
    """A wait token cannot be completed: it is unknown (``WaitTokenNotFoundError``) or
    past its expiry (``WaitTokenExpiredError``)."""


class WaitTokenNotFoundError(WaitTokenError):
    """No wait token with the given id exists (or it was purged)."""


class WaitTokenExpiredError(WaitTokenError):
    """The wait token expired before it was completed; ``expired_at`` says when."""

    expired_at: float | None = None


class WaitTokenTimeoutError(DurableError):
    """``wait_for_token(..., timeout_error=True)``: the token expired before completion."""
