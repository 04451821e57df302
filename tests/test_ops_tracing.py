"""OpenTelemetry: a durable run is one trace across re-enqueues (extra ``otel``)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import services
from harness import wait_for

try:
    import opentelemetry.sdk  # noqa: F401 - the otel extra, part of the dev install
except ImportError:  # pragma: no cover - a fresh machine without the dev extras
    if services.IN_CI:
        raise  # CI installs the otel extra: a missing SDK fails, it does not skip
    pytest.skip("opentelemetry-sdk is not installed (the otel extra)", allow_module_level=True)

pytestmark = pytest.mark.worker


#: A worker exporting its spans to Redis; retries longer than durable_max_countdown are
#: timers in the store, not broker countdowns.
TRACED_WORKER = {"TEST_OTEL": "1", "TEST_RECORD_SIGNALS": "0",
                 "TEST_APP_CONF": json.dumps({"durable_max_countdown": 0.1})}


def run_spans(redis_client: Any, run_id: str) -> list[dict[str, Any]]:
    """The spans the worker exported for ``run_id`` so far."""
    from apps.ops_app import SPANS_KEY

    spans = [json.loads(s) for s in redis_client.lrange(SPANS_KEY, 0, -1)]
    return [s for s in spans if s["attributes"].get("durable.run_id") == run_id]


def deliveries_of(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``durable.delivery`` spans among ``spans``, oldest first."""
    return sorted((s for s in spans if s["name"].startswith("durable.delivery")),
                  key=lambda s: s["start"])


def spans_after(redis_client: Any, run_id: str, deliveries: int) -> list[dict[str, Any]]:
    """``run_id``'s spans once its ``deliveries`` delivery spans are all exported."""
    wait_for(lambda: len(deliveries_of(run_spans(redis_client, run_id))) >= deliveries, 10,
             message=f"{deliveries} delivery spans of run {run_id}")
    return run_spans(redis_client, run_id)


def send_traced(send: Callable[[], Any]) -> tuple[Any, Any]:
    """Call ``send()`` with tracing on in this process; its result and the enqueue span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from celery_durable.engine import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(tracer_provider=provider)
    try:
        result = send()
    finally:
        tracing.disable()
    (enqueue,) = exporter.get_finished_spans()
    return result, enqueue


def test_a_run_with_two_retries_is_one_trace_with_its_step_spans_in_order(
        start_worker, tag, redis_client):
    """Two retries (published again by the sweeper from the store's timers) and three
    deliveries on a real worker: one trace under the enqueue span, step spans in order."""
    from apps.ops_app import app, checkout

    start_worker("apps.ops_app", env=TRACED_WORKER)
    result, enqueue = send_traced(lambda: checkout.delay(tag, 2))
    assert result.get(timeout=30) == "done ch-3"
    assert enqueue.name == "durable.enqueue apps.ops_app.checkout"
    trace_id = f"{enqueue.context.trace_id:032x}"

    spans = spans_after(redis_client, result.id, 3)
    assert {s["trace_id"] for s in spans} == {trace_id}  # one trace
    deliveries = deliveries_of(spans)
    assert len(deliveries) == 3
    assert {d["parent_id"] for d in deliveries} == {f"{enqueue.context.span_id:016x}"}
    assert [d["attributes"]["durable.outcome"] for d in deliveries] == [
        "retrying", "retrying", "succeeded"]
    steps = sorted((s for s in spans if s["name"].startswith("durable.step")),
                   key=lambda s: s["start"])
    assert [(s["attributes"]["durable.step"], s["attributes"]["durable.attempt"],
             s["attributes"]["durable.outcome"]) for s in steps] == [
        ("prepare#0", 1, "succeeded"), ("flaky_charge#0", 1, "retrying"),
        ("flaky_charge#0", 2, "retrying"), ("flaky_charge#0", 3, "succeeded"),
        ("finish#0", 1, "succeeded")]
    assert [s["status"] for s in steps] == ["UNSET", "ERROR", "ERROR", "UNSET", "UNSET"]
    delivery_ids = [d["span_id"] for d in deliveries]
    assert [delivery_ids.index(s["parent_id"]) for s in steps] == [0, 0, 1, 2, 2]

    # A run published with send_task (no enqueue span): its first delivery starts the trace.
    bare_tag = f"{tag}-bare"
    bare = app.send_task("apps.ops_app.checkout", args=[bare_tag, 1],
                         task_id=str(uuid.uuid4()))
    assert bare.get(timeout=30) == "done ch-2"

    spans = spans_after(redis_client, bare.id, 2)
    assert len(deliveries_of(spans)) == 2
    (root,) = [s for s in spans if s["name"] == "durable.run apps.ops_app.checkout"]
    assert root["parent_id"] is None
    assert {s["trace_id"] for s in spans} == {root["trace_id"]} != {trace_id}
    assert {s["parent_id"] for s in spans if s["name"].startswith("durable.delivery")} == {
        root["span_id"]}


def test_a_routed_run_keeps_its_trace_across_a_retry(start_worker, tag, redis_client):
    """A run sent with ``queue=`` (registered with its routing before the message goes) is
    still one trace under its enqueue span, first delivery and retry alike."""
    from apps.ops_app import checkout

    start_worker("apps.ops_app", env=TRACED_WORKER)
    result, enqueue = send_traced(
        lambda: checkout.apply_async((tag, 1), queue=os.environ["TEST_QUEUE"]))
    assert result.get(timeout=30) == "done ch-2"

    deliveries = deliveries_of(spans_after(redis_client, result.id, 2))
    assert len(deliveries) == 2
    assert {d["trace_id"] for d in deliveries} == {f"{enqueue.context.trace_id:032x}"}
    assert {d["parent_id"] for d in deliveries} == {f"{enqueue.context.span_id:016x}"}


def test_child_runs_join_their_parents_trace(start_worker, tag, redis_client):
    """A parent's ``gather`` children (one of them retried) run in the parent's trace."""
    from apps.ops_app import two_checkouts

    start_worker("apps.ops_app", concurrency=2, env=TRACED_WORKER)
    result = two_checkouts.delay(tag)  # no tracer here: the parent's first delivery roots it
    assert result.get(timeout=30) == ["done ch-1", "done ch-2"]
    children = {f"{result.id}~0.0": 1, f"{result.id}~0.1": 2}  # run id -> its deliveries

    (trace_id,) = {s["trace_id"] for s in deliveries_of(spans_after(redis_client, result.id, 2))}
    for child, count in children.items():
        deliveries = deliveries_of(spans_after(redis_client, child, count))
        assert len(deliveries) == count, child
        assert {s["trace_id"] for s in deliveries} == {trace_id}, child


def test_a_routed_run_from_an_untraced_process_is_one_trace(start_worker, tag, redis_client):
    """Sent with ``queue=`` by a process that does not trace (the run stores its routing
    only), the run's first delivery roots the trace and its retry joins it."""
    from apps.ops_app import checkout

    start_worker("apps.ops_app", env=TRACED_WORKER)
    result = checkout.apply_async((tag, 1), queue=os.environ["TEST_QUEUE"])
    assert result.get(timeout=30) == "done ch-2"

    spans = spans_after(redis_client, result.id, 2)
    (root,) = [s for s in spans if s["name"] == "durable.run apps.ops_app.checkout"]
    deliveries = deliveries_of(spans)
    assert len(deliveries) == 2
    assert {d["trace_id"] for d in deliveries} == {root["trace_id"]}
    assert {d["parent_id"] for d in deliveries} == {root["span_id"]}
