"""Helpers for your own test suite: a real worker, and ``assert_resumable``.

Use it as a pytest plugin (``pytest_plugins = ["celery_durable.testing"]``,
also registered under the ``pytest11`` entry point ``celery_durable``)::

    def test_checkout_survives_a_crash_at_every_step(durable_worker):
        durable_worker("shop.celery")           # python -m celery -A shop.celery worker
        report = assert_resumable(checkout, 42)
        assert report.boundaries == 4

:func:`assert_resumable` runs the task once normally, then once per step
boundary with the worker's pool process SIGKILLed right after that step's
checkpoint is written, and checks that every crashed run resumes to the same
result, that no completed step was executed twice (counted outside the
worker, in a ledger file written by the engine's test hooks), that the runs
call the same steps in the same order (no non-determinism), and, with
``observe=``, that the outside world changed the same way as in the normal
run (catches side effects done in the task body between steps).

:func:`replay` runs a task's current code against a run's recorded history (exported
with :func:`export_run` or ``celery -A proj durable export``) in this process, calling
no step: the deploy gate, and a way to step through a production run in a debugger.

Crash injection only exists in workers started by :func:`start_worker` (the
environment variable ``CELERY_DURABLE_CRASH_DIR``); other workers pay one
attribute check per step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine._testhooks import ENV
from .errors import RunNotFoundError
from .ops.history_doc import export_run, load_history
from .ops.history_replay import ReplayResult, replay
from .ops.inspection import RunInfo, get_run
from .records import RunStatus, StepStatus

__all__ = ["DurableTestWorker", "ReplayResult", "ResumableReport", "assert_resumable",
           "durable_worker", "export_run", "load_history", "replay", "start_worker"]

_workers: list[DurableTestWorker] = []


class DurableTestWorker:
    """One real ``celery worker`` subprocess with crash injection enabled."""

    def __init__(self, app_module: str, *, queues: list[str] | None = None,
                 concurrency: int = 1, crash_dir: Path | None = None,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 log_path: Path | None = None) -> None:
        self.crash_dir = Path(crash_dir or tempfile.mkdtemp(prefix="durable-crash-"))
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path or self.crash_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.name = f"durable-test-{uuid.uuid4().hex[:8]}"
        cmd = [sys.executable, "-m", "celery", "-A", app_module, "worker", "-c",
               str(concurrency), "-P", "prefork", "-n", f"{self.name}@%h", "-l", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
        if queues:
            cmd += ["-Q", ",".join(queues)]
        cwd = Path(cwd or os.getcwd())
        path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH", "")) if p)
        full_env = {**os.environ, "PYTHONPATH": path, ENV: str(self.crash_dir), **(env or {})}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> DurableTestWorker:
        """Block until the worker logs that it is ready; fail with its log if it exits."""
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n"
                                     f"{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        return self

    def executions(self, run_id: str) -> Counter[str]:
        """How many times each step key of ``run_id`` was executed (from the ledger)."""
        counts: Counter[str] = Counter()
        ledger = self.crash_dir / "ledger"
        if ledger.exists():
            for line in ledger.read_text().splitlines():
                parts = line.split(" ", 2)
                if len(parts) == 3 and parts[0] == run_id:
                    counts[parts[2]] += 1
        return counts

    def plan_crash(self, run_id: str, position: int) -> Path:
        """Make the pool process die right after ``run_id`` checkpoints step ``position``."""
        plan = self.crash_dir / f"crash-{run_id}"
        plan.write_text(str(position))
        return plan

    def stop(self, timeout: float = 10.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        if self in _workers:
            _workers.remove(self)


def start_worker(app_module: str, **options: Any) -> DurableTestWorker:
    """Start a real worker for ``app_module`` (as ``celery -A app_module``) and wait until ready.

    Options: ``queues``, ``concurrency`` (default 1), ``crash_dir``, ``env``,
    ``cwd``, ``log_path``. :func:`assert_resumable` uses the latest worker
    started; stop it with ``worker.stop()`` (the pytest fixture does).
    """
    worker = DurableTestWorker(app_module, **options)
    _workers.append(worker)
    try:
        return worker.wait_ready()
    except BaseException:
        worker.stop()
        raise


@dataclass
class ResumableReport:
    """What :func:`assert_resumable` checked."""

    result: Any
    steps: list[str]
    boundaries: int
    crashed_runs: list[str] = field(default_factory=list)


def _wait_finished(task: Any, run_id: str, timeout: float) -> RunInfo:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(RunNotFoundError):
            run = get_run(run_id, app=task.app)
            if run.status.finished:
                return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} of {task.name} did not finish in {timeout}s")
        time.sleep(0.05)


def _keys(run: RunInfo) -> list[str]:
    return [s.key for s in run.steps]


def assert_resumable(task: Any, *args: Any, observe: Callable[[], Any] | None = None,
                     timeout: float = 60.0, **kwargs: Any) -> ResumableReport:
    """Check that ``task(*args, **kwargs)`` survives a crash after every step's checkpoint.

    Needs a worker started by :func:`start_worker` (or the ``durable_worker``
    fixture) consuming the task's queue. ``observe`` (optional) returns a
    snapshot of the outside world; with it the snapshot must change the same
    way in every crashed run as in the normal run (``after - before`` for
    numbers, equality otherwise compared by the value seen after each run).
    ``observe`` and ``timeout`` are therefore not passed to the task.
    Raises AssertionError naming the boundary and what differed.
    """
    if not _workers:
        raise RuntimeError("assert_resumable needs a worker started by "
                           "celery_durable.testing.start_worker (or the durable_worker fixture)")
    worker = _workers[-1]

    def one_run(crash_at: int | None) -> tuple[RunInfo, Any]:
        run_id = str(uuid.uuid4())
        plan = worker.plan_crash(run_id, crash_at) if crash_at is not None else None
        before = observe() if observe is not None else None
        task.apply_async(args=args, kwargs=kwargs, task_id=run_id)
        run = _wait_finished(task, run_id, timeout)
        after = observe() if observe is not None else None
        if plan is not None and plan.exists():
            plan.unlink()
            raise AssertionError(f"run {run_id}: never checkpointed a step at position "
                                 f"{crash_at}, so the planned crash did not happen")
        delta = after - before if isinstance(after, int | float) and isinstance(
            before, int | float) else after
        return run, delta

    normal, normal_delta = one_run(None)
    if normal.status is not RunStatus.SUCCEEDED:
        raise AssertionError(f"the normal run {normal.id} ended {normal.status}: "
                             f"{normal.error.type if normal.error else ''} "
                             f"{normal.error.message if normal.error else ''}")
    done = [s for s in normal.steps if s.status is StepStatus.SUCCEEDED]
    report = ResumableReport(result=normal.result, steps=_keys(normal), boundaries=len(done))
    for s in done:
        where = f"crash after step {s.key} (position {s.position})"
        run, delta = one_run(s.position)
        report.crashed_runs.append(run.id)
        if run.status is not RunStatus.SUCCEEDED:
            err = run.error
            raise AssertionError(f"{where}: run {run.id} ended {run.status}"
                                 + (f": {err.type}: {err.message}" if err else ""))
        if _keys(run) != report.steps:
            raise AssertionError(f"{where}: non-deterministic: the resumed run called steps "
                                 f"{_keys(run)}, the normal run {report.steps}")
        if run.result != normal.result:
            raise AssertionError(f"{where}: the resumed run returned {run.result!r}, "
                                 f"the normal run {normal.result!r}")
        twice = {k: n for k, n in worker.executions(run.id).items() if n > 1}
        if twice:
            raise AssertionError(f"{where}: completed steps executed more than once: {twice}")
        if observe is not None and delta != normal_delta:
            raise AssertionError(f"{where}: observed side effects differ: the resumed run "
                                 f"gave {delta!r}, the normal run {normal_delta!r}; is a side "
                                 "effect done in the task body instead of in a step?")
    return report


def _fixture(fn: Any) -> Any:
    """Decorate ``fn`` as a pytest fixture when pytest is importable."""
    try:
        import pytest
    except ImportError:  # pragma: no cover - the helpers work without pytest
        return fn
    return pytest.fixture(fn)


@_fixture
def durable_worker() -> Iterator[Callable[..., DurableTestWorker]]:
    """Pytest fixture: ``durable_worker("app.module", **options)`` starts a crash-ready worker.

    Every worker it started is stopped at teardown.
    """
    started: list[DurableTestWorker] = []

    def start(app_module: str, **options: Any) -> DurableTestWorker:
        worker = start_worker(app_module, **options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
