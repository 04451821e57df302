"""Transactional steps on the Django store (``@step(atomic=True)``).

One attempt of such a step is one ``transaction.atomic(using=<the store's alias>)``:
the step's function writes its rows, then :meth:`StepTransaction.save` locks the run's
row, checks the fencing token and writes the checkpoint (one statement:
``INSERT … SELECT … WHERE EXISTS (… FOR UPDATE)``), all in that transaction, which commits
when the block ends. A holder whose lease was taken over
finds its token gone and writes nothing: the block raises and its rows roll back. A
takeover that comes after the lock waits for the commit, and then sees the checkpoint.

The row is locked only at the end, so the run's heartbeat (an ``UPDATE`` of that row
from another connection) is not held up while the function runs.

Writes through another database alias during the step are refused before they run
(they could not roll back with the checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from django.db import connections, transaction

from celery_durable.errors import PermanentError
from celery_durable.records import StepRecord
from celery_durable.stores.atomic import AtomicCheckpoint

#: The first word of a statement that writes (refused on other aliases during the step).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "CREATE", "ALTER", "DROP",
           "TRUNCATE")


class OtherDatabaseWrite(PermanentError):
    """A transactional step wrote through a database alias other than the store's (no retry:
    the code, not the moment, is wrong)."""


def _refuse_writes(alias: str, store_alias: str) -> Callable[..., Any]:
    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                context: Any) -> Any:
        if str(sql).lstrip().split(" ", 1)[0].upper() in _WRITES:
            raise OtherDatabaseWrite(
                f"atomic=True: the step wrote through the database {alias!r}, but its "
                f"checkpoint is in {store_alias!r}; only writes on {store_alias!r} commit "
                "with the checkpoint (write there, or make this a plain step)")
        return execute(sql, params, many, context)
    return wrapper


class StepTransaction(AtomicCheckpoint):
    """The checkpoint writer of one transactional attempt."""

    def __init__(self, store: Any, run_id: str, token: int) -> None:
        self.store, self.run_id, self.token = store, run_id, token

    def save(self, step: StepRecord) -> bool:
        """Lock the run's row under the token and write the checkpoint: one statement, in
        the step's transaction."""
        return bool(self.store.save_step_locking(self.run_id, self.token, step, locking=True))


class AtomicMixin:
    """``AtomicSteps`` for the Django store."""

    using: str

    @contextmanager
    def atomic_step(self, run_id: str, token: int) -> Iterator[AtomicCheckpoint]:
        """See :meth:`celery_durable.stores.atomic.AtomicSteps.atomic_step`."""
        with ExitStack() as guards:
            for alias in connections:
                if alias != self.using:
                    guards.enter_context(connections[alias].execute_wrapper(
                        _refuse_writes(alias, self.using)))
            with transaction.atomic(using=self.using):
                yield StepTransaction(self, run_id, token)


__all__ = ["AtomicMixin", "OtherDatabaseWrite", "StepTransaction"]
