"""How a run hash's fields become records, and how a checkpoint becomes fields.

Shared by :class:`~celery_durable.stores.redis.store.RedisStore` and its run-control
half (:mod:`.redis_controls`).
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import CorruptCheckpointError
from ...records import ErrorInfo, RunRecord, RunStatus, StepRecord, WaitInfo
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


def parse_run(run_id: str, flat: list[Any] | dict[Any, Any]) -> RunRecord:
    """Build a RunRecord (with its checkpoints, all decoded) from an HGETALL reply.

    Raises :class:`CorruptCheckpointError` naming the run if the hash holds
    something the store never writes (a truncated or edited field).
    """
    run, checkpoints = parse_begin(run_id, flat)
    run.steps = [checkpoints[position] for position in checkpoints]
    return run


#: The run fields of a run hash (everything but the checkpoints ``c:<pos>`` / ``v:<pos>``).
RUN_FIELDS = ("task", "status", "args", "kwargs", "options", "created", "updated", "started",
              "finished", "token", "owner", "lease", "nb", "due", "rec", "result", "error",
              "fstep", "ikey", "wkind", "wstep", "wpos", "wid", "wuntil", "wname", "wkey",
              "wafter", "wres", "parent", "cdone")
_RUN_FIELDS_BYTES = tuple(name.encode() for name in RUN_FIELDS)


def parse_begin(run_id: str, flat: list[Any] | dict[Any, Any]
                ) -> tuple[RunRecord, LazyCheckpoints]:
    """The run (without steps) and its lazily decoded checkpoints, from an HGETALL reply.

    Only the run fields are read now; see :mod:`.redis_checkpoints`.
    """
    raw = as_dict(flat)
    names = _RUN_FIELDS_BYTES if raw and isinstance(next(iter(raw)), bytes) else RUN_FIELDS
    try:
        fields = {name: text(raw[key]) for name, key in zip(RUN_FIELDS, names, strict=True)
                  if key in raw}
        run = _run_record(run_id, fields)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(
            f"run {run_id}: the stored run is corrupt and cannot be read "
            f"({type(exc).__name__}: {str(exc)[:200]})", run_id=run_id) from exc
    return run, LazyCheckpoints(run_id, raw)


def _run_record(run_id: str, fields: dict[str, str]) -> RunRecord:
    error = json.loads(fields["error"]) if fields.get("error") else None
    wait = None
    if fields.get("wkind"):
        wait = WaitInfo(kind=fields["wkind"], step=fields.get("wstep", ""),
                        position=int(fields.get("wpos") or 0),
                        wait_id=int(fields.get("wid") or 0), until=as_float(fields.get("wuntil")),
                        event=fields.get("wname") or None,
                        key=fields.get("wkey") if fields["wkind"] == "event" else None,
                        after=int(fields.get("wafter") or 0),
                        resolution=fields.get("wres") or None)
    return RunRecord(
        id=run_id, task=fields.get("task", ""), status=RunStatus(fields.get("status", "PENDING")),
        args=fields.get("args", "[]"), kwargs=fields.get("kwargs", "{}"),
        options=json.loads(fields["options"]) if fields.get("options") else {},
        created_at=as_float(fields.get("created")), updated_at=as_float(fields.get("updated")),
        started_at=as_float(fields.get("started")), finished_at=as_float(fields.get("finished")),
        token=int(fields.get("token") or 0), owner=fields.get("owner", ""),
        lease_expires=as_float(fields.get("lease")), not_before=as_float(fields.get("nb")),
        due_at=as_float(fields.get("due")), recoveries=int(fields.get("rec") or 0),
        result=fields.get("result") or None, error=ErrorInfo(*error) if error else None,
        failed_step=fields.get("fstep") or None, idempotency_key=fields.get("ikey") or None,
        wait=wait, parent=fields.get("parent") or None,
        children_done=int(fields.get("cdone") or 0),
    )


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
