"""The state of one delivery of a durable run, reachable from inside its body."""

from __future__ import annotations

import contextvars
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..config import DurableSettings
from ..records import OnDemandCheckpoints, StepRecord, WaitInfo, succeeded_value
from ..retry import RetryPolicy
from ..serialization import Serializer
from ..stores.base import CheckpointStore
from .leases import ensure_held

if TYPE_CHECKING:
    from celery import Task


@dataclass(frozen=True)
class StepContext:
    """What a step can know about itself while it runs (``step.context()``).

    ``idempotency_key`` is the same on every attempt and after every crash,
    and differs between steps and runs: pass it to payment APIs and other
    side effects so a repeated attempt is recognised as the same request.
    """

    run_id: str
    key: str
    attempt: int
    position: int

    @property
    def idempotency_key(self) -> str:
        """``<run id>:<step key>``, stable across retries and crashes."""
        return f"{self.run_id}:{self.key}"


class Branching(Protocol):
    """How an async body's step calls get their keys and positions (:mod:`.branches`)."""

    def next_key(self, name: str) -> tuple[int, str]:
        """The position and key of the next call of step ``name`` in the current branch."""

    def key(self, name: str) -> str:
        """The key of the next call of step ``name`` in the current branch."""

    def peek(self) -> int:
        """The position the current branch's next call takes."""

    def advance(self) -> None:
        """The current branch's next call took :meth:`peek`'s position."""

    def sequence(self, position: int) -> tuple[str, list[str], int]:
        """The branch of recorded ``position``, its recorded keys, and the index in them."""


@dataclass
class RunContext:
    """One delivery of a run: its lease token, its checkpoints and the replay cursor."""

    task: Task
    run_id: str
    token: int
    store: CheckpointStore
    settings: DurableSettings
    serializer: Serializer
    policy: RetryPolicy
    checkpoints: MutableMapping[int, StepRecord]
    eager: bool = False
    position: int = 0
    counters: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    fatal: BaseException | None = None
    #: The wait the run was parked at when this delivery began (see waits.py).
    wait: WaitInfo | None = None
    #: The store's clock when this delivery began (0: unknown), and this process's monotonic
    #: clock then: :meth:`store_now` runs the store's clock on from there.
    clock: float = 0.0
    mono: float = field(default_factory=time.monotonic)
    #: The run that started this one as a child (call/gather/map), if any.
    parent: str | None = None
    #: ``self.replace()`` ended the run (REPLACED): its replacement has its task id now.
    handed_over: bool = False
    #: The code version the run was started under, and the one running it now (None:
    #: unversioned; see ``durable_version``).
    run_version: str | None = None
    code_version: str | None = None
    #: Replaying a recorded history only (``testing.replay``): a step without a
    #: checkpoint ends the replay instead of running.
    replay_only: bool = False
    #: An ``async def`` body's branches (:mod:`.branches`): positions and keys per task.
    branches: Branching | None = None
    #: ``replayed(position, key)``: the stored value of a success of step ``key`` at
    #: ``position``, else None (read without building a record from on-demand checkpoints).
    replayed: Callable[[int, str], str | None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        checkpoints = self.checkpoints
        self.replayed = (checkpoints.succeeded_value
                         if isinstance(checkpoints, OnDemandCheckpoints)
                         else functools.partial(succeeded_value, checkpoints))

    def store_now(self) -> float:
        """The store's clock now: its reading at the start of the delivery plus the time
        elapsed since on this process's monotonic clock (never this host's wall clock,
        which may disagree with the store's and with other hosts')."""
        if not self.clock:
            return time.time()  # a store that gave no reading (never one of ours)
        return self.clock + (time.monotonic() - self.mono)

    def next_key(self, name: str) -> tuple[int, str]:
        """Allocate the position and the ``name#n`` key of the next step call."""
        if self.branches is not None:
            return self.branches.next_key(name)
        position = self.position
        self.position += 1
        return position, self.name_key(name)

    def name_key(self, name: str) -> str:
        """The key of the next call of ``name`` (without taking a position)."""
        if self.branches is not None:
            return self.branches.key(name)
        occurrence = self.counters[name]
        self.counters[name] = occurrence + 1
        return f"{name}#{occurrence}"

    def peek(self) -> int:
        """The position the next step call takes."""
        return self.position if self.branches is None else self.branches.peek()

    def advance(self) -> None:
        """The next step call took :meth:`peek`'s position."""
        if self.branches is None:
            self.position += 1
        else:
            self.branches.advance()


current_run: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "celery_durable_run", default=None)
current_step: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "celery_durable_step", default=None)


class AsyncSteps(Protocol):
    """The async steps of one delivery of an ``async def`` body (:mod:`.async_steps`)."""

    def step(self, ctx: RunContext, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any], options: dict[str, Any]
             ) -> Coroutine[Any, Any, Any]:
        """The coroutine that executes or replays one call of the async step ``name``."""


#: Set while an ``async def`` body runs (in its event loop): how its async steps run.
current_loop: contextvars.ContextVar[AsyncSteps | None] = contextvars.ContextVar(
    "celery_durable_loop", default=None)


def active_run() -> RunContext | None:
    """The run whose body is executing in this thread, if any."""
    return current_run.get()


def body_context(what: str) -> RunContext | None:
    """The run whose *body* is calling ``what()`` (a wait or a child call), or None outside one.

    Raises RuntimeError inside a step (waits and child calls belong in the body),
    LeaseLost if another delivery took the run over, and the run's fatal error
    (a corrupt or foreign checkpoint) if the body caught it and went on.
    """
    ctx = active_run()
    if ctx is not None and current_step.get() is not None:
        raise RuntimeError(f"{what}() cannot be called inside a step; call it from the "
                           "durable task's body")
    if ctx is not None and ctx.fatal is not None:  # the body caught an error that ends the run
        raise ctx.fatal
    if ctx is not None:
        ensure_held(ctx.run_id)
    return ctx


def require_step_context() -> StepContext:
    """The context of the step executing now; RuntimeError outside a step."""
    ctx = current_step.get()
    if ctx is None:
        raise RuntimeError("step.context() is only available while a step runs inside a "
                           "durable run")
    return ctx

