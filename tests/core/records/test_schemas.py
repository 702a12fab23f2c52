"""Record validation under abuse (SPEC §2, §7): metadata depth and numbers, and bounded error lists."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from core.errors import FieldError, bounded_errors
from core.records.schemas import (
    MAX_METADATA_BYTES,
    BusinessPayload,
    CustomerPayload,
    _MetadataWalk,
    _plainly_valid,
    check_metadata,
    parse_record,
)


def business(metadata: Any, **fields: Any) -> BusinessPayload | CustomerPayload | list[FieldError]:
    return parse_record("businesses", {"external_id": "b", "name": "N", "metadata": metadata, **fields})


def errors_of(metadata: Any, **fields: Any) -> list[tuple[str, str | None]]:
    result = business(metadata, **fields)
    assert isinstance(result, list), result
    return [(e.code, e.path) for e in result]


def _id(value: Any) -> str:
    """A test id for a value (`repr` of an integer of thousands of digits is refused by Python)."""
    if isinstance(value, int):
        return f"int-{value.bit_length()}-bits" if value >= 0 else f"negative-int-{value.bit_length()}-bits"
    return repr(value)


def test_metadata_nested_16_levels_is_accepted_and_17_is_too_deep() -> None:
    sixteen: dict[str, Any] = {}
    level = sixteen
    for _ in range(15):
        level["a"] = {}
        level = level["a"]
    level["x"] = 1
    payload = business(sixteen)
    assert isinstance(payload, BusinessPayload)
    assert payload.metadata == sixteen
    level["x"] = {}  # an empty object is a level too
    assert errors_of(sixteen) == [("metadata_too_deep", "metadata" + ".a" * 15 + ".x")]

    arrays: list[Any] = []
    for _ in range(14):
        arrays = [arrays]
    assert isinstance(business({"l": arrays}), BusinessPayload)  # 1 + 15 array levels
    assert errors_of({"l": [arrays]}) == [("metadata_too_deep", "metadata.l" + ".0" * 15)]


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_metadata_a_hundred_thousand_levels_deep_is_one_error_and_no_recursion_error(depth: int) -> None:
    value: Any = 1
    for n in range(depth):
        value = {"k": value} if n % 2 else [value]
    assert errors_of({"deep": value}) == [("metadata_too_deep", "metadata.deep" + (".k.0" * 8)[:-2])]


@pytest.mark.parametrize(
    "number",
    [2**63, -(2**63) - 1, 2**64 - 1, 10**30, 10**5000, math.inf, -math.inf, math.nan, Decimal("NaN"),
     Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("1e400"), Decimal("-1e309"),
     Decimal("1.7976931348623159e308")],
    ids=_id,
)  # fmt: skip
def test_numbers_that_are_not_64_bit_integers_or_finite_doubles_are_invalid_number(number: Any) -> None:
    assert errors_of({"list": [0, {"n": number}]}) == [("invalid_number", "metadata.list.1.n")]


def test_in_range_numbers_are_kept_and_decimals_become_floats() -> None:
    metadata = {
        "limits": [2**63 - 1, -(2**63), 1.7976931348623157e308, -0.0, 5e-324],
        "decimals": [Decimal("1.5"), Decimal("1e-400"), Decimal("-0"), Decimal("123456789.123456789123456789")],
        "flags": [True, False, None],
        "tuple": (1, Decimal("2.5")),
    }
    payload = business(metadata)
    assert isinstance(payload, BusinessPayload)
    assert payload.metadata == {
        "limits": [2**63 - 1, -(2**63), 1.7976931348623157e308, -0.0, 5e-324],
        "decimals": [1.5, 0.0, -0.0, 123456789.12345679],
        "flags": [True, False, None],
        "tuple": [1, 2.5],
    }
    assert payload.metadata is not None
    assert [type(v) for v in payload.metadata["decimals"]] == [float] * 4
    assert [type(v) for v in payload.metadata["flags"]] == [bool, bool, type(None)]  # bool is not a number here
    orjson.dumps(payload.metadata)  # only JSON-native types left


def test_metadata_keeps_the_size_and_nul_checks_and_reports_every_problem_with_its_path() -> None:
    assert errors_of({"k": "v" * 17_000}) == [("metadata_too_large", "metadata")]
    assert errors_of({"a": {"b": ["x", "\u0000"]}, "n\u0000": 1, "big": 2**64, "f": Decimal("1e999")}) == [
        ("nul_character", "metadata.a.b.1"),
        ("nul_character", "metadata.n\\u0000"),
        ("invalid_number", "metadata.big"),
        ("invalid_number", "metadata.f"),
    ]
    assert errors_of({"x": {1, 2}}) == [("invalid_type", "metadata.x")]


@pytest.mark.parametrize(
    "fields",
    [{"name": Decimal("1e400")}, {"name": Decimal("NaN")}, {"name": Decimal("sNaN")}, {"external_id": 10**5000},
     {"id": Decimal("1.5")}, {"name": math.inf}],
    ids=lambda fields: _id(next(iter(fields.values()))),
)  # fmt: skip
def test_a_decimal_or_huge_number_in_a_typed_field_is_an_error_not_an_exception(fields: dict[str, Any]) -> None:
    [(code, path)] = errors_of({}, **fields)
    assert (code, path) == ("invalid_type", next(iter(fields)))
    customer = parse_record("customers", {"external_id": "c", "email_address": Decimal("1e400")})
    assert isinstance(customer, list)
    assert [(e.code, e.path) for e in customer] == [("invalid_type", "email_address")]


def test_a_record_reports_at_most_20_errors_then_how_many_more() -> None:
    record = {"external_id": "b", "name": "N"} | {f"unknown_{i}": i for i in range(10_000)}
    errors = parse_record("businesses", record)
    assert isinstance(errors, list)
    assert len(errors) == 21
    assert [e.code for e in errors[:20]] == ["unknown_field"] * 20
    assert [e.path for e in errors[:20]] == [f"unknown_{i}" for i in range(20)]
    assert (errors[20].code, errors[20].path) == ("too_many_errors", None)
    assert errors[20].message.startswith("and 9980 more errors")
    assert len(orjson.dumps([e.as_dict() for e in errors])) < 4096

    metadata = {f"n{i}": 2**64 for i in range(100)}
    errors = parse_record("businesses", {"name": "N", "metadata": metadata, "x": 1, "y": 2})
    assert isinstance(errors, list)
    assert len(errors) == 21
    assert errors[20].message.startswith("and 82 more errors")


def test_each_error_path_and_message_is_bounded() -> None:
    key = "k" * 100_000
    errors = parse_record("businesses", {"name": "N", key: 1})
    assert isinstance(errors, list)
    [error] = errors
    assert error.code == "unknown_field"
    assert error.path is not None
    assert len(error.path) == 256
    assert error.path == "k" * 255 + "…"
    [bounded] = bounded_errors([FieldError("not_found", "m" * 10_000 + "\u0000", "p\u0000")])
    assert bounded.message == "m" * 511 + "…"
    assert bounded.path == "p\\u0000"  # PostgreSQL stores no NUL in jsonb


def test_bounded_lists_combine_with_the_right_count() -> None:
    first = bounded_errors([FieldError("invalid_type", f"e{i}", f"f{i}") for i in range(25)])
    assert first[-1].message.startswith("and 5 more errors")
    combined = bounded_errors([*first, FieldError("duplicate_in_batch", "dup", "external_id")])
    assert len(combined) == 21
    assert combined[-1].message.startswith("and 6 more errors")
    assert bounded_errors(combined) == combined
    one_more = bounded_errors([FieldError("x", str(i)) for i in range(21)])
    assert one_more[-1].message.startswith("and 1 more error ")
    assert bounded_errors([]) == []


_FLAT_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),
    st.text(max_size=8),
    st.text(alphabet='ab\x00\x01"\\', max_size=4),
    st.integers(min_value=1, max_value=3_000).map(lambda n: "\x01" * n),
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _FLAT_VALUES, max_size=8))
def test_flat_metadata_taken_at_a_glance_is_exactly_what_the_full_check_takes(metadata: dict[str, Any]) -> None:
    """Flat metadata that looks plainly valid skips the full walk; the full walk would have kept it unchanged."""
    walk = _MetadataWalk()
    checked = walk.run(metadata)
    valid = not walk.problems and len(orjson.dumps(checked)) <= MAX_METADATA_BYTES
    if _plainly_valid(metadata):
        assert valid
        assert checked == metadata
    if valid:
        assert check_metadata(metadata) == checked
    else:
        with pytest.raises(PydanticCustomError):
            check_metadata(metadata)
