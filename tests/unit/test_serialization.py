"""Checkpoint serialization: JSON round-trips of rich types, clear errors, size limit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import uuid

import pytest

from celery_durable import CheckpointTooLargeError, SerializationError
from celery_durable.serialization import decode, encode, get_serializer


@dataclasses.dataclass
class Money:
    amount: decimal.Decimal
    currency: str


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime
    lines: list[Money]


JSON = get_serializer("json")


def roundtrip(value: object, serializer=JSON) -> object:  # type: ignore[no-untyped-def]
    text = encode(serializer, value, max_bytes=1 << 20, what="result of step s#0",
                  run_id="run-1", step="s#0")
    assert isinstance(text, str)
    return decode(serializer, text, what="value of step s#0", run_id="run-1", step="s#0")


@pytest.mark.parametrize("value", [
    dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
    dt.datetime(2024, 2, 29, 23, 59, 58, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.date(1999, 12, 31),
    dt.time(13, 14, 15, 16),
    dt.timedelta(days=3, seconds=7, microseconds=11),
    decimal.Decimal("12345678901234567890.000000001"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"\x00\xffbinary\n",
    {1, 2, 3},
    Money(decimal.Decimal("9.99"), "EUR"),
    Order(uuid.uuid4(), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
          [Money(decimal.Decimal("1.10"), "USD")]),
    {"nested": [dt.date(2020, 1, 1), {"u": uuid.UUID(int=7)}], "n": None, "f": 1.5},
], ids=lambda v: type(v).__name__)
def test_rich_values_round_trip(value: object) -> None:
    """Each supported rich type comes back equal and of the same type."""
    back = roundtrip(value)
    assert back == value
    assert type(back) is type(value)


def test_tuples_become_lists_on_every_path() -> None:
    """A tuple (also nested) always comes back as a list, so first run and replay agree."""
    assert roundtrip((1, (2, 3), {"t": (4,)})) == [1, [2, 3], {"t": [4]}]


def test_a_dict_that_looks_like_a_tag_is_not_confused_with_one() -> None:
    """A user dict with extra keys next to the tag key stays a plain dict."""
    value = {"__cd__": ["uuid", "x"], "other": 1}
    assert roundtrip(value) == value


def test_pickle_is_opt_in_and_round_trips_arbitrary_objects() -> None:
    """The pickle serializer keeps tuples and arbitrary objects; JSON is the default."""
    pickle = get_serializer("pickle")
    assert roundtrip((1, 2), pickle) == (1, 2)
    assert JSON.name == "json"
    with pytest.raises(ValueError, match="unknown durable_serializer"):
        get_serializer("yaml")


class Opaque:
    pass


def test_non_serializable_names_run_step_and_type() -> None:
    """A value JSON cannot hold raises SerializationError naming the run, step and type."""
    with pytest.raises(SerializationError) as info:
        encode(JSON, {"x": Opaque()}, max_bytes=1 << 20, what="result of step charge#0",
               run_id="run-42", step="charge#0")
    message = str(info.value)
    assert "run-42" in message
    assert "charge#0" in message
    assert "Opaque" in message
    assert info.value.run_id == "run-42"
    assert info.value.step == "charge#0"
    assert not isinstance(info.value, CheckpointTooLargeError)


def test_nan_is_refused_rather_than_stored_as_invalid_json() -> None:
    """NaN is not valid JSON, so it is refused with a SerializationError."""
    with pytest.raises(SerializationError):
        encode(JSON, float("nan"), max_bytes=0, what="result of step s#0", run_id="r")


def test_size_limit_raises_checkpoint_too_large() -> None:
    """A value over the byte limit raises CheckpointTooLargeError naming run, step and size."""
    with pytest.raises(CheckpointTooLargeError) as info:
        encode(JSON, "x" * 2000, max_bytes=1000, what="result of step big#0",
               run_id="run-7", step="big#0")
    message = str(info.value)
    assert "run-7" in message and "big#0" in message and "1000" in message
    assert isinstance(info.value, SerializationError)
    assert encode(JSON, "x" * 990, max_bytes=1000, what="w") == '"' + "x" * 990 + '"'


def test_corrupt_text_raises_serialization_error_on_decode() -> None:
    """Stored text that cannot be decoded raises SerializationError, not a raw JSON error."""
    with pytest.raises(SerializationError, match="run-9"):
        decode(JSON, "{not json", what="value of step s#0", run_id="run-9", step="s#0")


@pytest.mark.parametrize("text", ['  {"a": [1, 2]}', '{"a": [1, 2]}\n', ' 7 ', '"x"\t'])
def test_text_with_surrounding_whitespace_decodes_as_json_does(text: str) -> None:
    """The fast path (no whitespace scan) falls back for text :meth:`dumps` never writes."""
    import json

    assert JSON.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ['{"a": 1} {"b": 2}', "7 x", "[1, 2", "", "   "])
def test_text_with_extra_or_missing_data_is_refused(text: str) -> None:
    """Trailing data after a complete value, or no value at all, is not silently accepted."""
    with pytest.raises(SerializationError):
        decode(JSON, text, what="value of step s#0", run_id="run-9", step="s#0")
