"""Shared by the hostile-input and security tests: every route of the app, and record values that must fail."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from api.app import app

_PARAM = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    def url(self, ids: dict[str, str]) -> str:
        unknown = [p for p in self.params if p not in ids]
        assert not unknown, f"{self.method} {self.path}: give this test an id of partner A for {unknown}"
        return _PARAM.sub(lambda m: ids[m.group(1)], self.path)


def _walk(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:  # FastAPI's included router: its routes under its prefix
            context = getattr(route, "include_context", None)
            yield from _walk(included.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif hasattr(route, "path"):
            yield prefix + route.path, set(getattr(route, "methods", None) or ())


CONSOLE = "/console"


def _endpoints(console: bool) -> list[Endpoint]:
    found = {
        Endpoint(method, path)
        for path, methods in _walk(list(app.routes))
        for method in methods - {"HEAD"}
        if (path == CONSOLE or path.startswith(CONSOLE + "/")) == console
    }
    return sorted(found, key=lambda e: (e.path, e.method))


def endpoints() -> list[Endpoint]:
    """Every (method, path) of the partner API, HEAD aside (it mirrors GET). The operator console under /console
    answers people, not partners (HTML pages, a session cookie): `console_endpoints`, tested in tests/console."""
    return _endpoints(console=False)


def console_endpoints() -> list[Endpoint]:
    """Every (method, path) of the operator console, HEAD aside."""
    return _endpoints(console=True)


BAD_RECORDS: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("external_id as a number", {"external_id": 7, "full_name": "x"}, "invalid_type", "external_id"),
    ("external_id as an object", {"external_id": {"a": 1}}, "invalid_type", "external_id"),
    ("external_id empty", {"external_id": ""}, "too_short", "external_id"),
    ("external_id too long", {"external_id": "x" * 256}, "too_long", "external_id"),
    ("external_id with NUL", {"external_id": "a\u0000b"}, "nul_character", "external_id"),
    ("id as a list", {"id": ["cus_1"], "external_id": "x"}, "invalid_type", "id"),
    ("full_name as a bool", {"external_id": "x", "full_name": True}, "invalid_type", "full_name"),
    ("full_name too long", {"external_id": "x", "full_name": "é" * 256}, "too_long", "full_name"),
    ("full_name with NUL", {"external_id": "x", "full_name": "\u0000"}, "nul_character", "full_name"),
    ("email invalid", {"external_id": "x", "email_address": "nobody"}, "invalid_email", "email_address"),
    ("email too long", {"external_id": "x", "email_address": "a" * 250 + "@b.cd"}, "invalid_email", "email_address"),
    ("email with NUL", {"external_id": "x", "email_address": "a\u0000@b.cd"}, "invalid_email", "email_address"),
    ("email as a number", {"external_id": "x", "email_address": 5}, "invalid_type", "email_address"),
    ("phone with letters", {"external_id": "x", "phone_number": "call me"}, "invalid_phone", "phone_number"),
    ("phone too short", {"external_id": "x", "phone_number": "12"}, "invalid_phone", "phone_number"),
    ("phone too long", {"external_id": "x", "phone_number": "1" * 33}, "invalid_phone", "phone_number"),
    ("metadata as a list", {"external_id": "x", "metadata": [1]}, "invalid_type", "metadata"),
    ("metadata as a string", {"external_id": "x", "metadata": "{}"}, "invalid_type", "metadata"),
    ("metadata too large", {"external_id": "x", "metadata": {"k": "v" * 17000}}, "metadata_too_large", "metadata"),
    ("metadata with NUL", {"external_id": "x", "metadata": {"k": ["\u0000"]}}, "nul_character", "metadata.k.0"),
    ("NUL in a metadata key", {"external_id": "x", "metadata": {"k\u0000": 1}}, "nul_character", "metadata.k\\u0000"),
    (
        "metadata nested too deep",
        {"external_id": "x", "metadata": {"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}},
        "metadata_too_deep",
        "metadata.a" + ".0" * 15,
    ),
    (
        "integer beyond 64 bits in metadata",
        {"external_id": "x", "metadata": {"n": 2**63}},
        "invalid_number",
        "metadata.n",
    ),
    ("unknown field", {"external_id": "x", "nmae": "typo"}, "unknown_field", "nmae"),
    ("no identifier", {"full_name": "x"}, "missing_identifier", None),
]
