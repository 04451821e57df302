"""The capability of transactional steps (``@step(atomic=True)``): a step's database writes
and its checkpoint commit in one transaction of the store's database.

Only a store whose checkpoints live in the database the step writes to can give it
(the Django store); any other store refuses the option with the reason, before the
step's function runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ..records import StepRecord


class AtomicCheckpoint(ABC):
    """The checkpoint writer of one transactional step (see :class:`AtomicSteps`)."""

    @abstractmethod
    def save(self, step: StepRecord) -> bool:
        """Lock the run's row, check the fencing token and write ``step`` in the step's
        transaction; False (nothing written) if the token no longer holds the lease."""


class AtomicSteps(ABC):
    """Capability: ``@step(atomic=True)``: a step's database writes and its checkpoint
    commit in one transaction of the store's database (exactly-once for those writes)."""

    #: The database alias the step's writes must go through (Django's ``using``).
    using: str

    @abstractmethod
    def atomic_step(self, run_id: str, token: int) -> AbstractContextManager[AtomicCheckpoint]:
        """A transaction on the store's database for one attempt of a step of ``run_id``:
        everything in it, the checkpoint :meth:`AtomicCheckpoint.save` writes included,
        commits when the block ends and rolls back if it raises."""


_eager_transaction: list[Callable[[], AbstractContextManager[Any]]] = []


def set_eager_transaction(factory: Callable[[], AbstractContextManager[Any]]) -> None:
    """Where a transactional step runs in eager mode on a store without transactions (the
    memory store): ``celery_durable_django`` sets Django's ``transaction.atomic``, so the
    step's rows still roll back with a failed attempt (the checkpoint is not in it)."""
    _eager_transaction[:] = [factory]


def eager_transaction() -> AbstractContextManager[Any] | None:
    """A new transaction of :func:`set_eager_transaction`'s factory (None: none was set)."""
    return _eager_transaction[0]() if _eager_transaction else None


#: What the option needs, for the error of a store without it.
FEATURE = ("transactional steps (@step(atomic=True): the step's writes and its checkpoint in "
           "one transaction, which needs the checkpoints in the database the step writes to: "
           "the Django store)")

__all__ = ["FEATURE", "AtomicCheckpoint", "AtomicSteps", "eager_transaction",
           "set_eager_transaction"]
