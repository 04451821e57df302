"""celery_durable: durable, checkpointed multi-step tasks for Celery.

Swap ``@app.task`` for ``@durable_task`` and decorate the calls worth
checkpointing with ``@step``; a failed or crashed run resumes after its last
completed step. ``sleep`` and ``wait_for_event`` suspend a run without
holding a worker. ``call``/``gather``/``map`` start child runs, ``cancel_run``
stops a run, and ``@durable_task(concurrency=N)`` and
``apply_async(idempotency_key=...)`` control how runs start. ``signals``,
``StepLogFilter`` and ``purge_runs`` (with ``celery -A proj durable ...``)
are for operating them.
"""

from . import signals
from .api import RunInfo, StepInfo, get_run, list_runs, retry_run
from .cancel import cancel_run
from .children import call, gather, map
from .deterministic import now, random, uuid4
from .errors import (
    CheckpointTooLargeError,
    ChildCancelledError,
    ChildRunError,
    DurableError,
    InvalidRunStateError,
    NonDeterministicStepError,
    PermanentError,
    RetryAfter,
    RunNotFoundError,
    SerializationError,
    StepFailedError,
    StoreUnavailableError,
    WorkerLostError,
)
from .records import RunStatus, StepStatus
from .retention import purge_runs
from .retry import RetryPolicy, exponential, fixed
from .steplogs import StepLogFilter, step_logger
from .steps import StepContext, step
from .task import DurableTask, durable_task
from .waits import send_event, sleep, sleep_until, wait_for_event, wake_run

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 - grouped by purpose
    # declaring tasks and steps
    "DurableTask",
    "durable_task",
    "step",
    "StepContext",
    "RetryPolicy",
    "exponential",
    "fixed",
    # deterministic helpers
    "now",
    "random",
    "uuid4",
    # durable waits
    "sleep",
    "sleep_until",
    "wait_for_event",
    "send_event",
    "wake_run",
    # child runs
    "call",
    "gather",
    "map",
    # inspecting and re-triggering runs
    "RunInfo",
    "RunStatus",
    "StepInfo",
    "StepStatus",
    "get_run",
    "list_runs",
    "retry_run",
    "cancel_run",
    # operating runs: signals, logs per step, retention
    "signals",
    "StepLogFilter",
    "step_logger",
    "purge_runs",
    # errors
    "CheckpointTooLargeError",
    "ChildCancelledError",
    "ChildRunError",
    "DurableError",
    "InvalidRunStateError",
    "NonDeterministicStepError",
    "PermanentError",
    "RetryAfter",
    "RunNotFoundError",
    "SerializationError",
    "StepFailedError",
    "StoreUnavailableError",
    "WorkerLostError",
]
