"""Real ``celery worker`` subprocesses for tests.

Each pytest session gets its own broker queue and durable key prefix (see
``conftest.py``), so concurrent sessions on one Redis do not see each
other's messages. Workers are started with ``python -m celery -A <module>
worker`` exactly as a user would, logs go to a file that is printed when a
test fails, and a worker can be SIGKILLed (with its pool children) to
simulate a lost host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 30.0,
             interval: float = 0.05, message: str = "condition") -> object:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the prefork pool processes of a worker)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class Worker:
    """One ``celery worker`` subprocess."""

    def __init__(self, app_module: str, *, name: str, queue: str, log_path: Path,
                 concurrency: int = 2, pool: str = "prefork",
                 env: dict[str, str] | None = None, extra_args: list[str] | None = None):
        self.name = name
        self.log_path = log_path
        cmd = [sys.executable, "-m", "celery", "-A", app_module, "worker",
               "-Q", queue, "-c", str(concurrency), "-P", pool, "-n", f"{name}@%h",
               "-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
               *(extra_args or [])]
        path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
        full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        """The worker's main process id."""
        return self.proc.pid

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> Worker:
        """Block until the worker logs that it is ready."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n"
                                     f"{self.log()[-4000:]}")
            return " ready." in self.log()
        wait_for(ready, timeout, 0.1, f"worker {self.name} to be ready")
        return self

    def pool_pids(self) -> list[int]:
        """The pool (child) processes executing tasks."""
        return child_pids(self.pid)

    def kill(self) -> None:
        """SIGKILL the worker and all its pool processes at once (a lost host)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        self._log.close()


@contextlib.contextmanager
def running(worker: Worker, timeout: float = 60.0) -> Iterator[Worker]:
    """``worker`` once ready; its log's tail is printed if the block fails; stopped after."""
    try:
        yield worker.wait_ready(timeout=timeout)
    except BaseException:
        print(f"\n----- log of worker {worker.name} -----\n{worker.log()[-6000:]}")
        raise
    finally:
        worker.stop()


def skewed(offset: str) -> dict[str, str]:
    """The environment that runs a worker with its wall clock moved by ``offset`` (libfaketime;
    the monotonic clock stays true, as a real skewed host's does)."""
    import libfaketime

    _, env = libfaketime.get_reload_information()
    return {**env, "FAKETIME": offset}
