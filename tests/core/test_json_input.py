"""The nesting guard of a streamed JSON body: it follows the document's depth exactly, however the reads cut it."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.json_input import DepthGuard, JsonSyntaxError, ValueTooLarge

# Text that looks like structure: brackets, quotes and backslashes inside strings must not count.
_TRICKY = st.text(alphabet='ab{}[]"\\', max_size=6)
_DOCUMENTS = st.recursive(
    st.none() | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY, inner, max_size=3),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def _read_through(guard: DepthGuard, sizes: list[int]) -> type[Exception] | None:
    """Read the document to its end, in reads of `sizes` (in turn); the kind of error that stopped it, if one did."""
    try:
        for size in sizes * 10_000:
            if not guard.read(size):
                return None
    except (JsonSyntaxError, ValueTooLarge) as exc:
        return type(exc)
    raise AssertionError("the document was not read to its end")


@settings(max_examples=400, deadline=None)
@given(_DOCUMENTS, st.lists(st.integers(1, 9), min_size=1, max_size=5), st.integers(1, 8))
def test_the_guard_refuses_a_document_exactly_when_it_nests_past_its_limit(
    document: Any, sizes: list[int], limit: int
) -> None:
    text = json.dumps(document).encode()
    refused = _read_through(DepthGuard(io.BytesIO(text), limit=limit), sizes) is JsonSyntaxError
    assert refused == (_depth(document) > limit)


@settings(max_examples=400, deadline=None)
@given(st.lists(_DOCUMENTS, max_size=6), st.lists(st.integers(1, 9), min_size=1, max_size=5), st.integers(8, 80))
def test_the_guard_refuses_a_value_of_the_list_when_it_runs_past_its_bytes(
    elements: list[Any], sizes: list[int], limit: int
) -> None:
    """A batch's record (a value in the envelope's list) is refused once it has run past `element_bytes`, give or
    take one buffer read: counted from the buffer it starts in to the one before it ends. A string in the list
    never nests, so it is never counted."""
    text = json.dumps({"records": elements}).encode()
    nested = [len(json.dumps(e)) for e in elements if isinstance(e, list | dict)]
    guard = DepthGuard(io.BytesIO(text), limit=64, element_depth=2, element_bytes=limit)
    refused = _read_through(guard, sizes) is ValueTooLarge
    if any(size > limit + max(sizes) for size in nested):
        assert refused
    elif all(size + max(sizes) <= limit for size in nested):
        assert not refused
