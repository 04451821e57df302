"""``durable_tracing = None`` traces only once a tracer provider is configured.

Run in a fresh interpreter each: OpenTelemetry's global provider can be set
once per process, and these tests must see it unset first.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from celery import Celery
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from celery_durable import signals
from celery_durable.engine import tracing

app = Celery("t", set_as_current=False)
app.conf.durable_tracing = {setting!r}
print("before", tracing.for_app(app) is not None, bool(signals.step_started.receivers))
trace.set_tracer_provider(TracerProvider())
print("after", tracing.for_app(app) is not None, bool(signals.step_started.receivers))
"""


def _run(setting: object) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(setting=setting)],
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.split("\n")[:2]


def test_default_waits_for_a_configured_provider() -> None:
    """opentelemetry-api alone adds no span and no step-signal receiver to the hot path."""
    assert _run(None) == ["before False False", "after True True"]


def test_true_traces_before_a_provider_is_set() -> None:
    assert _run(True) == ["before True True", "after True True"]


def test_false_never_traces() -> None:
    assert _run(False) == ["before False False", "after False False"]
