"""The branches of an ``async def`` body: which asyncio task a step call belongs to.

Concurrent branches of one run (the tasks ``asyncio.gather`` or a ``TaskGroup``
makes) reach their steps in an order that depends on how long each step takes,
and a replay, which returns recorded steps at once, reaches them in yet another
order. So an async body's steps are not matched to checkpoints by the run-wide
order of calls, as a sync body's are, but branch by branch:

* Every task of the delivery's event loop has a branch name, given when it is
  created: the body's own task is ``""``, the n-th task it creates ``"n"``, the
  m-th task that one creates ``"n.m"``. Creation order is the body's own code,
  not timing. Tasks created while a step's function executes (an HTTP client's
  own) are the step's business: they are not counted, and the steps they call
  are plain calls, as any step called inside a step is.
* A step call's key is its name, its occurrence within its branch and the
  branch: ``fetch#0@1`` (the body's own task keeps the sync form ``fetch#0``).
* A call takes the position of its branch's next recorded checkpoint, if the
  branch has one left (its key must match, else ``NonDeterministicStepError``
  names both sequences of that branch), or else a new position past every
  recorded one. Positions stay unique; they order the timeline, nothing more.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .context import current_step

#: Between a step's ``name#occurrence`` and its branch: ``fetch#0@1.2``.
BRANCH_MARK = "@"


def branch_of(key: str) -> str:
    """The branch of step key ``key`` (``""``: the body's own task)."""
    return key.rpartition("#")[2].partition(BRANCH_MARK)[2]


@dataclass
class _Branch:
    """One branch's recorded positions (in order), how far the replay got, its counters."""

    recorded: list[int] = field(default_factory=list)
    reached: int = 0
    counters: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


class Branches:
    """The branches of one delivery of an async body and the positions of their steps."""

    def __init__(self, recorded: Iterable[tuple[int, str]]) -> None:
        """``recorded``: the run's checkpoints as ``(position, key)``, in position order."""
        self._branches: defaultdict[str, _Branch] = defaultdict(_Branch)
        self._keys: dict[int, str] = {}
        fresh = 0
        for position, key in recorded:
            self._branches[branch_of(key)].recorded.append(position)
            self._keys[position] = key
            fresh = position + 1
        self._fresh = fresh
        self._names: weakref.WeakKeyDictionary[asyncio.Future[Any], str] = (
            weakref.WeakKeyDictionary())
        self._created: weakref.WeakKeyDictionary[asyncio.Future[Any], int] = (
            weakref.WeakKeyDictionary())

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Name the tasks ``loop`` creates from now on (the caller's task is the root)."""
        root = asyncio.current_task(loop)
        if root is not None:
            self._names[root] = ""
        make = loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> Any:
            task = (make(loop, coro, **options) if make is not None
                    else asyncio.Task(coro, loop=loop, **options))
            parent = asyncio.current_task(loop)
            if parent is not None and parent in self._names and current_step.get() is None:
                made = self._created.get(parent, 0)
                self._created[parent] = made + 1
                name = self._names[parent]
                self._names[task] = f"{name}.{made}" if name else str(made)
            return task

        loop.set_task_factory(factory)

    def _current(self) -> tuple[str, _Branch]:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no loop runs here (never in an async body's own thread)
            task = None
        name = self._names.get(task, "") if task is not None else ""
        return name, self._branches[name]

    def next_key(self, name: str) -> tuple[int, str]:
        """The position and key of the next call of step ``name`` in the current branch
        (taken: :meth:`peek`, :meth:`key` and :meth:`advance` in one lookup of the branch)."""
        branch_name, branch = self._current()
        position = self._take(branch)
        return position, self._key(branch_name, branch, name)

    def key(self, name: str) -> str:
        """The key of the next call of step ``name`` in the current branch."""
        return self._key(*self._current(), name)

    @staticmethod
    def _key(branch_name: str, branch: _Branch, name: str) -> str:
        occurrence = branch.counters[name]
        branch.counters[name] = occurrence + 1
        if branch_name:
            return f"{name}#{occurrence}{BRANCH_MARK}{branch_name}"
        return f"{name}#{occurrence}"

    def peek(self) -> int:
        """The position the current branch's next call takes."""
        branch = self._current()[1]
        if branch.reached < len(branch.recorded):
            return branch.recorded[branch.reached]
        return self._fresh

    def advance(self) -> None:
        """The current branch's next call took :meth:`peek`'s position."""
        self._take(self._current()[1])

    def _take(self, branch: _Branch) -> int:
        """``branch``'s next position, taken."""
        if branch.reached < len(branch.recorded):
            position = branch.recorded[branch.reached]
        else:
            position, self._fresh = self._fresh, self._fresh + 1
        branch.reached += 1
        return position

    def sequence(self, position: int) -> tuple[str, list[str], int]:
        """For the divergence at recorded ``position``: its branch, the keys that branch
        recorded, and the index of ``position`` among them."""
        branch_name = branch_of(self._keys.get(position, ""))
        recorded = self._branches[branch_name].recorded
        keys = [self._keys[p] for p in recorded]
        return branch_name, keys, recorded.index(position) if position in recorded else 0


__all__ = ["BRANCH_MARK", "Branches", "branch_of"]
