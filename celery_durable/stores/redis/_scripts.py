"""The Lua scripts of the RedisStore, read from ``lua/*.lua`` at import.

Each script touches only one run's keys (its hash, history and metadata share
its hash tag), one global key, or the keys of one
event or one concurrency group (which share a hash tag), so the store works
unchanged on Redis Cluster. Times come from the server's clock (``TIME``).

A script's first line may name fragments of ``lua/lib/`` it needs
(``-- uses: now holds``); they are put in front of it, in that order.
"""

from __future__ import annotations

from importlib.resources import files

_LUA = files(__package__).joinpath("lua")
_USES = "-- uses:"


def _read(name: str) -> str:
    return _LUA.joinpath(name).read_text(encoding="utf-8")


def source(name: str) -> str:
    """The full text of script ``name`` (``lua/<name>.lua`` with its fragments)."""
    text = _read(f"{name}.lua")
    first, _, rest = text.partition("\n")
    if not first.startswith(_USES):
        return text
    return "".join(_read(f"lib/{lib}.lua") for lib in first[len(_USES):].split()) + rest


#: Every script by the name the store calls it (``BEGIN`` is ``lua/begin.lua``).
SCRIPTS = {name: source(name.lower()) for name in (
    # a delivery and the sweeper
    "BEGIN", "SAVE_STEP", "SAVE_FAILURE", "PARK", "FINISH", "RENEW", "DUE", "CLAIM_DUE", "RESET",
    # durable waits and events
    "SUSPEND", "REGISTER", "POST", "DELIVER", "WAKE",
    # run controls: child runs, cancel, idempotency, concurrency, retention
    "CREATE", "CANCEL", "IDEMPOTENCY", "NOTIFY", "SUSPEND_CHILDREN", "ACQUIRE", "RELEASE",
    "RENEW_SLOTS", "PURGE",
    # the operator's record: metadata and replay links
    "SET_META", "LINK_REPLAY",
    # wait tokens
    "CREATE_TOKEN", "COMPLETE_TOKEN")}
