"""OpenTelemetry tracing of durable runs (``pip install 'celery-durable[otel]'``).

With ``opentelemetry-api`` installed (and a tracer provider configured, e.g.
the SDK's in ``worker_process_init``), every run is **one trace**, however
many deliveries, retries and waits it takes and on whichever workers:

* ``durable.enqueue <task>`` (PRODUCER): sent by ``apply_async``/``delay``
  as a child of the caller's current span; its context travels in the
  message header ``durable_traceparent`` and is **stored with the run** (in
  its options), so a re-enqueue by a retry, the sweeper, a timer, an event
  or ``retry_run`` hours later continues the same trace. A run whose first
  message has no such header (published with ``send_task``) gets a
  ``durable.run <task>`` root span from its first delivery instead.
* ``durable.delivery <task>`` (CONSUMER): one per delivery of the run, a
  child of the stored context; attributes ``durable.run_id``,
  ``durable.task``, ``durable.outcome`` (``succeeded``, ``retrying``,
  ``suspended``, ``failed``, ``ignored``).
* ``durable.step <key>`` (INTERNAL): one per executed step (replayed steps
  have none), a child of its delivery, with ``durable.step``,
  ``durable.attempt`` and the exception recorded when it fails.

``durable_tracing`` (default None) turns it on once opentelemetry is
importable and a tracer provider is configured (checked again at each
delivery and publish until it is, so a provider set in
``worker_process_init`` is picked up); True turns it on regardless; False
turns it off. Other processes may call :func:`enable`. Runs created in the
store before their first message (``apply_async``, idempotent triggers,
child runs) store the trace header with their routing, so every delivery
joins the trace that sent them; child runs join their parent's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore, Retry

from .. import signals
from .._version import __version__
from ..config import settings_for

if TYPE_CHECKING:
    from celery import Celery, Task

    from ..records import RunRecord
    from .context import RunContext

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - the otel extra is not installed
    trace = None  # type: ignore[assignment]

HEADER = "durable_traceparent"

#: The tracing in force in this process (None: off; the hot path checks only this).
active: Tracing | None = None

_delivery: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "celery_durable_delivery_span", default=None)
_step: contextvars.ContextVar[Any] = contextvars.ContextVar("celery_durable_step_span",
                                                            default=None)


def available() -> bool:
    """True if opentelemetry-api is importable."""
    return trace is not None


def wanted(app: Celery) -> bool:
    """True if ``app``'s ``durable_tracing`` setting asks for tracing and otel is installed.

    ``True`` asks always; ``None`` (the default) once a tracer provider is
    configured in this process: with opentelemetry-api installed but no SDK
    provider set, spans would be no-ops and only cost time on every step.
    """
    if not available():
        return False
    setting = settings_for(app).tracing
    return bool(setting) or (setting is None and provider_configured())


def provider_configured() -> bool:
    """True once a real tracer provider is set (not OpenTelemetry's default proxy or no-op)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


class Tracing:
    """Creates the spans; see the module docstring."""

    def __init__(self, tracer_provider: Any = None) -> None:
        assert trace is not None
        self.tracer = trace.get_tracer("celery_durable", __version__,
                                       tracer_provider=tracer_provider)
        self.propagator = TraceContextTextMapPropagator()

    def _traceparent(self, span: Any) -> str | None:
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        return carrier.get("traceparent")

    def _context(self, traceparent: str | None) -> Any:
        return None if not traceparent else self.propagator.extract(
            {"traceparent": traceparent})

    # -- the producer ------------------------------------------------------------------

    def inject(self, task_name: str, options: MutableMapping[str, Any]) -> None:
        """Start and end a ``durable.enqueue`` span; put its context in the message headers."""
        headers = dict(options.get("headers") or {})
        if HEADER in headers:
            return
        span = self.tracer.start_span(f"durable.enqueue {task_name}",
                                      kind=trace.SpanKind.PRODUCER,
                                      attributes={"durable.task": task_name})
        span.end()
        traceparent = self._traceparent(span)
        if traceparent and span.get_span_context().is_valid:
            headers[HEADER] = traceparent
            options["headers"] = headers

    # -- a delivery --------------------------------------------------------------------

    def before_begin(self, task: Task, options: dict[str, Any]) -> Any:
        """Before ``begin``: the trace context to store if the run is new.

        The message's header when it has one; else a new ``durable.run`` root
        span (ended by :meth:`start_delivery` only if the run turns out to be
        new, else dropped unexported). Returns that root span or None.
        """
        incoming = getattr(task.request, HEADER, None) or (
            (task.request.headers or {}).get(HEADER) if task.request.headers else None)
        root = None
        if not incoming:
            root = self.tracer.start_span(f"durable.run {task.name}",
                                          attributes={"durable.run_id": task.request.id,
                                                      "durable.task": task.name})
            incoming = self._traceparent(root)
        if incoming:
            options["headers"] = {HEADER: incoming}
        return root

    def start_delivery(self, ctx: RunContext, run: RunRecord, root: Any) -> None:
        """Start the delivery span under the run's stored context and make it current."""
        stored = (run.options.get("headers") or {}).get(HEADER)
        if root is not None:
            if stored and stored == self._traceparent(root):
                root.end()  # the run is new: its root span is the trace's root
            elif not stored:
                root.end()
                stored = self._traceparent(root)
        span = self.tracer.start_span(
            f"durable.delivery {ctx.task.name}", context=self._context(stored),
            kind=trace.SpanKind.CONSUMER,
            attributes={"durable.run_id": ctx.run_id, "durable.task": ctx.task.name,
                        "durable.completed_steps": len(ctx.checkpoints)})
        token = otel_context.attach(trace.set_span_in_context(span))
        _delivery.set((span, token))

    def end_delivery(self, error: BaseException | None, suspended: bool) -> None:
        """End the delivery span with the delivery's outcome."""
        current = _delivery.get()
        if current is None:
            return
        span, token = current
        _delivery.set(None)
        if suspended:
            outcome = "suspended"
        elif error is None:
            outcome = "succeeded"
        elif isinstance(error, Retry):
            outcome = "retrying"
        elif isinstance(error, Ignore):
            outcome = "ignored"
        else:
            outcome = "failed"
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:200]))
        span.set_attribute("durable.outcome", outcome)
        span.end()
        with contextlib.suppress(Exception):  # detached in another context
            otel_context.detach(token)


# -- steps, from the signals --------------------------------------------------------------


def _step_started(sender: Any = None, run_id: str = "", step: str = "", attempt: int = 0,
                  position: int = 0, **kwargs: Any) -> None:
    tracing = active
    if tracing is None:
        return
    span = tracing.tracer.start_span(
        f"durable.step {step}", attributes={"durable.run_id": run_id, "durable.step": step,
                                            "durable.attempt": attempt,
                                            "durable.position": position})
    _step.set(span)


def _step_ended(error: BaseException | None, outcome: str) -> None:
    span = _step.get()
    if span is None:
        return
    _step.set(None)
    if error is not None:
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:200]))
    span.set_attribute("durable.outcome", outcome)
    span.end()


def _step_succeeded(**kwargs: Any) -> None:
    _step_ended(None, "succeeded")


def _step_failed(error: BaseException | None = None, **kwargs: Any) -> None:
    _step_ended(error, "failed")


def _step_retrying(error: BaseException | None = None, **kwargs: Any) -> None:
    _step_ended(error, "retrying")


def for_app(app: Celery) -> Tracing | None:
    """The active tracing, enabling it first if ``app`` wants it now (see :func:`wanted`)."""
    if active is None and wanted(app):
        enable()
    return active


def enable(tracer_provider: Any = None) -> bool:
    """Trace durable runs in this process; False if opentelemetry is not installed."""
    global active
    if not available():
        return False
    if active is None:
        signals.step_started.connect(_step_started, weak=False)
        signals.step_succeeded.connect(_step_succeeded, weak=False)
        signals.step_failed.connect(_step_failed, weak=False)
        signals.step_retrying.connect(_step_retrying, weak=False)
    active = Tracing(tracer_provider)
    return True


def disable() -> None:
    """Stop tracing durable runs in this process."""
    global active
    active = None
    signals.step_started.disconnect(_step_started)
    signals.step_succeeded.disconnect(_step_succeeded)
    signals.step_failed.disconnect(_step_failed)
    signals.step_retrying.disconnect(_step_retrying)


__all__ = ["HEADER", "available", "disable", "enable", "for_app", "provider_configured",
           "wanted"]
