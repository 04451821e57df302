"""Where a Celery task becomes durable: ``DurableTask``, ``@durable_task``, the worker bootstep.

Every delivery of a durable task goes to :func:`celery_durable.engine.runner.execute`
(with the concurrency limits of :mod:`celery_durable.controls.concurrency` as its
gate); ``apply_async`` registers the run (or takes the idempotent-trigger path of
:mod:`celery_durable.controls.idempotency`) before it sends the message; and every
worker of an app with durable tasks checks its store at start and runs the
sweeper thread (:mod:`celery_durable.ops.sweeper`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from celery import Celery, Task, bootsteps, shared_task, signals, states
from celery.exceptions import Ignore
from celery.worker.request import Request

from .config import settings_for
from .controls import concurrency
from .controls.cancel import cancel_revoked
from .controls.idempotency import check_call, register, trigger
from .engine import endings, events, tracing
from .engine.async_steps import MAX_PARALLEL_STEPS, delivery_body
from .engine.context import active_run
from .engine.labels import code_version, run_tags
from .engine.pinning import consume_version_queues, pinned, pinning, worker_versions
from .engine.runner import execute
from .ops.sweeper import Sweeper
from .stores import get_store

logger = logging.getLogger(__name__)

#: Options ``@app.task`` accepts beyond the Task class attributes.
_DECORATOR_OPTIONS = frozenset({
    "name", "bind", "base", "shared", "lazy", "filter", "autoretry_for", "dont_autoretry_for",
    "retry_kwargs", "retry_backoff", "retry_backoff_max", "retry_jitter", "queue", "exchange",
    "routing_key", "pydantic", "pydantic_strict", "pydantic_context", "pydantic_dump_kwargs",
    "compression", "store_eager_result", "delivery_mode", "shadow_name",
})


def _public_names(cls: type) -> frozenset[str]:
    """The public names ``cls`` and its bases define below ``object``: attributes and the
    methods a task may override (``on_failure=``, ``after_return=``, ...)."""
    return frozenset(name for klass in cls.__mro__ if klass is not object
                     for name in vars(klass) if not name.startswith("_"))


ALLOWED_OPTIONS = (_DECORATOR_OPTIONS | _public_names(Task) | concurrency.OPTIONS
                   | {"tags", "version", "max_parallel_steps"})


class DurableRequest(Request):  # type: ignore[misc]
    """The worker's request of a durable task: a hard time limit is a failed attempt."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        """Celery records the failure; the run is retried under its policy or dead-lettered
        (never counted as a lost worker and run again by the sweeper)."""
        super().on_timeout(soft, timeout)
        if soft:
            return
        try:
            endings.time_limit_exceeded(self.task, self.id, worker_pid=self.worker_pid,
                                        retries=int(self.request_dict.get("retries") or 0),
                                        timeout=timeout)
        except Exception:  # the sweeper recovers the run once its lease expires
            logger.exception("run %s: could not record its hard time limit", self.id)


class DurableTask(Task):  # type: ignore[misc]
    """A Celery task whose steps are checkpointed; use it via ``@durable_task``.

    ``@app.task(base=DurableTask)`` is equivalent to ``@durable_task(app=app)``.
    Calling the task object directly (``task(1, 2)``) runs the body as a plain
    function, as Celery does.
    """

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    Request = DurableRequest
    #: Most runs of this task executing at once across all workers (None: no limit).
    concurrency: int | None = None
    #: ``fn(*args, **kwargs)`` -> key: apply ``concurrency`` per key (None: per task).
    concurrency_key: Any = None
    #: Tags every run of this task carries (``apply_async(tags=...)`` adds to them).
    tags: Any = ()
    #: The code version recorded on its runs (None: the ``durable_version`` setting).
    version: str | None = None
    #: An ``async def`` body: most of its async steps executing at once in one delivery.
    max_parallel_steps: int = MAX_PARALLEL_STEPS
    #: The body is ``async def`` (found once, when the task class is made).
    _async_body: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Note whether the class's ``run`` (the task's body) is ``async def``."""
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None:
            cls._async_body = inspect.iscoroutinefunction(getattr(run, "__func__", run))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request_stack.top
        if request is None or request.called_directly:
            return super().__call__(*args, **kwargs)
        return execute(self, delivery_body(self), args, kwargs, gate=concurrency)

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
                    *more: Any, idempotency_key: Any = None, idempotency_ttl: Any = None,
                    tags: Any = None, **options: Any) -> Any:
        """Celery's ``apply_async``, plus ``idempotency_key``, ``idempotency_ttl`` and ``tags``.

        With an ``idempotency_key`` (per task name), a second trigger within
        ``idempotency_ttl`` (seconds or a timedelta; default the
        ``durable_idempotency_ttl`` setting, 24 h) returns the first run's
        AsyncResult instead of starting a new run. ``delay()`` cannot take a
        key (its keyword arguments go to the task): use ``apply_async``.
        ``tags=["customer:42", "beta"]`` labels the run (after the task's own
        ``tags``); ``list_runs(tag=...)`` and the admin filter by them.
        """
        if task_id is not None and task_id == _held_back.get():
            return self.AsyncResult(task_id)  # the store's timer sends it (see retry)
        tracer = tracing.for_app(self.app)
        if tracer is not None:
            tracer.inject(self.name, options)
        dump_models = getattr(self, "_dump_pydantic_arguments", None)  # pydantic=True tasks
        if dump_models is not None and options.get("serializer") != "pickle":
            args, kwargs = dump_models(args, kwargs)  # what Celery sends (and the run stores)
        if idempotency_key is None:
            resend = _resends_the_current_run(task_id)
            if (settings_for(self.app).register_on_publish and not more
                    and not self.app.conf.task_always_eager and not resend):
                check_call(self, args, kwargs, options)  # before anything is registered
                task_id = register(self, args, kwargs, task_id, options,
                                   run_tags(self, tags))
            if pinning(self.app) and not self.app.conf.task_always_eager:
                ctx = active_run()
                version = ctx.run_version if resend and ctx is not None else code_version(self)
                options = pinned(self.app, self.name, version, options)
            return super().apply_async(args, kwargs, task_id, *more, **options)
        if more:
            raise TypeError("pass apply_async options by keyword with an idempotency_key")
        return trigger(self, args, kwargs, task_id, idempotency_key, idempotency_ttl, options,
                       run_tags(self, tags))

    def retry(self, args: Any = None, kwargs: Any = None, exc: Any = None, throw: bool = True,
              eta: Any = None, countdown: Any = None, max_retries: Any = None,
              **options: Any) -> Any:
        """Celery's ``retry``; a delay over ``durable_max_countdown`` waits in the store.

        Celery would send the retry message with an ETA (held in a worker's
        memory, and on Redis delivered twice past the visibility timeout); a
        durable run keeps the timer in the store instead, and the sweeper sends
        the one retry message when it is due. Shorter delays: Celery's message,
        as for any task. Either way the arguments, ``max_retries`` and the
        ``Retry`` raised are Celery's.
        """
        ctx = active_run()
        if ctx is not None and ctx.task is self and not ctx.eager:
            delay = (endings.retry_delay(eta) if eta is not None else
                     float(countdown if countdown is not None else self.default_retry_delay))
            if delay > ctx.settings.max_countdown:
                token = _held_back.set(ctx.run_id)
                try:
                    return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries,
                                         **options)
                finally:
                    _held_back.reset(token)
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def on_replace(self, sig: Any) -> Any:
        """``self.replace(sig)``: end the run (REPLACED), then let Celery send ``sig``."""
        ctx = active_run()
        if ctx is not None and ctx.task is self and not ctx.eager:
            endings.hand_over(ctx)
        return super().on_replace(sig)

    @classmethod
    def bind(cls, app: Celery) -> Any:
        """Bind to ``app`` and make sure its workers run the sweeper."""
        install_worker_step(app)
        return super().bind(app)


#: The run whose retry message ``DurableTask.retry`` holds back (a long delay).
_held_back: ContextVar[str | None] = ContextVar("celery_durable_held_back", default=None)


def _resends_the_current_run(task_id: str | None) -> bool:
    """True for a message of the run executing here (``self.retry()`` sends one): it is
    registered already. (Not after ``self.replace()``: the replacement takes the id.)"""
    ctx = active_run()
    return ctx is not None and task_id == ctx.run_id and not ctx.handed_over


@signals.task_revoked.connect(weak=False)  # type: ignore[untyped-decorator]
def _cancel_revoked(sender: Any = None, request: Any = None, terminated: bool = False,
                    expired: bool = False, **kwargs: Any) -> None:
    """Revoking a durable run (or its expiry) cancels it: nothing re-sends it later."""
    if not isinstance(sender, DurableTask) or request is None:
        return
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    try:
        cancel_revoked(sender.app, request.id, reason)
    except Exception:
        logger.exception("run %s: could not cancel the revoked run", request.id)


@signals.task_postrun.connect(weak=False)  # type: ignore[untyped-decorator]
def _free_ignored_delivery(sender: Any = None, retval: Any = None, state: Any = None,
                           **kwargs: Any) -> None:
    """Let a suspended (or superseded) delivery's frames be freed at once.

    Celery keeps the ``Ignore`` a durable task ends with in a reference cycle
    (exception → traceback → tracer frame → ExceptionInfo → exception) that
    only a full garbage collection frees; with thousands of runs going to
    sleep it grows every pool process by ~100 MB. Dropping the traceback
    after Celery is done with it breaks the cycle.
    """
    if state == states.IGNORED and isinstance(retval, Ignore) and isinstance(sender, DurableTask):
        retval.__traceback__ = None


_durable_bases: dict[type, type] = {}


def durable_base(base: type) -> type:
    """``base`` if it is durable already, else ``base`` with :class:`DurableTask` mixed in.

    The user's class comes first, so its ``__call__``, ``apply_async`` and handlers
    wrap the durable ones (through ``super()``), as they wrap Celery's own.
    """
    if issubclass(base, DurableTask):
        return base
    mixed = _durable_bases.get(base)
    if mixed is None:
        mixed = _durable_bases[base] = type(base.__name__, (base, DurableTask), {
            "__module__": base.__module__, "__qualname__": base.__qualname__,
            "__doc__": base.__doc__})
    return mixed


def _check_options(options: dict[str, Any]) -> None:
    """Reject typos (unknown options, listed); mix DurableTask into a plain ``base=``."""
    base = options.get("base")
    if base is not None and not (isinstance(base, type) and issubclass(base, Task)):
        raise ValueError(f"durable_task(base=...) must be a Celery Task subclass, not {base!r}")
    allowed = ALLOWED_OPTIONS | (_public_names(base) if base is not None else frozenset())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"durable_task() got unknown option(s): {', '.join(unknown)}; it "
                         "accepts the options of @app.task and the attributes of its base class")
    if base is not None:
        options["base"] = durable_base(base)
    limit = options.get("max_parallel_steps", MAX_PARALLEL_STEPS)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"durable_task(max_parallel_steps=...) must be a positive int, "
                         f"not {limit!r}")
    concurrency.check_options(options)


def durable_task(fn: Callable[..., Any] | None = None, /, *, app: Celery | None = None,
                 **options: Any) -> Any:
    """Declare a durable task: ``@durable_task``, ``@durable_task(...)`` or ``(app=app)``.

    Accepts every ``@app.task`` option with its Celery meaning (handlers such as
    ``on_failure=`` included) and the attributes of ``base=``; an unknown option
    raises ValueError. ``base=`` may be any Celery Task subclass:
    :class:`DurableTask` is mixed in. Without ``app`` the task is shared, like
    ``@shared_task``. Durable tasks default to ``acks_late=True`` and
    ``reject_on_worker_lost=True``. Durable options: ``concurrency=N`` caps
    how many runs of the task execute at once across all workers, and
    ``concurrency_key=fn`` (called with the task's arguments) caps per key;
    see :mod:`celery_durable.controls.concurrency`. An ``async def`` body runs
    in an event loop of its own per delivery, at most ``max_parallel_steps``
    (default 16) of its async steps executing at once (docs/async.md).
    """
    _check_options(options)
    options.setdefault("base", DurableTask)

    def decorate(fun: Callable[..., Any]) -> Any:
        if "max_parallel_steps" in options and not inspect.iscoroutinefunction(fun):
            raise ValueError(f"durable_task(max_parallel_steps=...) bounds the async steps of "
                             f"an async def body; {fun.__name__} is a plain function")
        if app is not None:
            install_worker_step(app)
            return app.task(**options)(fun)
        return shared_task(**options)(fun)

    return decorate(fn) if fn is not None else decorate


def has_durable_tasks(app: Celery) -> bool:
    """True if any task registered on ``app`` is durable."""
    return any(isinstance(t, DurableTask) for t in app.tasks.values())


class DurableWorkerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: checks the store at start, then runs the :class:`Sweeper` thread."""

    label = "celery_durable sweeper"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.sweeper: Sweeper | None = None
        if getattr(worker, "task_events", False):
            events.enable()  # before the pool forks, so its processes send step events too
        tracing.for_app(worker.app)  # durable_tracing: on when opentelemetry is installed
        super().__init__(worker, **kwargs)

    def start(self, worker: Any) -> None:
        """Fail the worker start if the store is unreachable; start the sweep thread."""
        app = worker.app
        if not has_durable_tasks(app):
            return
        get_store(app).ping()
        settings = settings_for(app)
        if settings.sweeper:
            self.sweeper = Sweeper(app, float(settings.sweep_interval))
            self.sweeper.start()

    def stop(self, worker: Any) -> None:
        """Stop the sweep thread."""
        if self.sweeper is not None:
            self.sweeper.stop()

    shutdown = stop


def install_worker_step(app: Celery) -> None:
    """Add the durable bootstep to ``app``'s workers (idempotent)."""
    app.steps["worker"].add(DurableWorkerStep)


@signals.celeryd_after_setup.connect(weak=False)  # type: ignore[untyped-decorator]
def _consume_version_queues(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    """``durable_pin_version``: the worker also consumes its versions' queues (after ``-Q``)."""
    app = getattr(instance, "app", None)
    if app is None or not pinning(app):
        return
    durable = [t for t in app.tasks.values() if isinstance(t, DurableTask)]
    added = consume_version_queues(app, worker_versions(app, durable)) if durable else []
    if added:
        logger.info("celery_durable: consuming the version queues %s", ", ".join(added))


@signals.worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    # Shared tasks bind to the app only when it is finalized, after the worker
    # blueprint is built; adding the step here covers them too.
    app = getattr(sender, "app", None)
    if app is not None:
        install_worker_step(app)
