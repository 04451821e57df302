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
from ._version import __version__ as __version__
from .controls.cancel import cancel_run
from .controls.children import call, gather, map
from .controls.deterministic import now, random, uuid4
from .controls.patching import deprecate_patch, patched
from .controls.tokens import (
    TokenCompletion,
    WaitToken,
    complete_wait_token,
    create_wait_token,
    wait_for_token,
)
from .controls.waits import send_event, sleep, sleep_until, wait_for_event, wake_run
from .engine.metadata import set_metadata, update_metadata
from .engine.steplogs import StepLogFilter, step_logger
from .engine.steps import StepContext, step
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
    WaitTokenError,
    WaitTokenExpiredError,
    WaitTokenNotFoundError,
    WaitTokenTimeoutError,
    WorkerLostError,
)
from .ops.history_replay import ReplayResult, check_current_code
from .ops.inspection import Attempt, RunInfo, StepInfo, WaitState, get_run, list_runs
from .ops.replay import replay_run, retry_run, retry_with_current_code
from .ops.retention import purge_runs
from .records import RunStatus, StepStatus
from .retry import RetryPolicy, exponential, fixed
from .task import DurableTask, durable_task

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
    # changing code under in-flight runs
    "patched",
    "deprecate_patch",
    # what a run reports about itself
    "set_metadata",
    "update_metadata",
    # durable waits
    "sleep",
    "sleep_until",
    "wait_for_event",
    "send_event",
    "wake_run",
    "create_wait_token",
    "wait_for_token",
    "complete_wait_token",
    "WaitToken",
    "TokenCompletion",
    # child runs
    "call",
    "gather",
    "map",
    # inspecting and re-triggering runs
    "RunInfo",
    "RunStatus",
    "StepInfo",
    "Attempt",
    "WaitState",
    "StepStatus",
    "get_run",
    "list_runs",
    "retry_run",
    "retry_with_current_code",
    "check_current_code",
    "ReplayResult",
    "replay_run",
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
    "WaitTokenError",
    "WaitTokenNotFoundError",
    "WaitTokenExpiredError",
    "WaitTokenTimeoutError",
]
