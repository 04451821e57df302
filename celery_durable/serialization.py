"""Checkpoint serialization: JSON with tagged rich types; pickle only by opt-in.

Round-trips ``datetime``, ``date``, ``time``, ``timedelta``, ``Decimal``,
``UUID``, ``bytes``, dataclasses and pydantic models. Tuples become lists (on
the first run and on replay alike, because the body always receives the
deserialized value). A rich value is encoded as ``{"__cd__": [tag, data]}``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import importlib
import json
import pickle
import uuid
from typing import Any, Protocol

from .errors import CheckpointTooLargeError, SerializationError

TAG = "__cd__"


class Serializer(Protocol):
    """Turns values into text for the store and back."""

    name: str

    def dumps(self, value: Any) -> str:
        """Encode ``value``; raise TypeError or ValueError if it cannot be encoded."""

    def loads(self, data: str) -> Any:
        """Decode text produced by :meth:`dumps`."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise TypeError(f"{path} is not a class")
    return obj


def _encode_rich(value: Any) -> dict[str, Any]:
    """``default`` hook of the JSON encoder: tag a value JSON cannot hold."""
    if isinstance(value, dt.datetime):
        return {TAG: ["datetime", value.isoformat()]}
    if isinstance(value, dt.date):
        return {TAG: ["date", value.isoformat()]}
    if isinstance(value, dt.time):
        return {TAG: ["time", value.isoformat()]}
    if isinstance(value, dt.timedelta):
        # Exact parts: total_seconds() is a float and loses microseconds past ~100 days.
        return {TAG: ["timedelta", [value.days, value.seconds, value.microseconds]]}
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():  # NaN never equals itself; JSON floats refuse it too
            raise ValueError(f"Decimal {value} is not allowed (allow_nan is off)")
        return {TAG: ["decimal", str(value)]}
    if isinstance(value, uuid.UUID):
        return {TAG: ["uuid", str(value)]}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {TAG: ["bytes", base64.b64encode(bytes(value)).decode("ascii")]}
    if isinstance(value, (set, frozenset)):
        return {TAG: ["set", sorted(value, key=repr)]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {TAG: ["dataclass", [_class_path(type(value)), fields]]}
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and hasattr(type(value), "model_validate"):
        return {TAG: ["pydantic", [_class_path(type(value)), model_dump(mode="json")]]}
    raise TypeError(f"values of type {type(value).__module__}.{type(value).__qualname__} "
                    "are not JSON serializable")


def _decode_rich(obj: dict[str, Any]) -> Any:
    """``object_hook`` of the JSON decoder: rebuild a tagged value."""
    if TAG not in obj or len(obj) != 1:
        return obj
    tag, data = obj[TAG]
    if tag == "datetime":
        return dt.datetime.fromisoformat(data)
    if tag == "date":
        return dt.date.fromisoformat(data)
    if tag == "time":
        return dt.time.fromisoformat(data)
    if tag == "timedelta":
        if isinstance(data, list):
            days, seconds, micros = data
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        return dt.timedelta(seconds=data)  # written by versions before 0.1.1
    if tag == "decimal":
        return decimal.Decimal(data)
    if tag == "uuid":
        return uuid.UUID(data)
    if tag == "bytes":
        return base64.b64decode(data)
    if tag == "set":
        return set(data)
    if tag == "dataclass":
        cls = _import_class(data[0])
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{data[0]} is not a dataclass")
        return cls(**data[1])
    if tag == "pydantic":
        cls = _import_class(data[0])
        return cls.model_validate(data[1])  # type: ignore[attr-defined]
    raise ValueError(f"unknown tag {tag!r}")


class JSONSerializer:
    """The default serializer: JSON plus tagged rich types. Never executes code."""

    name = "json"

    # One encoder and one decoder for every call: building them costs more than
    # encoding a small checkpoint.
    _encoder = json.JSONEncoder(default=_encode_rich, separators=(",", ":"),
                                ensure_ascii=True, allow_nan=False)
    _decoder = json.JSONDecoder(object_hook=_decode_rich)

    def dumps(self, value: Any) -> str:
        """Encode ``value`` as compact JSON text."""
        return self._encoder.encode(value)

    def loads(self, data: str) -> Any:
        """Decode JSON text produced by :meth:`dumps`.

        ``raw_decode`` first: text written by :meth:`dumps` has no surrounding
        whitespace, and skipping ``decode``'s two whitespace scans makes a small
        value ~3x faster to read (every replayed step reads one). Anything else
        goes through ``decode``, which accepts or rejects it as ``json`` does.
        """
        try:
            value, end = self._decoder.raw_decode(data)
        except ValueError:
            return self._decoder.decode(data)
        return value if end == len(data) else self._decoder.decode(data)


class PickleSerializer:
    """Pickle, base64-encoded. Only used when ``durable_serializer = "pickle"``.

    Unpickling executes code chosen by whoever can write to the store: enable
    it only when the store is as trusted as your code.
    """

    name = "pickle"

    def dumps(self, value: Any) -> str:
        """Pickle ``value`` and return it base64-encoded."""
        return base64.b64encode(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).decode()

    def loads(self, data: str) -> Any:
        """Unpickle base64 text produced by :meth:`dumps`."""
        return pickle.loads(base64.b64decode(data))  # explicit opt-in only


SERIALIZERS: dict[str, type[JSONSerializer] | type[PickleSerializer]] = {
    "json": JSONSerializer,
    "pickle": PickleSerializer,
}


def get_serializer(name: str) -> Serializer:
    """Return the serializer registered under ``name`` (``json`` or ``pickle``)."""
    try:
        return SERIALIZERS[name]()
    except KeyError:
        raise ValueError(f"unknown durable_serializer {name!r}; "
                         f"choose one of {sorted(SERIALIZERS)}") from None


def encode(serializer: Serializer, value: Any, *, max_bytes: int, what: str,
           run_id: str | None = None, step: str | None = None) -> str:
    """Serialize ``value`` or raise a :class:`SerializationError` naming run, step and type."""
    try:
        text = serializer.dumps(value)
    except RecursionError as exc:  # a structure nested deeper than Python's recursion limit
        raise SerializationError(
            f"run {run_id}: {what} of type {type(value).__module__}."
            f"{type(value).__qualname__} is nested too deeply to be serialized with "
            f"{serializer.name} ({exc})", run_id=run_id, step=step) from None
    except (TypeError, ValueError, OverflowError, pickle.PicklingError) as exc:
        raise SerializationError(
            f"run {run_id}: {what} of type {type(value).__module__}."
            f"{type(value).__qualname__} cannot be serialized with "
            f"{serializer.name}: {exc}", run_id=run_id, step=step) from exc
    size = len(text.encode("utf-8"))
    if max_bytes and size > max_bytes:
        raise CheckpointTooLargeError(
            f"run {run_id}: {what} of type {type(value).__qualname__} is {size} bytes "
            f"serialized, over durable_max_checkpoint_bytes={max_bytes}",
            run_id=run_id, step=step)
    return text


def decode(serializer: Serializer, text: str, *, what: str,
           run_id: str | None = None, step: str | None = None) -> Any:
    """Deserialize stored text or raise a :class:`SerializationError` saying what is corrupt."""
    try:
        return serializer.loads(text)
    except Exception as exc:
        raise SerializationError(
            f"run {run_id}: stored {what} cannot be decoded ({type(exc).__name__}: {exc})",
            run_id=run_id, step=step) from exc
