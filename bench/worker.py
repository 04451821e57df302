"""A real ``celery worker`` subprocess (prefork ``-c 2``) per contender.

Started exactly as a user starts one (``python -m celery -A bench.worker_app
worker``), at log level WARNING so per-task INFO lines do not dominate the
figures, in its own process group so it and its pool children are stopped
together. Ready means: it executed a probe task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .servers import ROOT


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class BenchWorker:
    """One worker consuming ``queue`` with the environment of one contender."""

    def __init__(self, name: str, queue: str, env: dict[str, str], log_dir: Path,
                 concurrency: int = 2) -> None:
        self.name = name
        self.queue = queue
        self.log_path = log_dir / f"worker-{name}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "bench.worker_app", "worker",
               "-Q", queue, "-c", str(concurrency), "-P", "prefork", "-n", f"{name}@%h",
               "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env,
                                                         "PYTHONPATH": pythonpath},
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, app: Any, timeout: float = 60.0) -> BenchWorker:
        """Block until both pool processes have executed a probe task."""
        deadline = time.monotonic() + timeout
        pids: set[int] = set()
        while not pids or len(_children(self.proc.pid)) < 2:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} not ready after {timeout}s:\n"
                                   f"{self.log()[-4000:]}")
            probes = [app.send_task("bench.ping", queue=self.queue) for _ in range(4)]
            try:
                pids.update(int(p.get(timeout=max(1.0, deadline - time.monotonic())))
                            for p in probes)
            except Exception:
                continue
        return self

    def log(self) -> str:
        """What the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> dict[str, int]:
        """Resident memory of the main process and its pool children, in KiB."""
        main = _rss_kib(self.proc.pid)
        pool = sum(_rss_kib(c) for c in _children(self.proc.pid))
        return {"main": main, "pool": pool, "total": main + pool}

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM to the group), SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()

    def __enter__(self) -> BenchWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
