"""An app whose only durable task is a bare ``@durable_task`` (a shared task)."""

from __future__ import annotations

import json
import os

from apps.common import counters, make_app
from celery_durable import durable_task, step

app = make_app("shared_app", **json.loads(os.environ.get("TEST_APP_CONF", "{}")))
r = counters()


@step
def shared_step(tag: str, x: int) -> int:
    r.incr(f"{tag}:shared_step")
    return x * 2


@durable_task
def shared_double(tag: str, x: int) -> int:
    return shared_step(tag, x) + shared_step(tag, x)
