"""Signals of durable runs, in the style of :mod:`celery.signals`.

Connect a receiver exactly as for Celery's signals::

    from celery_durable import signals

    @signals.step_failed.connect
    def page_someone(sender=None, run_id=None, step=None, error=None, **kwargs):
        ...

Every signal is sent with the task object as ``sender`` (None when a run's
task is not registered in the sending process) and these keyword arguments,
always present:

* ``run_id``: the run id (the Celery task id); ``task``: the task name.

Plus, per signal:

=====================  ================================================================
``run_started``        a delivery starts a run with no checkpoints yet: ``args``,
                       ``kwargs`` (decoded)
``run_resumed``        a delivery starts a run that has checkpoints (after a retry,
                       a crash, a wait or ``retry_run``): ``completed`` (steps
                       recorded), ``args``, ``kwargs``
``step_started``       a step is about to execute (not on replay): ``step`` (key,
                       e.g. ``charge#0``), ``name``, ``attempt``, ``position``
``step_succeeded``     the step returned and its checkpoint was written: the same,
                       plus ``duration`` (seconds)
``step_failed``        the step raised and will not be retried; the run fails:
                       ``step``, ``name``, ``attempt``, ``position``, ``error``
                       (the exception), ``duration``, ``logs`` (its last log lines)
``step_retrying``      the step raised and the run is re-enqueued to retry it: as
                       ``step_failed`` plus ``delay`` (seconds until the retry)
``run_suspended``      the run is parked at a durable wait: ``status``
                       (``SLEEPING`` or ``WAITING``), ``step`` (the wait's key or
                       None), ``wake_at`` (timestamp or None), ``event``, ``key``
``run_succeeded``      the run finished: ``result`` (decoded)
``run_dead_lettered``  the run failed for good and is kept as a dead letter:
                       ``error`` (an :class:`~celery_durable.records.ErrorInfo`),
                       ``failed_step`` (key or None)
``run_cancelled``      ``cancel_run`` cancelled the run: ``reason``
=====================  ================================================================

Signals are sent in the process where the thing happens: step and run
signals in the worker's pool process executing the run (connect receivers
at import time of your tasks module, or in ``worker_process_init``),
``run_dead_lettered`` also in the worker's sweeper thread for a run that lost
its worker too often, ``run_cancelled`` wherever ``cancel_run`` is called.
A receiver that raises is logged and ignored (Celery's behaviour). With no
receiver connected a signal costs one attribute check.
"""

from __future__ import annotations

from celery.utils.dispatch import Signal

run_started = Signal(name="run_started", providing_args={"run_id", "task", "args", "kwargs"})
run_resumed = Signal(name="run_resumed",
                     providing_args={"run_id", "task", "completed", "args", "kwargs"})
step_started = Signal(name="step_started",
                      providing_args={"run_id", "task", "step", "name", "attempt", "position"})
step_succeeded = Signal(name="step_succeeded",
                        providing_args={"run_id", "task", "step", "name", "attempt", "position",
                                        "duration"})
step_failed = Signal(name="step_failed",
                     providing_args={"run_id", "task", "step", "name", "attempt", "position",
                                     "error", "duration", "logs"})
step_retrying = Signal(name="step_retrying",
                       providing_args={"run_id", "task", "step", "name", "attempt", "position",
                                       "error", "duration", "logs", "delay"})
run_suspended = Signal(name="run_suspended",
                       providing_args={"run_id", "task", "status", "step", "wake_at", "event",
                                       "key"})
run_succeeded = Signal(name="run_succeeded", providing_args={"run_id", "task", "result"})
run_dead_lettered = Signal(name="run_dead_lettered",
                           providing_args={"run_id", "task", "error", "failed_step"})
run_cancelled = Signal(name="run_cancelled", providing_args={"run_id", "task", "reason"})

__all__ = [
    "run_cancelled",
    "run_dead_lettered",
    "run_resumed",
    "run_started",
    "run_succeeded",
    "run_suspended",
    "step_failed",
    "step_retrying",
    "step_started",
    "step_succeeded",
]
