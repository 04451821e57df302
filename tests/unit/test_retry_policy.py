"""Retry policies: from the step, from the task's Celery options, or the default."""

from __future__ import annotations

import itertools

import pytest
from celery import Celery

from celery_durable import PermanentError, RetryAfter, RetryPolicy, durable_task, exponential, fixed
from celery_durable.engine.endings import task_policy
from celery_durable.engine.steps import _options
from celery_durable.retry import merge


@pytest.fixture
def app() -> Celery:
    return Celery("unit-retry", set_as_current=False)


_names = itertools.count()


def policy_of(app: Celery, **options: object) -> RetryPolicy:
    name = f"unit.retry.body{next(_names)}"

    @durable_task(app=app, name=name, **options)
    def body() -> None:
        pass

    return task_policy(app.tasks[name])  # the task itself, not the lazy proxy


def attempts_until_failure(policy: RetryPolicy, exc: BaseException) -> int:
    """How many attempts a step raising ``exc`` every time gets under ``policy``."""
    attempts = 0
    while True:
        attempts += 1
        if policy.decide(exc, attempts) is None:
            return attempts
        assert attempts < 100


def test_default_policy_is_three_attempts_with_exponential_backoff(app: Celery) -> None:
    """Without retry options every error retries, 3 attempts, growing backoff."""
    policy = policy_of(app)
    assert attempts_until_failure(policy, ValueError("x")) == 3
    assert attempts_until_failure(policy, KeyError("x")) == 3
    # jittered by default: each delay lies in [0, 2 ** (n - 1)]
    for _ in range(50):
        assert 0 <= policy.decide(ValueError(), 1) <= 1  # type: ignore[operator]
        assert 0 <= policy.decide(ValueError(), 2) <= 2  # type: ignore[operator]


def test_default_max_attempts_comes_from_the_setting(app: Celery) -> None:
    """``durable_default_max_attempts`` changes the default number of attempts."""
    app.conf.durable_default_max_attempts = 5
    assert attempts_until_failure(policy_of(app), RuntimeError()) == 5


def test_autoretry_for_retries_only_those_errors(app: Celery) -> None:
    """With ``autoretry_for`` only the listed exceptions (and subclasses) retry, as in Celery."""
    policy = policy_of(app, autoretry_for=(ConnectionError,), max_retries=2)
    assert attempts_until_failure(policy, ConnectionRefusedError()) == 3
    assert policy.decide(ValueError("no"), 1) is None
    # Celery's default_retry_delay (180 s) applies without retry_backoff
    assert policy.decide(ConnectionError(), 1) == 180


def test_max_retries_counts_retries_not_attempts(app: Celery) -> None:
    """``max_retries=N`` allows N retries, i.e. N + 1 attempts; 0 means a single attempt."""
    assert attempts_until_failure(policy_of(app, max_retries=4), OSError()) == 5
    assert attempts_until_failure(policy_of(app, max_retries=0), OSError()) == 1


def test_max_retries_none_retries_forever(app: Celery) -> None:
    """``max_retries=None`` never exhausts, as in Celery."""
    policy = policy_of(app, max_retries=None, default_retry_delay=1)
    assert policy.decide(OSError(), 10_000) == 1


def test_retry_backoff_doubles_up_to_the_maximum_without_jitter(app: Celery) -> None:
    """``retry_backoff=2`` waits 2, 4, 8 … seconds, capped by ``retry_backoff_max``."""
    policy = policy_of(app, retry_backoff=2, retry_backoff_max=10, retry_jitter=False,
                       max_retries=10)
    assert [policy.decide(OSError(), n) for n in range(1, 6)] == [2, 4, 8, 10, 10]


def test_retry_backoff_true_means_factor_one(app: Celery) -> None:
    """``retry_backoff=True`` waits 1, 2, 4 seconds, as Celery does."""
    policy = policy_of(app, retry_backoff=True, retry_jitter=False, max_retries=5)
    assert [policy.decide(OSError(), n) for n in (1, 2, 3)] == [1, 2, 4]


def test_retry_jitter_draws_below_the_exponential_delay(app: Celery) -> None:
    """With ``retry_jitter`` each delay is random in [0, factor * 2 ** (n - 1)]."""
    policy = policy_of(app, retry_backoff=4, retry_jitter=True, max_retries=10)
    delays = [policy.decide(OSError(), 3) for _ in range(200)]
    assert all(0 <= d <= 16 for d in delays)  # type: ignore[operator]
    assert len(set(delays)) > 1


def test_default_retry_delay_is_a_fixed_delay(app: Celery) -> None:
    """``default_retry_delay`` without ``retry_backoff`` waits that many seconds every time."""
    policy = policy_of(app, default_retry_delay=7, max_retries=3)
    assert [policy.decide(OSError(), n) for n in (1, 2, 3)] == [7, 7, 7]
    assert policy.decide(OSError(), 4) is None


def test_permanent_error_never_retries(app: Celery) -> None:
    """A PermanentError (or subclass) fails at once even when the policy would retry."""
    class CardDeclined(PermanentError):
        pass

    policy = policy_of(app, max_retries=10)
    assert policy.decide(PermanentError("no"), 1) is None
    assert policy.decide(CardDeclined("no"), 1) is None
    loose = policy_of(app, autoretry_for=(Exception,), max_retries=10)
    assert loose.decide(CardDeclined("no"), 1) is None


def test_retry_after_waits_exactly_its_seconds_within_max_attempts(app: Celery) -> None:
    """RetryAfter(s) retries after exactly ``s`` seconds and still counts against the limit."""
    policy = policy_of(app, retry_backoff=True)
    assert policy.decide(RetryAfter(2), 1) == 2.0
    assert policy.decide(RetryAfter(0.5), 2) == 0.5
    assert policy.decide(RetryAfter(2), 3) is None
    assert RetryAfter(2).seconds == 2.0


def test_no_retry_on_fails_at_once() -> None:
    """Errors in a step's ``no_retry_on`` fail at once; others still retry."""
    task_default = RetryPolicy(max_attempts=5, backoff=fixed(0))
    policy = merge(_options(None, None, (KeyError, LookupError), None), task_default)
    assert policy.decide(KeyError("k"), 1) is None
    assert policy.decide(IndexError("i"), 1) is None
    assert policy.decide(ValueError("v"), 1) == 0


def test_step_options_override_the_task_policy(app: Celery) -> None:
    """A step's ``max_attempts``, ``retry_on`` and ``backoff`` win over the task's options."""
    task_default = policy_of(app, autoretry_for=(ConnectionError,), max_retries=1)
    step_policy = merge(_options(4, TimeoutError, None, 0.25), task_default)
    assert attempts_until_failure(step_policy, TimeoutError()) == 4
    assert step_policy.decide(TimeoutError(), 1) == 0.25
    assert step_policy.decide(ConnectionError(), 1) is None
    # options the step leaves out are inherited
    inherit = merge(_options(3, None, None, None), task_default)
    assert inherit.retry_on == (ConnectionError,)


def test_exponential_helper_clamps_between_minimum_and_maximum() -> None:
    """``exponential(factor, minimum, maximum, jitter=False)`` doubles within its bounds."""
    backoff = exponential(0.5, minimum=1, maximum=3, jitter=False)
    assert [backoff(n) for n in range(1, 6)] == [1, 1, 2, 3, 3]
    jittered = exponential(1, minimum=1, maximum=8, jitter=True)
    assert all(1 <= jittered(4) <= 8 for _ in range(100))


def test_retry_kwargs_max_retries_and_countdown_keep_their_celery_meaning(app: Celery) -> None:
    """``retry_kwargs={"max_retries": N, "countdown": s}`` sets the attempts and the delay."""
    policy = policy_of(app, autoretry_for=(OSError,), retry_kwargs={"max_retries": 5,
                                                                    "countdown": 4})
    assert attempts_until_failure(policy, OSError()) == 6
    assert policy.decide(OSError(), 1) == 4
    backoff = policy_of(app, autoretry_for=(OSError,), retry_backoff=3, retry_jitter=False,
                        retry_kwargs={"max_retries": 1})
    assert attempts_until_failure(backoff, OSError()) == 2
    assert backoff.decide(OSError(), 1) == 3  # retry_backoff wins over countdown, as in Celery


def test_dont_autoretry_for_is_never_retried(app: Celery) -> None:
    """Exceptions in ``dont_autoretry_for`` fail at once even if ``autoretry_for`` covers them."""
    policy = policy_of(app, autoretry_for=(OSError,), dont_autoretry_for=(FileNotFoundError,),
                       max_retries=3)
    assert policy.decide(FileNotFoundError(), 1) is None
    assert policy.decide(OSError(), 1) is not None
