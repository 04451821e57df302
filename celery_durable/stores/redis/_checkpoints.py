"""A run's checkpoints as ``RedisStore.begin`` loads them: decoded when replay reaches them.

``begin`` fetches the whole run hash in its one round trip. Turning every
``c:<pos>``/``v:<pos>`` pair into a :class:`StepRecord` up front made resuming
a run with 1,000 checkpoints cost ~5 ms of Python before the body started;
this mapping keeps the raw fields (one C-level ``dict``) and decodes a
position the first time it is asked for, so loading stays flat in the number
of checkpoints and each replayed step pays for its own record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from ...errors import CorruptCheckpointError
from ...records import OnDemandCheckpoints, StepRecord, StepStatus

_JSON = json.JSONDecoder()
_quoted = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

_PLAIN = r'[^"\\\x00-\x1f\x7f-\xff]'  # a character JSON (ASCII) writes as itself
_STRING = rf'"{_PLAIN}*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{{4}}){_PLAIN}*)*"'
_NUMBER = r"(?:null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)"
#: The rest of a success's stored record after its key, exactly as
#: :func:`~.redis_codec.meta_text` writes it (ASCII JSON, fields in this order).
_SUCCESS_TAIL = (f'"n":{_STRING},"s":"{StepStatus.SUCCEEDED.value}",'
                 f'"a":-?\\d+,"t0":{_NUMBER},"t1":{_NUMBER}}}')
_SUCCESS_TAIL_TEXT = re.compile(_SUCCESS_TAIL)
_SUCCESS_TAIL_BYTES = re.compile(_SUCCESS_TAIL.encode())
#: Positions decoded per JSON pass as replay advances.
CHUNK = 64


class LazyCheckpoints(OnDemandCheckpoints):
    """Checkpoints by position over the raw fields of a run hash (bytes or str names).

    A position whose stored record cannot be read raises
    :class:`CorruptCheckpointError` naming the run and the position when it is
    first read, and replay stops there: no step runs on top of it.
    """

    def __init__(self, run_id: str, fields: dict[Any, Any]) -> None:
        super().__init__(run_id)
        self._fields = fields
        self._bytes = isinstance(next(iter(fields), b""), bytes)
        self._meta_name = b"c:%d" if self._bytes else "c:%d"
        self._value_name = b"v:%d" if self._bytes else "v:%d"
        self._success_tail: Any = _SUCCESS_TAIL_BYTES if self._bytes else _SUCCESS_TAIL_TEXT
        self._positions: set[int] | None = None

    def _decode(self, position: int, meta: Any) -> StepRecord:
        value = self._fields.get(self._value_name % position)
        try:
            if self._bytes:
                meta = meta.decode()
                value = value.decode() if value is not None else None
            return StepRecord.from_meta(position, _JSON.decode(meta), value or None)
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise self._corrupt(position, exc) from exc

    def _build(self, position: int) -> StepRecord | None:
        meta = self._fields.get(self._meta_name % position)
        if meta is None:
            return None
        self._decode_ahead(position)
        record = self._built.get(position)
        if record is None:  # the batch was unreadable: decode this one alone (names it)
            record = self._built[position] = self._decode(position, meta)
        return record

    def _stored_success(self, position: int, key: str) -> str | None:
        """The replay shortcut over the stored bytes.

        The stored record is recognised as that step's success by its shape
        (the key, then exactly the fields :func:`~.redis_codec.meta_text` writes
        for a success), so replaying it builds no record and parses no JSON.
        Anything else, a record of another shape or a damaged one included,
        answers None, and the caller reads the record, which decodes it (or
        names the corruption).
        """
        meta = self._fields.get(self._meta_name % position)
        if meta is None:
            return None
        text = '{"k":' + _quoted(key) + ","
        head = text.encode() if self._bytes else text
        if not meta.startswith(head) or self._success_tail.fullmatch(meta, len(head)) is None:
            return None
        value = self._fields.get(self._value_name % position)
        if not value:
            return "null"
        try:
            return value.decode() if self._bytes else value  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            return None

    def _decode_ahead(self, position: int) -> None:
        """Decode the next :data:`CHUNK` positions from ``position`` in one JSON pass.

        Replay reads positions in order, so one ``json`` call per chunk costs
        about what decoding the whole run at once did, without doing it up front.
        """
        get, meta_name, value_name = self._fields.get, self._meta_name, self._value_name
        decoded, metas, values = self._built, [], []
        for pos in range(position, position + CHUNK):
            meta = get(meta_name % pos)
            if meta is None or pos in decoded:
                break
            metas.append(meta)
            values.append(get(value_name % pos))
        try:
            if self._bytes:
                text = (b"[" + b",".join(metas) + b"]").decode()
                values = [v.decode() if v else None for v in values]
            else:
                text = "[" + ",".join(metas) + "]"
                values = [v or None for v in values]
            positions = range(position, position + len(metas))
            records = [StepRecord.from_meta(pos, meta, value) for pos, meta, value
                       in zip(positions, _JSON.decode(text), values, strict=True)]
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
            return
        decoded.update(zip(positions, records, strict=True))

    def __setitem__(self, position: int, record: StepRecord) -> None:
        self._built[position] = record
        if self._positions is not None:
            self._positions.add(position)

    def __delitem__(self, position: int) -> None:
        if position not in self:
            raise KeyError(position)
        self._built.pop(position, None)
        self._fields.pop(self._meta_name % position, None)
        self._fields.pop(self._value_name % position, None)
        if self._positions is not None:
            self._positions.discard(position)

    def __contains__(self, position: object) -> bool:
        return isinstance(position, int) and (
            position in self._built or self._meta_name % position in self._fields)

    def _all(self) -> set[int]:
        if self._positions is None:
            prefix = b"c:" if self._bytes else "c:"
            try:
                found = {int(name[2:]) for name in self._fields if name[:2] == prefix}
            except ValueError as exc:
                raise CorruptCheckpointError(
                    f"run {self.run_id}: a checkpoint field name is corrupt ({exc})",
                    run_id=self.run_id) from exc
            self._positions = found | set(self._built)
        return self._positions

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._all()))

    def __len__(self) -> int:
        return len(self._all())
