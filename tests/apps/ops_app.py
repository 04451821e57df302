"""Durable tasks for the operations tests: signals, events, logs, CLI.

Every signal a worker sends is appended, as JSON, to the Redis list
``<prefix>signals:<run id>``, so a test can read the sequence from outside.
"""

from __future__ import annotations

import json
import logging
import os

from celery.utils.log import get_task_logger

from apps.common import counters, make_app
from celery_durable import (
    PermanentError,
    durable_task,
    gather,
    signals,
    sleep,
    step,
    wait_for_event,
)

app = make_app("ops_app", **json.loads(os.environ.get("TEST_APP_CONF", "{}")))
r = counters()
log = logging.getLogger("apps.ops_app")
task_log = get_task_logger("apps.ops_app.tasks")
PREFIX = os.environ["TEST_PREFIX"]

SIGNALS = ("run_started", "run_resumed", "step_started", "step_succeeded", "step_failed",
           "step_retrying", "run_suspended", "run_succeeded", "run_dead_lettered",
           "run_cancelled")


def signals_key(run_id: str) -> str:
    """Where the signals of ``run_id`` are recorded."""
    return f"{PREFIX}signals:{run_id}"


def _recorder(signal_name: str):  # type: ignore[no-untyped-def]
    def receive(sender=None, run_id: str = "", **kwargs):  # type: ignore[no-untyped-def]
        entry = {"signal": signal_name, "sender": getattr(sender, "name", None)}
        for field in ("task", "step", "attempt", "status", "completed", "delay",
                      "failed_step", "reason"):
            if field in kwargs:
                entry[field] = kwargs[field]
        if "error" in kwargs and kwargs["error"] is not None:
            err = kwargs["error"]
            entry["error"] = getattr(err, "type", None) or type(err).__name__
        if "logs" in kwargs:
            entry["logs"] = len(kwargs["logs"])
        if "result" in kwargs:
            entry["result"] = kwargs["result"]
        r.rpush(signals_key(run_id), json.dumps(entry))
    return receive


_receivers = {name: _recorder(name) for name in SIGNALS}
if os.environ.get("TEST_RECORD_SIGNALS", "1") == "1":
    for _name, _receiver in _receivers.items():
        getattr(signals, _name).connect(_receiver, weak=False)


@step
def prepare(tag: str) -> int:
    log.info("preparing %s", tag)
    return 1


@step(max_attempts=5, backoff=0.2)
def flaky_charge(tag: str, failures: int) -> str:
    n = int(r.incr(f"{tag}:flaky_charge"))
    log.warning("charge attempt %d for %s", n, tag)
    if n <= failures:
        raise ConnectionError(f"gateway timeout #{n}")
    return f"ch-{n}"


@step
def finish(tag: str, charge: str) -> str:
    return f"done {charge}"


@durable_task(app=app)
def checkout(tag: str, failures: int = 2) -> str:
    """prepare, flaky_charge (fails ``failures`` times), finish."""
    prepare(tag)
    return finish(tag, flaky_charge(tag, failures))


@step
def explode(tag: str) -> None:
    for i in range(60):
        log.info("explode line %d of %s", i, tag)
    task_log.error("about to fail for %s", tag)  # Celery's task logger does not propagate
    raise PermanentError(f"card declined for {tag}")


@durable_task(app=app)
def doomed(tag: str) -> None:
    """prepare, then a step that logs 61 lines and fails permanently (a dead letter)."""
    prepare(tag)
    explode(tag)


@step
def check_flag(tag: str) -> str:
    if r.get(f"{tag}:broken"):
        raise PermanentError(f"still broken for {tag}")
    return "fixed"


@durable_task(app=app)
def fixable(tag: str, x: int = 0) -> dict[str, object]:
    """Fails permanently while ``<tag>:broken`` is set in Redis; returns its arguments."""
    prepare(tag)
    return {"flag": check_flag(tag), "x": x}


@durable_task(app=app)
def napper(tag: str) -> str:
    """Sleeps for an hour (to be woken or cancelled)."""
    prepare(tag)
    sleep(3600)
    return "rested"


@durable_task(app=app)
def approver(tag: str) -> object:
    """Waits up to an hour for ``ops-approval`` with key ``tag``; returns its payload."""
    prepare(tag)
    return wait_for_event("ops-approval", key=tag, timeout=3600)


# -- tracing (TEST_OTEL=1): each pool process exports its spans in memory and to Redis -------

SPANS_KEY = f"{PREFIX}spans"


@durable_task(app=app)
def two_checkouts(tag: str) -> list[str]:
    """A parent: two child checkout runs (each joins the parent's trace)."""
    return gather(checkout.s(f"{tag}-a", 0), checkout.s(f"{tag}-b", 1))


def _export_spans_to_redis() -> None:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from celery_durable.engine import tracing

    class ToRedis(SpanProcessor):  # type: ignore[misc]
        """Ships each finished span to the test process (the in-memory exporter keeps it too)."""

        def on_end(self, span) -> None:  # type: ignore[no-untyped-def]
            ctx, parent = span.get_span_context(), span.parent
            r.rpush(SPANS_KEY, json.dumps({
                "name": span.name, "trace_id": f"{ctx.trace_id:032x}",
                "span_id": f"{ctx.span_id:016x}",
                "parent_id": f"{parent.span_id:016x}" if parent else None,
                "start": span.start_time, "end": span.end_time,
                "status": span.status.status_code.name,
                "attributes": dict(span.attributes or {})}))

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    provider.add_span_processor(ToRedis())
    tracing.enable(tracer_provider=provider)


if os.environ.get("TEST_OTEL") == "1":
    from celery.signals import worker_process_init

    worker_process_init.connect(lambda **kwargs: _export_spans_to_redis(), weak=False)
