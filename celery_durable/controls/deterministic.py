"""``now()``, ``uuid4()`` and ``random()``: the same value on every replay.

Each is a step under the hood, so code between steps can use them safely.
Outside a run they are the plain functions.
"""

from __future__ import annotations

import datetime as dt
import random as _random
import uuid as _uuid

from ..engine.steps import step


def now() -> dt.datetime:
    """The current UTC time, recorded the first time and replayed after."""
    return step.run("now", dt.datetime.now, dt.timezone.utc)  # type: ignore[no-any-return]


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded the first time and replayed after."""
    return step.run("uuid4", _uuid.uuid4)  # type: ignore[no-any-return]


def random() -> float:
    """A float in [0, 1), recorded the first time and replayed after."""
    return step.run("random", _random.random)  # type: ignore[no-any-return]
