"""Settings read from the Celery configuration (``app.conf.durable_*``).

Under Django with ``config_from_object("django.conf:settings",
namespace="CELERY")`` the same settings are spelled ``CELERY_DURABLE_*``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from celery import Celery, current_app

from .redact import normalize


@dataclass(frozen=True)
class DurableSettings:
    """Every ``durable_*`` setting with its default."""

    #: Store to use: ``None`` (derive from the result backend), a URL
    #: (``redis://…``, ``db+postgresql://…``, ``memory://``, ``django://``), a dotted path to a
    #: factory taking the app, or a CheckpointStore instance.
    store: Any = None
    #: SQL store (``db+…``): create its tables on first start when they are missing
    #: (default: the worker stops and says to run ``celery -A proj durable migrate``).
    sql_create_tables: bool = False
    #: Seconds a run's lease lasts without a heartbeat.
    lease_ttl: float = 30.0
    #: Run the lease sweeper and timer waker inside every worker.
    sweeper: bool = True
    #: Seconds between two sweeps.
    sweep_interval: float = 1.0
    #: How often a run may lose its worker before it is dead-lettered.
    max_recoveries: int = 5
    #: Attempts per step when neither the step nor the task says otherwise.
    default_max_attempts: int = 3
    #: Largest serialized checkpoint, in bytes.
    max_checkpoint_bytes: int = 1024 * 1024
    #: Longest retry delay handed to the broker as a countdown; longer
    #: delays are kept as timers in the store and published when due.
    max_countdown: float = 60.0
    #: Seconds after which a queued run that never started is published again.
    requeue_grace: float = 300.0
    #: Seconds a finished (succeeded or cancelled) run is kept; 0 keeps it forever.
    result_retention: float = 7 * 24 * 3600.0
    #: ``json`` (default) or ``pickle`` (opt-in; unsafe with an untrusted store).
    serializer: str = "json"
    #: Prefix of every Redis key the RedisStore writes.
    key_prefix: str = "durable:"
    #: Send the Redis store's hot-path commands (``begin``, each checkpoint, ``finish``)
    #: over connections of its own, packed once, instead of through redis-py's client
    #: layer (about half the client CPU per checkpoint; see
    #: celery_durable/stores/redis/_lane.py). ``False`` uses redis-py only.
    redis_fast_lane: bool = True
    #: Seconds an event is kept in its mailbox for runs that reach their
    #: ``wait_for_event`` after it was sent (0: deliver to current waiters only).
    event_buffer: float = 3600.0
    #: Seconds an ``idempotency_key`` keeps returning the run it started.
    idempotency_ttl: float = 24 * 3600.0
    #: Create each run in the store (PENDING) when ``apply_async``/``delay`` publishes
    #: it, so a message the broker loses is published again after ``requeue_grace``
    #: (one store write per trigger; ``False`` leaves unstarted runs to the broker).
    register_on_publish: bool = True
    #: Field names whose values are masked (``***``) in stored errors, tracebacks and
    #: step logs, and in everything the Django admin shows, e.g. ``["card_number",
    #: "api_key"]`` (case-insensitive; ``-`` and ``_`` alike; see celery_durable/redact.py).
    redact: Any = ()

    @property
    def redact_names(self) -> frozenset[str]:
        """``redact`` as normalized names."""
        return normalize(self.redact)
    #: Log lines of a failed step kept with its error (the last N; 0: none).
    step_log_lines: int = 50
    #: Seconds between two purges of runs past ``result_retention`` by the worker's
    #: sweeper (0: never; see celery_durable/ops/retention.py).
    purge_interval: float = 3600.0
    #: OpenTelemetry spans per run, delivery and step: None (on when opentelemetry is
    #: installed), True or False (see celery_durable/engine/tracing.py).
    tracing: Any = None
    #: The code version recorded on every run started by this app (``get_run().version``,
    #: admin filter); ``@durable_task(version=...)`` overrides it per task.
    version: str | None = None
    #: The name of an environment variable holding the code version when ``durable_version``
    #: is unset (``"GIT_SHA"``, ``"RELEASE"``...); read when the settings are first loaded.
    version_env: str | None = None
    #: Send every message of a versioned run to ``<queue>@<version>`` and make workers consume
    #: their versions' queues: only workers of a run's version resume it
    #: (see celery_durable/engine/pinning.py and docs/deploying.md).
    pin_version: bool = False
    #: Where the project serves ``celery_durable_django.urls`` (``"https://shop.example.com/durable/"``):
    #: the base of a wait token's ``url`` (None: the relative ``/durable/tokens/<id>``).
    public_url: str | None = None

    @classmethod
    def from_app(cls, app: Celery) -> DurableSettings:
        """Read the settings of ``app``, accepting ``durable_x`` and ``CELERY_DURABLE_X``."""
        conf = app.conf
        values: dict[str, Any] = {}
        for f in fields(cls):
            for name in (f"durable_{f.name}", f"CELERY_DURABLE_{f.name.upper()}",
                         f"DURABLE_{f.name.upper()}"):
                value = conf.get(name)
                if value is not None:
                    values[f.name] = value
                    break
        if values.get("version") is None and values.get("version_env"):
            values["version"] = os.environ.get(str(values["version_env"])) or None
        return cls(**values)


def settings_for(app: Celery) -> DurableSettings:
    """Return the (cached) settings of ``app``."""
    cached: DurableSettings | None = getattr(app, "_durable_settings", None)
    if cached is None:
        cached = DurableSettings.from_app(app)
        app._durable_settings = cached  # type: ignore[attr-defined]
    return cached


def app_or_current(app: Celery | None) -> Celery:
    """``app``, else the current Celery app (``celery.current_app``)."""
    if app is not None:
        return app
    resolved: Celery = current_app._get_current_object()
    return resolved
