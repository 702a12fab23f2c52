"""Property: whatever metadata a sync accepts is readable back, equal to what validation produced (SPEC §7).

Generated metadata mixes what clients send and what breaks naive code: nesting past the 16 levels, integers past
64 bits, floats that are not finite, exact decimals (the API's parser yields `Decimal` for numbers a double would
change), NUL characters and any Unicode. Each value is checked twice: validated directly (never an exception, only
JSON-native values kept), and sent as JSON text through the API on PostgreSQL, where it is either refused with a
422 or stored such that the record's GET and the list both answer 200 with the same metadata.
"""

from __future__ import annotations

import itertools
import math
from decimal import Decimal
from typing import Any

import orjson
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core import json_input
from core.records.schemas import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, BusinessPayload, parse_record

CODES = {"metadata_too_deep", "invalid_number", "metadata_too_large", "nul_character", "too_many_errors"}
_ids = itertools.count()

# Any character a JSON string in UTF-8 can carry (no lone surrogate), NUL aside.
TEXT = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
# What a client means to send, and what sync must refuse (or take without harm): the latter one draw in five.
good_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**300), max_value=10**300),
    st.sampled_from([Decimal("1e-400"), Decimal("0E-10"), Decimal("-0"), Decimal("0.1"), 2**63 - 1, -(2**63)]),
    st.text(alphabet=TEXT, max_size=12),
    st.integers(min_value=1, max_value=16_000).map(lambda n: "x" * n),
)
bad_leaves = st.one_of(
    st.integers(min_value=2**63, max_value=2**200) | st.integers(min_value=-(2**200), max_value=-(2**63) - 1),
    st.sampled_from([math.inf, -math.inf, math.nan, Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity")]),
    st.sampled_from([Decimal("1e400"), Decimal("-1e309"), Decimal("1.7976931348623159e308")]),
    st.text(alphabet=st.sampled_from(["a", "\u0000", "é", "\u2028", "😀", '"', "\\"]), min_size=1, max_size=6),
    st.just("y" * 17_000),
)
leaves = st.one_of(good_leaves, good_leaves, good_leaves, good_leaves, bad_leaves)
good_keys = st.text(alphabet=TEXT, max_size=8) | st.sampled_from(["ключ", "."])
keys = good_keys | st.sampled_from(["k\u0000", "\u0000"])


def _containers(inner: st.SearchStrategy[Any], names: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4)


def _nest(levels: int, leaf: Any) -> Any:
    for n in range(levels):
        leaf = [leaf] if n % 2 else {"n": leaf}
    return leaf


# Half the examples are metadata a client means to send (all of it must be stored and read back); the other half
# mixes in what must be refused, nesting up to 18 levels deep included.
clean_values = st.recursive(good_leaves, lambda inner: _containers(inner, good_keys), max_leaves=12)
clean_deep = st.builds(_nest, st.integers(min_value=0, max_value=MAX_METADATA_DEPTH - 2), clean_values)
any_values = st.recursive(leaves, lambda inner: _containers(inner, keys), max_leaves=12)
any_deep = st.builds(_nest, st.integers(min_value=0, max_value=MAX_METADATA_DEPTH + 2), any_values)
metadata_values = st.dictionaries(good_keys, clean_values | clean_deep, max_size=5) | st.dictionaries(
    keys, any_values | any_deep, max_size=5
)


def to_json(value: Any) -> str:
    """JSON text for a generated value: a number JSON cannot write (inf, nan) as one beyond the double range, and a
    `Decimal` with an exponent, every digit kept: the API's parser yields a `Decimal` only for a number that is not
    an integer, as `Decimal("7")` is not the integer 7 to validation."""
    if value is None or isinstance(value, bool):
        return orjson.dumps(value).decode()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
        return (f"{value:E}" if isinstance(value, Decimal) else repr(value)) if finite else "-1e999"
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    return "{" + ", ".join(f"{to_json(k)}: {to_json(v)}" for k, v in value.items()) + "}"


def same_number_view(value: Any) -> Any:
    """A JSON value with its numbers as exact decimals, so values compare as JSON numbers: 1e18 sent as a float
    is the same number as the integer 1000000000000000000 PostgreSQL gives back."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list):
        return [same_number_view(v) for v in value]
    return {k: same_number_view(v) for k, v in value.items()}


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def only_json_native(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and only_json_native(v) for k, v in value.items())
    if isinstance(value, list):
        return all(only_json_native(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    if isinstance(value, str):
        return "\u0000" not in value
    return value is None or isinstance(value, bool)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(metadata=metadata_values)
def test_accepted_metadata_is_always_readable_and_equal_to_what_validation_produced(
    client: TestClient, metadata: dict[str, Any]
) -> None:
    external_id = f"prop-{next(_ids)}"
    direct = parse_record("businesses", {"external_id": external_id, "name": "N", "metadata": metadata})
    if isinstance(direct, list):
        assert direct
        assert {e.code for e in direct} <= CODES, direct
        assert len(direct) <= 21
    else:
        assert isinstance(direct, BusinessPayload)
        assert only_json_native(direct.metadata)
        assert depth(direct.metadata) <= MAX_METADATA_DEPTH
        assert len(orjson.dumps(direct.metadata)) <= MAX_METADATA_BYTES

    body = to_json({"external_id": external_id, "name": "N", "metadata": metadata}).encode()
    # What validation makes of the body as the API parses it (its numbers exact, as the API reads them).
    expected = parse_record("businesses", json_input.loads(body))
    assert isinstance(expected, list) == isinstance(direct, list), (direct, expected)

    response = client.post("/sync/businesses", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    event("refused" if isinstance(expected, list) else "stored")
    if isinstance(expected, list):
        event("first error: " + expected[0].code)
        assert response.status_code == 422, response.text
        assert {e["code"] for e in response.json()["errors"]} == {e.code for e in expected}
        return
    assert response.status_code == 200, response.text
    want = same_number_view(expected.metadata)
    if not isinstance(direct, list):
        assert same_number_view(direct.metadata) == want
    stored = response.json()
    assert same_number_view(stored["metadata"]) == want
    read = client.get(f"/businesses/{stored['id']}")
    assert read.status_code == 200, read.text
    assert same_number_view(read.json()["metadata"]) == want
    listed = client.get("/businesses", params={"external_id": external_id})
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["data"]
    assert same_number_view(item["metadata"]) == want
    assert client.get("/businesses", params={"limit": 1000}).status_code == 200
