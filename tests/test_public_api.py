"""The public surface of celery_durable: exported names, decorator options, steps outside runs."""

from __future__ import annotations

import json

import pytest
from celery import Celery, Task

import celery_durable
from celery_durable import DurableTask, durable_task, get_run, step
from celery_durable.task import DurableWorkerStep

EXPECTED_ALL = {
    "DurableTask", "durable_task", "step", "StepContext", "RetryPolicy", "exponential", "fixed",
    "now", "random", "uuid4", "patched", "deprecate_patch",
    "sleep", "sleep_until", "wait_for_event", "send_event", "wake_run",
    "create_wait_token", "wait_for_token", "complete_wait_token", "WaitToken", "TokenCompletion",
    "WaitTokenError", "WaitTokenNotFoundError", "WaitTokenExpiredError", "WaitTokenTimeoutError",
    "call", "gather", "map",
    "RunInfo", "RunStatus", "StepInfo", "StepStatus", "get_run", "list_runs", "retry_run",
    "retry_with_current_code", "check_current_code", "ReplayResult",
    "replay_run", "Attempt", "WaitState", "set_metadata", "update_metadata", "cancel_run",
    "signals", "StepLogFilter", "step_logger", "purge_runs",
    "CheckpointTooLargeError", "ChildCancelledError", "ChildRunError", "DurableError",
    "InvalidRunStateError",
    "NonDeterministicStepError", "PermanentError", "RetryAfter", "RunNotFoundError",
    "SerializationError", "StepFailedError", "StoreUnavailableError", "WorkerLostError",
}


def test_all_is_pinned() -> None:
    """``celery_durable.__all__`` is exactly the documented public API, each name importable."""
    assert sorted(celery_durable.__all__) == sorted(EXPECTED_ALL)
    assert len(celery_durable.__all__) == len(set(celery_durable.__all__))
    for name in celery_durable.__all__:
        assert getattr(celery_durable, name) is not None


def test_errors_form_one_hierarchy() -> None:
    """Every public error derives from DurableError."""
    for name in celery_durable.__all__:
        obj = getattr(celery_durable, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, celery_durable.DurableError), name


@pytest.fixture
def app() -> Celery:
    return Celery("api-test", set_as_current=False)


def test_unknown_option_raises_value_error_listing_it(app: Celery) -> None:
    """An unknown decorator option raises ValueError naming every unknown option."""
    with pytest.raises(ValueError) as info:
        @durable_task(app=app, max_retires=3, acks_lately=True)
        def typo() -> None:
            pass
    assert "max_retires" in str(info.value)
    assert "acks_lately" in str(info.value)
    with pytest.raises(ValueError, match="retry_backof"):
        durable_task(retry_backof=True)


def test_celery_task_options_are_accepted(app: Celery) -> None:
    """Every usual ``@app.task`` option is accepted and keeps its Celery meaning."""
    @durable_task(app=app, name="api.opts", bind=True, queue="q1", max_retries=5,
                  autoretry_for=(ConnectionError,), retry_backoff=True, retry_backoff_max=60,
                  retry_jitter=False, default_retry_delay=3, rate_limit="10/m", time_limit=30,
                  soft_time_limit=20, priority=5, ignore_result=False, serializer="json")
    def opts(self: Task) -> None:
        pass

    task = app.tasks["api.opts"]
    assert (task.queue, task.max_retries, task.rate_limit, task.time_limit) == ("q1", 5, "10/m", 30)
    assert task.autoretry_for == (ConnectionError,)
    assert task.priority == 5


def test_durable_tasks_default_to_late_ack_and_reject_on_worker_lost(app: Celery) -> None:
    """A durable task acks late and is redelivered when its worker is lost, unless overridden."""
    @durable_task(app=app, name="api.defaults")
    def defaults() -> None:
        pass

    @durable_task(app=app, name="api.override", acks_late=False)
    def override() -> None:
        pass

    task = app.tasks["api.defaults"]
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert app.tasks["api.override"].acks_late is False


def test_app_task_with_base_is_a_durable_task(app: Celery) -> None:
    """``@app.task(base=DurableTask)`` yields a durable task and installs the worker sweeper."""
    @app.task(base=DurableTask, name="api.base")
    def based() -> None:
        pass

    task = app.tasks["api.base"]
    assert isinstance(task, DurableTask)
    assert task.acks_late is True and task.reject_on_worker_lost is True
    assert DurableWorkerStep in app.steps["worker"]


def test_bound_decorator_installs_the_sweeper(app: Celery) -> None:
    """``@durable_task(app=app)`` adds the sweeper bootstep to that app's workers."""
    @durable_task(app=app, name="api.bound")
    def bound() -> None:
        pass

    assert isinstance(app.tasks["api.bound"], DurableTask)
    assert DurableWorkerStep in app.steps["worker"]


def test_bare_decorator_is_a_shared_task() -> None:
    """Bare ``@durable_task`` registers the task on every app, like ``@shared_task``."""
    first = Celery("api-shared-1", set_as_current=False)

    @durable_task
    def shared_durable() -> str:
        return "ok"

    second = Celery("api-shared-2", set_as_current=False)
    name = f"{__name__}.shared_durable"
    for app in (first, second):
        assert name in app.tasks
        assert isinstance(app.tasks[name], DurableTask)
        assert app.tasks[name].acks_late is True
    assert second.tasks[name] is not first.tasks[name]


def test_bare_decorator_with_options_is_shared() -> None:
    """``@durable_task(max_retries=...)`` without ``app`` is also a shared task."""
    @durable_task(max_retries=7)
    def shared_with_options() -> None:
        pass

    app = Celery("api-shared-3", set_as_current=False)
    task = app.tasks[f"{__name__}.shared_with_options"]
    assert isinstance(task, DurableTask)
    assert task.max_retries == 7


@step
def double(x: int) -> int:
    return 2 * x


@step(name="triple", max_attempts=2)
def triple(x: int) -> int:
    return 3 * x


def test_step_outside_a_run_is_a_plain_call() -> None:
    """Outside a durable run a step is the plain function: called, not checkpointed."""
    assert double(4) == 8
    assert triple(4) == 12
    assert step.run("inline", lambda a, b: a - b, 5, b=2) == 3
    assert double.__name__ == "double"
    # tuples are not turned into lists outside a run: nothing is serialized
    assert step.run("tup", tuple, [1, 2]) == (1, 2)


def test_step_context_outside_a_step_raises() -> None:
    """``step.context()`` outside a running step raises RuntimeError."""
    with pytest.raises(RuntimeError, match="step"):
        step.context()
    with pytest.raises(RuntimeError):
        step.run("ctx", step.context)  # a plain call outside a run: still no step


def test_deterministic_helpers_outside_a_run_are_plain() -> None:
    """``now()``, ``uuid4()`` and ``random()`` work outside a run as the plain functions."""
    assert celery_durable.now().tzinfo is not None
    assert celery_durable.uuid4() != celery_durable.uuid4()
    assert 0 <= celery_durable.random() < 1


def test_calling_a_durable_task_directly_runs_the_body(app: Celery) -> None:
    """``task(1)`` calls the body as a plain function, as for any Celery task."""
    @durable_task(app=app, name="api.direct")
    def direct(x: int) -> tuple[int, int]:
        return (x, double(x))

    assert direct(3) == (3, 6)


@pytest.mark.worker
def test_base_and_decorator_forms_behave_the_same(start_worker, tag, redis_client) -> None:
    """Both declarations run durably on a worker: same result, checkpoints and step context."""
    from apps.core_app import app, via_base, via_decorator

    start_worker("apps.core_app")
    outcomes = {}
    for task in (via_base, via_decorator):
        t = f"{tag}-{task.name}"
        result = task.delay(t)
        value = result.get(timeout=30)
        run = get_run(result.id, app=app)
        contexts = [json.loads(c) for c in redis_client.lrange(f"{t}:contexts", 0, -1)]
        outcomes[task.name] = (value, run, contexts, int(redis_client.get(f"{t}:add_one")))
    for value, run, contexts, adds in outcomes.values():
        assert value[:2] == [2, 3]
        assert adds == 2  # the retry of record_context replayed both add_one steps
        assert [s.key for s in run.steps] == ["add_one#0", "add_one#1", "record_context#0"]
        assert str(run.status) == "SUCCEEDED"
        # step.context(): run id, key, attempt, and an idempotency key stable across retries
        assert [c["attempt"] for c in contexts] == [1, 2]
        assert {c["run_id"] for c in contexts} == {run.id}
        assert {c["key"] for c in contexts} == {"record_context#0"}
        assert len({c["idempotency_key"] for c in contexts}) == 1
        assert value[2] == contexts[1]
    keys = [outcomes[name][2][0]["idempotency_key"] for name in outcomes]
    assert keys[0] != keys[1]


def test_eager_mode_checkpoints_in_memory_and_retries_inline() -> None:
    """With ``task_always_eager`` a durable task runs in-process, retrying a failing step inline."""
    app = Celery("api-eager", set_as_current=False)
    app.conf.update(task_always_eager=True, broker_url="memory://", result_backend="cache+memory://")
    calls: dict[str, int] = {"a": 0, "b": 0}

    @step(max_attempts=3)
    def flaky_once(x: int) -> tuple[int, int]:
        calls["b"] += 1
        if calls["b"] == 1:
            raise ConnectionError("once")
        return (x, x)

    @step
    def first(x: int) -> int:
        calls["a"] += 1
        return x + 1

    @durable_task(app=app, name="api.eager")
    def eager(x: int) -> list[object]:
        return [first(x), flaky_once(x)]

    result = app.tasks["api.eager"].delay(1)
    assert result.get() == [2, [1, 1]]  # the tuple came back a list, as after a replay
    assert calls == {"a": 1, "b": 2}
    run = get_run(result.id, app=app)
    assert [(s.key, s.attempts) for s in run.steps] == [("first#0", 1), ("flaky_once#0", 2)]


def test_run_api_errors() -> None:
    """Unknown runs raise RunNotFoundError; an invalid ``from_step`` raises ValueError."""
    app = Celery("api-errors", set_as_current=False)
    app.conf.update(durable_store="memory://", broker_url="memory://")
    with pytest.raises(celery_durable.RunNotFoundError):
        get_run("no-such-run", app=app)
    with pytest.raises(celery_durable.RunNotFoundError):
        celery_durable.retry_run("no-such-run", app=app)
    with pytest.raises(ValueError, match="from_step"):
        celery_durable.retry_run("no-such-run", from_step="middle", app=app)
    assert celery_durable.list_runs(app=app) == []


def test_handlers_and_a_plain_task_base_are_accepted(app: Celery) -> None:
    """``on_failure=`` and a ``base=`` that is any Celery Task subclass (its own attributes
    included) work as with ``@app.task``: DurableTask is mixed in after the user's class."""
    calls: list[str] = []

    class AuditedTask(Task):  # type: ignore[misc]
        audit_label = "none"

        def __call__(self, *args: object, **kwargs: object) -> object:
            calls.append(f"{self.audit_label}:{args}")
            return super().__call__(*args, **kwargs)

    def failed(self: Task, exc: BaseException, task_id: str, args: object, kwargs: object,
               einfo: object) -> None:
        calls.append("failed")

    @durable_task(app=app, name="api.audited", base=AuditedTask, audit_label="orders",
                  on_failure=failed)
    def audited(x: int) -> int:
        return x + 1

    task = app.tasks["api.audited"]
    assert isinstance(task, DurableTask) and isinstance(task, AuditedTask)
    assert type(task).__mro__.index(AuditedTask) < type(task).__mro__.index(DurableTask)
    assert task.audit_label == "orders" and task.on_failure is not None
    assert task.acks_late is True
    assert audited(1) == 2 and calls == ["orders:(1,)"]
    with pytest.raises(ValueError, match="audit_labl"):
        durable_task(app=app, base=AuditedTask, audit_labl="typo")
    with pytest.raises(ValueError, match="Celery Task subclass"):
        durable_task(app=app, base=dict)
