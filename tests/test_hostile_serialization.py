"""Hostile input for serialization: hypothesis round-trips, and values that must be refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_durable.errors import CheckpointTooLargeError, SerializationError
from celery_durable.serialization import decode, encode, get_serializer

JSON = get_serializer("json")
#: Examples per property; ``FUZZ_EXAMPLES=5000`` for a deeper run (docs/RELIABILITY.md).
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@dataclasses.dataclass(frozen=True)
class Point:
    """A dataclass value as a step might return it."""

    x: int
    label: str


@dataclasses.dataclass
class Box:
    """A dataclass holding rich and nested values."""

    when: dt.datetime
    amount: decimal.Decimal
    tags: set[str]
    inner: Point
    blob: bytes
    items: list[Any]


# Any Unicode code point, lone surrogates included (JSON escapes them with ensure_ascii).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
# Aware datetimes come back with a fixed UTC offset (the instant is kept, the zone name is
# not): fixed offsets compare equal; named zones are checked by instant below.
OFFSETS = st.builds(lambda m: dt.timezone(dt.timedelta(minutes=m)),
                    st.integers(min_value=-23 * 60, max_value=23 * 60))
DATETIMES = st.datetimes(timezones=st.one_of(st.none(), OFFSETS))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), ANY_TEXT,
    st.floats(allow_nan=False, allow_infinity=False),
    DATETIMES, st.dates(), st.times(), st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(), st.binary(max_size=64),
)
HASHABLE = st.one_of(st.integers(), ANY_TEXT, st.uuids(), st.dates(), st.binary(max_size=8))
POINTS = st.builds(Point, x=st.integers(), label=ANY_TEXT)
VALUES = st.recursive(
    st.one_of(SCALARS, POINTS, st.sets(HASHABLE, max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(ANY_TEXT, inner, max_size=5)),
    max_leaves=25)
BOXES = st.builds(Box, when=DATETIMES, amount=st.decimals(allow_nan=False, allow_infinity=False),
                  tags=st.sets(ANY_TEXT, max_size=4), inner=POINTS,
                  blob=st.binary(max_size=32), items=st.lists(VALUES, max_size=3))


def roundtrip(value: Any) -> Any:
    """Encode then decode ``value`` as a step checkpoint is."""
    text = encode(JSON, value, max_bytes=0, what="fuzz value", run_id="r", step="s#0")
    assert text.isascii()  # stores receive ASCII: no UTF-8 issue in Redis or PostgreSQL
    return decode(JSON, text, what="fuzz value", run_id="r", step="s#0")


@FUZZ
@given(VALUES)
def test_every_supported_value_round_trips(value: Any) -> None:
    """Nested lists/dicts of every supported scalar, set and dataclass decode to an equal value."""
    assert roundtrip(value) == value


@FUZZ
@given(BOXES)
def test_dataclasses_with_rich_fields_round_trip(box: Box) -> None:
    """A dataclass with datetime, Decimal, set, nested dataclass, bytes fields comes back equal."""
    back = roundtrip(box)
    assert back == box and type(back.inner) is Point


@FUZZ
@given(st.timedeltas())
def test_timedeltas_keep_every_microsecond(value: dt.timedelta) -> None:
    """Extreme timedeltas round-trip exactly (a float of seconds would lose microseconds)."""
    assert roundtrip(value) == value


@FUZZ
@given(st.lists(st.tuples(st.integers(), ANY_TEXT), max_size=4))
def test_tuples_become_lists(value: list[tuple[int, str]]) -> None:
    """Tuples come back as lists: documented, and the same on the first run as on replay."""
    assert roundtrip(value) == [list(t) for t in value]


class Opaque:
    """A plain object JSON cannot hold."""


UNSUPPORTED = st.sampled_from([
    Opaque(), object(), lambda: 1, complex(1, 2), math.nan, math.inf, -math.inf,
    decimal.Decimal("NaN"), iter([1]), type, {"k": Opaque()}, [1, [2, {3}, Opaque()]],
    {(1, 2): "tuple key"}, range(3),
])


@FUZZ
@given(UNSUPPORTED)
def test_everything_else_fails_with_a_clear_serialization_error(value: Any) -> None:
    """An unsupported value raises SerializationError naming run, step and the value's type."""
    with pytest.raises(SerializationError) as info:
        encode(JSON, value, max_bytes=0, what="result of step s#0", run_id="run-9", step="s#0")
    message = str(info.value)
    assert "run run-9" in message and "s#0" in message and type(value).__qualname__ in message
    assert info.value.step == "s#0"


def test_decimal_nan_is_refused_not_stored_as_text() -> None:
    """``Decimal('NaN')`` never equals itself, so it must not silently round-trip as 'NaN'."""
    with pytest.raises(SerializationError):
        encode(JSON, decimal.Decimal("NaN"), max_bytes=0, what="v")


@FUZZ
@given(st.integers(min_value=3, max_value=4096))
def test_oversized_values_fail_with_the_size_error(limit: int) -> None:
    """A value over ``durable_max_checkpoint_bytes`` raises CheckpointTooLargeError with sizes."""
    value = "x" * (limit + 1)
    with pytest.raises(CheckpointTooLargeError, match=f"durable_max_checkpoint_bytes={limit}"):
        encode(JSON, value, max_bytes=limit, what="result of step big#0", run_id="r")
    assert encode(JSON, "x" * (limit - 2), max_bytes=limit, what="fits") == json.dumps(
        "x" * (limit - 2))


@FUZZ
@given(st.binary(max_size=200))
def test_corrupt_stored_text_fails_with_a_clear_error(blob: bytes) -> None:
    """Random bytes as stored text decode to a value or raise SerializationError, nothing else."""
    text = blob.decode("utf-8", errors="surrogateescape")
    try:
        decode(JSON, text, what="value of step s#0", run_id="r", step="s#0")
    except SerializationError as exc:
        assert "cannot be decoded" in str(exc)


@FUZZ
@given(VALUES, st.integers(min_value=1, max_value=50))
def test_truncated_checkpoints_fail_with_a_clear_error(value: Any, cut: int) -> None:
    """A checkpoint cut short decodes to a value or raises SerializationError, nothing else."""
    text = encode(JSON, {"v": value}, max_bytes=0, what="v")
    try:
        decode(JSON, text[:-cut], what="value of step s#0", run_id="r", step="s#0")
    except SerializationError as exc:
        assert "cannot be decoded" in str(exc)


def test_tagged_values_cannot_import_arbitrary_code() -> None:
    """A forged dataclass tag naming a non-dataclass (os:system) is refused, never called."""
    forged = json.dumps({"__cd__": ["dataclass", ["os:system", {"command": "true"}]]})
    with pytest.raises(SerializationError, match="cannot be decoded"):
        decode(JSON, forged, what="value of step s#0")
    forged_uuid = json.dumps({"__cd__": ["uuid", "not-a-uuid"]})
    with pytest.raises(SerializationError):
        decode(JSON, forged_uuid, what="value")


@FUZZ
@given(st.datetimes(timezones=st.timezones(), allow_imaginary=False))
def test_datetimes_in_named_zones_keep_their_instant_and_offset(value: dt.datetime) -> None:
    """A datetime in a named zone comes back at the same instant with the same UTC offset."""
    back = roundtrip(value)
    assert back.timestamp() == value.timestamp() and back.utcoffset() == value.utcoffset()
