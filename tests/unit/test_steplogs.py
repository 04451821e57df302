"""Logs per step in eager mode: tags on records, the last N lines kept with a failure."""

from __future__ import annotations

import logging

import pytest
from celery import Celery

from celery_durable import (
    PermanentError,
    StepLogFilter,
    durable_task,
    get_run,
    signals,
    step,
    step_logger,
)


class Collect(logging.Handler):
    """Keeps the formatted records it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(StepLogFilter())
        self.setFormatter(logging.Formatter("%(run_id)s|%(step)s|%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def app() -> Celery:
    """An eager app (memory store) keeping the last 3 log lines of a failed step."""
    app = Celery("steplogs-eager", set_as_current=False)
    app.conf.update(task_always_eager=True, broker_url="memory://",
                    result_backend="cache+memory://", durable_step_log_lines=3)
    return app


def test_filter_and_adapter_tag_records_with_run_and_step(app: Celery) -> None:
    """Inside a step records carry run_id and step; outside they carry empty strings."""
    log = logging.getLogger("steplogs.tagged")
    log.setLevel(logging.INFO)
    adapted = step_logger(log)
    handler = Collect()
    log.addHandler(handler)

    @step
    def work() -> int:
        log.info("plain")
        adapted.info("adapted")
        return 1

    @durable_task(app=app, name="steplogs.tagged")
    def tagged() -> int:
        log.info("between steps")
        return work()

    try:
        result = app.tasks["steplogs.tagged"].delay()
        log.info("outside")
    finally:
        log.removeHandler(handler)
    assert handler.lines == ["||between steps", f"{result.id}|work#0|plain",
                             f"{result.id}|work#0|adapted", "||outside"]


def test_failed_step_keeps_its_last_lines_and_step_failed_gets_them(app: Celery) -> None:
    """Only the last ``durable_step_log_lines`` lines of the failing attempt are kept."""
    log = logging.getLogger("steplogs.failing")
    log.setLevel(logging.INFO)
    got: list[dict[str, object]] = []

    def receiver(sender: object = None, **kwargs: object) -> None:
        got.append(kwargs)

    @step
    def ok() -> int:
        log.info("ok step line")
        return 1

    @step
    def bad() -> None:
        for i in range(5):
            log.info("line %d", i)
        raise PermanentError("nope")

    @durable_task(app=app, name="steplogs.failing")
    def failing() -> None:
        ok()
        bad()

    signals.step_failed.connect(receiver)
    try:
        result = app.tasks["steplogs.failing"].apply()
    finally:
        signals.step_failed.disconnect(receiver)
    assert result.failed()
    run = get_run(result.id, app=app)
    assert run.steps[0].error is None
    error = run.steps[1].error
    assert error is not None
    assert [line.rsplit(": ", 1)[-1] for line in error.logs] == ["line 2", "line 3", "line 4"]
    assert " INFO steplogs.failing: " in error.logs[0]
    assert got[0]["step"] == "bad#0" and got[0]["logs"] == error.logs
