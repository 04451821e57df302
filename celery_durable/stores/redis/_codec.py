"""How a run hash's fields become records, and how a checkpoint becomes fields.

Shared by :class:`~celery_durable.stores.redis.store.RedisStore` and its run-control
half (:mod:`.redis_controls`).
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import CorruptCheckpointError
from ...records import ErrorInfo, RetryInfo, RunRecord, RunStatus, StepRecord, WaitInfo
from ._checkpoints import LazyCheckpoints


def as_float(value: Any) -> float | None:
    """A stored number, or None for an empty field."""
    return float(value) if value not in (None, "", b"") else None


def text(value: Any) -> str:
    """A Redis reply as text (bytes decoded as UTF-8)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def as_dict(reply: Any) -> dict[Any, Any]:
    """An ``HGETALL`` reply as a dict: redis-py's client path gives one, a raw reply a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2], strict=True))


def parse_run(run_id: str, flat: list[Any] | dict[Any, Any], *,
              strict: bool = False) -> RunRecord:
    """Build a RunRecord (with its checkpoints, all decoded) from an HGETALL reply.

    What the store never writes (a truncated or edited field, a checkpoint that
    does not decode) is named in ``RunRecord.damage`` and left out, so one bad run
    can be listed and inspected; ``strict`` raises :class:`CorruptCheckpointError`
    naming the run and the field instead.
    """
    run, checkpoints = parse_begin(run_id, flat, strict=strict)
    steps = []
    for position in sorted(checkpoints):
        try:
            steps.append(checkpoints[position])
        except CorruptCheckpointError:
            if strict:
                raise
            run.damage.append(f"checkpoint at position {position}")
    run.steps = steps
    return run


#: The run fields of a run hash (everything but the checkpoints ``c:<pos>`` / ``v:<pos>``).
RUN_FIELDS = ("task", "status", "args", "kwargs", "options", "created", "updated", "started",
              "finished", "token", "owner", "lease", "nb", "due", "rec", "result", "error",
              "fstep", "ikey", "wkind", "wstep", "wpos", "wid", "wuntil", "wname", "wkey",
              "wafter", "wres", "parent", "cdone", "tags", "ver", "retries", "retrying",
              "replay_of", "replayed")
_RUN_FIELDS_BYTES = tuple(name.encode() for name in RUN_FIELDS)


def parse_begin(run_id: str, flat: list[Any] | dict[Any, Any], *, strict: bool = True
                ) -> tuple[RunRecord, LazyCheckpoints]:
    """The run (without steps) and its lazily decoded checkpoints, from an HGETALL reply.

    Only the run fields are read now; see :mod:`._checkpoints`. A field that does not
    parse raises :class:`CorruptCheckpointError` naming it; with ``strict=False`` it
    gets a default and is named in ``RunRecord.damage`` (for listing and inspection).
    """
    raw = as_dict(flat)
    names = _RUN_FIELDS_BYTES if raw and isinstance(next(iter(raw)), bytes) else RUN_FIELDS
    fields: dict[str, str] = {}
    damage: list[str] = []
    for name, key in zip(RUN_FIELDS, names, strict=True):
        if key in raw:
            try:
                fields[name] = text(raw[key])
            except UnicodeDecodeError:
                damage.append(f"{name} (not UTF-8)")
    run = _run_record(run_id, fields)
    if damage:
        run.damage = [*damage, *run.damage]
    if run.damage and strict:
        raise CorruptCheckpointError(
            f"run {run_id}: the stored run is corrupt and cannot be read: "
            f"{'; '.join(run.damage)[:300]}", run_id=run_id)
    return run, LazyCheckpoints(run_id, raw)


class _Fields:
    """Reads a run's stored fields; a field that does not parse is noted, with a default."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.damage: list[str] = []

    def read(self, name: str, convert: Any, default: Any) -> Any:
        value = self.fields.get(name)
        if value in (None, ""):
            return default
        try:
            return convert(value)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self.damage.append(f"{name} ({type(exc).__name__}: {str(value)[:60]!r})")
            return default


def _error(value: str) -> ErrorInfo:
    return ErrorInfo(*json.loads(value))


def _strings(value: str) -> list[str]:
    items = json.loads(value)
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise TypeError("not a JSON list of strings")
    return items


def parse_metadata(run: RunRecord, raw: dict[Any, Any]) -> dict[str, Any]:
    """A run's metadata hash, decoded; a value that does not parse is named in ``damage``."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            out[text(name)] = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            run.damage.append(f"metadata {text(name)[:60]!r} ({type(exc).__name__})")
    return out


def _options(value: str) -> dict[str, Any]:
    options = json.loads(value)
    if not isinstance(options, dict):
        raise TypeError("not a JSON object")
    return options


def _run_record(run_id: str, fields: dict[str, str]) -> RunRecord:
    """The run in ``fields``; what does not parse gets a default and is named in ``damage``."""
    f = _Fields(fields)
    wait = None
    if fields.get("wkind"):
        wait = WaitInfo(kind=fields["wkind"], step=fields.get("wstep", ""),
                        position=f.read("wpos", int, 0), wait_id=f.read("wid", int, 0),
                        until=f.read("wuntil", float, None),
                        event=fields.get("wname") or None,
                        key=fields.get("wkey") if fields["wkind"] == "event" else None,
                        after=f.read("wafter", int, 0), resolution=fields.get("wres") or None)
    run = RunRecord(
        id=run_id, task=fields.get("task", ""),
        status=f.read("status", RunStatus, RunStatus.PENDING),
        args=fields.get("args", "[]"), kwargs=fields.get("kwargs", "{}"),
        options=f.read("options", _options, {}),
        created_at=f.read("created", float, None), updated_at=f.read("updated", float, None),
        started_at=f.read("started", float, None), finished_at=f.read("finished", float, None),
        token=f.read("token", int, 0), owner=fields.get("owner", ""),
        lease_expires=f.read("lease", float, None), not_before=f.read("nb", float, None),
        due_at=f.read("due", float, None), recoveries=f.read("rec", int, 0),
        result=fields.get("result") or None, error=f.read("error", _error, None),
        failed_step=fields.get("fstep") or None, idempotency_key=fields.get("ikey") or None,
        wait=wait, parent=fields.get("parent") or None,
        children_done=f.read("cdone", int, 0), tags=f.read("tags", _strings, []),
        version=fields.get("ver") or None, retries=f.read("retries", int, 0),
        retrying=f.read("retrying", RetryInfo.from_json, None),
        replay_of=fields.get("replay_of") or None,
        replayed_as=f.read("replayed", _strings, []),
    )
    if f.damage:
        run.damage = f.damage
        if "status" in (d.split(" ")[0] for d in f.damage):
            run.status = RunStatus.FAILED  # shown as what it is: a run that cannot go on
    return run


#: ``json.dumps(..., separators=(",", ":"))`` builds an encoder per call; this one is reused.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


_quoted = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _number(value: float | None) -> str:
    return "null" if value is None else repr(value)


def meta_text(step: StepRecord) -> str:
    """The stored JSON of ``step`` without its value: ``_COMPACT_JSON.encode(step.to_meta())``.

    A step without an error (every successful checkpoint) is formatted
    directly, byte for byte the same, in a third of the time.
    """
    if step.error is not None:
        return _COMPACT_JSON.encode(step.to_meta())
    return (f'{{"k":{_quoted(step.key)},"n":{_quoted(step.name)},'
            f'"s":{_quoted(step.status.value)},"a":{int(step.attempts)},'
            f'"t0":{_number(step.started_at)},"t1":{_number(step.finished_at)}}}')


def checkpoint_args(step: StepRecord) -> list[Any]:
    """The script arguments of a checkpoint: position, meta JSON, value."""
    return [step.position, meta_text(step), step.value or ""]
