"""The nesting guard of a streamed JSON body: it follows the document's depth exactly, however the reads cut it."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.json_input import DepthGuard, JsonSyntaxError

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


def _read_all(guard: DepthGuard, sizes: list[int]) -> bool:
    try:
        for size in sizes * 1000:
            if not guard.read(size):
                return True
    except JsonSyntaxError:
        return False
    raise AssertionError("the document was not read to its end")


@settings(max_examples=400, deadline=None)
@given(_DOCUMENTS, st.lists(st.integers(1, 9), min_size=1, max_size=5), st.integers(1, 8))
def test_the_guard_refuses_a_document_exactly_when_it_nests_past_its_limit(
    document: Any, sizes: list[int], limit: int
) -> None:
    text = json.dumps(document).encode()
    assert _read_all(DepthGuard(io.BytesIO(text), limit=limit), sizes) == (_depth(document) <= limit)
