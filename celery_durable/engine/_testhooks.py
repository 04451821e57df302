"""Crash injection and an execution ledger for :mod:`celery_durable.testing`.

Off unless the worker process starts with ``CELERY_DURABLE_CRASH_DIR`` set:
then :data:`active` is a :class:`FileHooks` and ``run_step`` calls it, else
``active`` is ``None`` and the only cost is one attribute check per step.

Everything lives in files of that directory, outside the worker:

* ``ledger``: one line ``<run_id> <position> <key>`` appended each time a
  step's function returned (an *execution*), before its checkpoint is written,
  and one line ``S <run_id> <position>`` right after the checkpoint is saved
  (the chaos suite orders executions against it).
* ``crash-<run_id>``: a crash plan holding a step position. Right after the
  checkpoint of that position is saved the plan is removed and the pool
  process SIGKILLs itself, exactly as a lost host would.
* ``crash-uncommitted-<run_id>``: the same, for a transactional step (``atomic=True``)
  whose checkpoint is written but whose transaction has not committed yet.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "CELERY_DURABLE_CRASH_DIR"


class FileHooks:
    """The hooks of one test session's crash directory."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.ledger = self.dir / "ledger"

    def executed(self, run_id: str, position: int, key: str) -> None:
        """Append one execution of step ``key`` (at ``position``) of ``run_id`` to the ledger."""
        self.append(f"{run_id} {position} {key}\n")

    def append(self, text: str) -> None:
        """Append ``text`` to the ledger with one ``O_APPEND`` write."""
        line = text.encode()
        fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one O_APPEND write: lines of processes do not interleave
        finally:
            os.close(fd)

    def checkpointed(self, run_id: str, position: int) -> None:
        """Log the saved checkpoint; crash if ``run_id`` plans a crash after ``position``."""
        self.append(f"S {run_id} {position}\n")
        self._crash_if_planned(self.dir / f"crash-{run_id}", position)

    def before_commit(self, run_id: str, position: int) -> None:
        """A transactional step wrote its checkpoint, not yet committed: crash if planned."""
        self._crash_if_planned(self.dir / f"crash-uncommitted-{run_id}", position)

    @staticmethod
    def _crash_if_planned(plan: Path, position: int) -> None:
        try:
            wanted = int(plan.read_text().strip() or "-1")
        except (OSError, ValueError):
            return
        if wanted != position:
            return
        try:
            plan.unlink()  # crash once: the resumed delivery must go on
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def _from_env() -> FileHooks | None:
    directory = os.environ.get(ENV)
    return FileHooks(directory) if directory else None


#: The hooks of this process, or ``None`` (the default: no cost, no crash).
active: FileHooks | None = _from_env()
