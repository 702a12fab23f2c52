"""JSON responses serialized with orjson, and list envelopes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi.responses import Response


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


def list_body(data: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """The list envelope of SPEC §1; the cursor is the last item's id."""
    return {
        "object": "list",
        "data": list(data),
        "has_more": has_more,
        "next_cursor": data[-1]["id"] if has_more and data else None,
    }
