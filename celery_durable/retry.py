"""Retry policies: which errors retry, how often, and how long to wait.

A step's own options win; otherwise the policy comes from the task's Celery
options (``autoretry_for``, ``max_retries``, ``retry_backoff``,
``retry_backoff_max``, ``retry_jitter``, ``default_retry_delay``), with their
Celery meaning; otherwise the default: ``durable_default_max_attempts``
attempts with exponential backoff.
"""

from __future__ import annotations

import dataclasses
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import PermanentError, RetryAfter

Backoff = Callable[[int], float]
"""Seconds to wait before attempt ``n + 1``, given the ``n`` attempts made so far."""


#: ``max_attempts`` of a policy that retries forever (Celery's ``max_retries=None``).
FOREVER = 1_000_000


def exponential(factor: float = 1.0, *, minimum: float = 0.0, maximum: float = 600.0,
                jitter: bool = True) -> Backoff:
    """Exponential backoff: ``factor * 2 ** (attempts - 1)`` clamped to [minimum, maximum].

    With ``jitter`` the delay is drawn uniformly from [minimum, delay] ("full
    jitter", as Celery's ``retry_jitter``).
    """
    def delay(attempts: int) -> float:
        seconds = min(maximum, factor * 2 ** max(attempts - 1, 0))
        if jitter:
            seconds = _random.uniform(minimum, seconds) if seconds > minimum else minimum
        return float(max(minimum, seconds))
    return delay


def fixed(seconds: float) -> Backoff:
    """Always wait ``seconds`` between attempts."""
    return lambda attempts: seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How one step retries.

    ``retry_on`` lists the exceptions that retry (others fail the run at
    once); ``no_retry_on`` and :class:`PermanentError` never retry;
    :class:`RetryAfter` retries after its own delay.
    """

    max_attempts: int = 3
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    no_retry_on: tuple[type[BaseException], ...] = ()
    backoff: Backoff = exponential()  # noqa: RUF009 - a shared, stateless default

    def decide(self, exc: BaseException, attempts: int) -> float | None:
        """Seconds to wait before retrying after ``attempts`` failed attempts, or None to fail."""
        if isinstance(exc, (PermanentError, *self.no_retry_on)):
            return None
        if attempts >= self.max_attempts:
            return None
        if isinstance(exc, RetryAfter):
            return exc.seconds
        if not isinstance(exc, self.retry_on):
            return None
        return max(0.0, float(self.backoff(attempts)))


def as_backoff(value: Backoff | float | int | None) -> Backoff | None:
    """Accept a callable, a number of seconds (fixed delay) or None."""
    if value is None or callable(value):
        return value
    return fixed(float(value))


def policy_from_task(task: Any, default_max_attempts: int,
                     explicit: frozenset[str]) -> RetryPolicy:
    """The policy a task's Celery retry options describe.

    Also honours ``retry_kwargs`` (``max_retries``, ``countdown``) and
    ``dont_autoretry_for`` with their Celery meaning.

    ``explicit`` names the options the user set on the task, so Celery's class
    defaults (``max_retries = 3``, ``default_retry_delay = 180``) are not
    mistaken for choices.
    """
    autoretry_for = tuple(getattr(task, "autoretry_for", ()) or ())
    # Celery passes ``retry_kwargs`` to ``task.retry()``: they override max_retries / countdown.
    retry_kwargs = dict(getattr(task, "retry_kwargs", None) or {})
    if "max_retries" in retry_kwargs:
        explicit, max_retries = explicit | {"max_retries"}, retry_kwargs["max_retries"]
    else:
        max_retries = task.max_retries
    if "max_retries" in explicit and max_retries is not None:
        max_attempts = int(max_retries) + 1
    elif "max_retries" in explicit:
        max_attempts = FOREVER  # max_retries=None: retry forever, as in Celery
    else:
        max_attempts = default_max_attempts
    retry_backoff = getattr(task, "retry_backoff", False)
    jitter = bool(getattr(task, "retry_jitter", True))
    maximum = float(getattr(task, "retry_backoff_max", 600) or 600)
    backoff: Backoff
    if retry_backoff:
        backoff = exponential(float(retry_backoff), maximum=maximum, jitter=jitter)
    elif "countdown" in retry_kwargs:
        backoff = fixed(float(retry_kwargs["countdown"]))
    elif autoretry_for or "default_retry_delay" in explicit:
        backoff = fixed(float(task.default_retry_delay))
    else:
        backoff = exponential(1.0, maximum=maximum, jitter=jitter)
    return RetryPolicy(max_attempts=max_attempts,
                       retry_on=autoretry_for or (Exception,),
                       no_retry_on=tuple(getattr(task, "dont_autoretry_for", ()) or ()),
                       backoff=backoff)


def merge(step_policy: dict[str, Any], task_policy: RetryPolicy) -> RetryPolicy:
    """The task's policy with the options a step set explicitly on top."""
    chosen = {k: v for k, v in step_policy.items() if v is not None}
    return dataclasses.replace(task_policy, **chosen)
