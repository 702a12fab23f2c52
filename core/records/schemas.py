"""Sync payloads: one validation pass per record, every error reported with a code and a path."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from core.errors import MAX_RECORD_ERRORS, FieldError, bounded_errors

MAX_METADATA_BYTES = 16 * 1024
# The metadata object is level 1; each object or array inside it adds one (SPEC §2).
MAX_METADATA_DEPTH = 16
_INT64 = (-(2**63), 2**63 - 1)
_NO_NUL = r"^[^\x00]*$"
_EMAIL = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00.]+$"
_PHONE = r"^[0-9 +\-().]{3,32}$"

Text255 = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_NO_NUL)]
Identifier = Annotated[str, StringConstraints(pattern=_NO_NUL)]
OptionalText255 = Annotated[str, StringConstraints(max_length=255, pattern=_NO_NUL)]
Email = Annotated[str, StringConstraints(max_length=254, pattern=_EMAIL)]
Phone = Annotated[str, StringConstraints(pattern=_PHONE)]

# Where a value sits inside the metadata: a linked list (parent, key) from the value up to the metadata object,
# turned into a dotted path only for a value at fault.
_Where = tuple["_Where", str | int] | None
# One problem found in a metadata value: its code, its message and where it is.
_Problem = tuple[str, str, _Where]


def _path(where: _Where) -> str:
    parts: list[str] = []
    while where is not None:
        where, key = where
        parts.append(str(key))
    return ".".join(reversed(parts))


class _MetadataWalk:
    """One pass over a metadata value, without recursion: the value with every `Decimal` as a float (so it holds
    only JSON-native types), and the problems found, the first few of them kept and the others counted."""

    def __init__(self) -> None:
        self.problems: list[_Problem] = []
        self.more = 0

    def problem(self, code: str, message: str, where: _Where) -> None:
        if len(self.problems) <= MAX_RECORD_ERRORS:
            self.problems.append((code, message, where))
        else:
            self.more += 1

    def leaf(self, value: Any, where: _Where) -> Any:
        """The value to keep for a scalar (None where it is at fault)."""
        if isinstance(value, str):
            if "\x00" in value:
                self.problem("nul_character", "text may not contain the NUL character", where)
                return None
            return value
        if value is None or value.__class__ is bool:
            return value
        if isinstance(value, int):
            if _INT64[0] <= value <= _INT64[1]:
                return value
            self.problem("invalid_number", "the integer is outside the signed 64-bit range", where)
        elif isinstance(value, float | Decimal):
            number = float(value) if not isinstance(value, Decimal) or value.is_finite() else math.inf
            if math.isfinite(number):
                return number
            self.problem("invalid_number", "the number is not a finite double", where)
        else:
            self.problem("invalid_type", "metadata may hold only JSON values", where)
        return None

    def run(self, value: dict[str, Any]) -> dict[str, Any]:
        root: dict[str, Any] = {}
        # Depth-first in document order: each entry is a container's remaining items, its copy (a list copy is made
        # at its length and filled by index), its level and where it is.
        stack: list[tuple[Iterator[tuple[Any, Any]], Any, int, _Where]] = [(iter(value.items()), root, 1, None)]
        while stack:
            items, copy, depth, where = stack[-1]
            keyed = isinstance(copy, dict)
            for key, item in items:
                if keyed and (key.__class__ is not str or "\x00" in key):
                    if isinstance(key, str):
                        self.problem("nul_character", "text may not contain the NUL character", (where, key))
                    else:
                        self.problem("invalid_type", "metadata keys must be strings", where)
                    continue
                cls = item.__class__
                # The common cases first, inline; anything else goes through `leaf` or is a container.
                if cls is str and "\x00" not in item:
                    copy[key] = item
                elif cls is int and _INT64[0] <= item <= _INT64[1]:
                    copy[key] = item
                elif cls is float and math.isfinite(item):
                    copy[key] = item
                elif isinstance(item, dict | list | tuple):
                    here: _Where = (where, key)
                    if depth >= MAX_METADATA_DEPTH:
                        self.problem(
                            "metadata_too_deep", f"metadata may nest at most {MAX_METADATA_DEPTH} levels deep", here
                        )
                        copy[key] = None
                        continue
                    if isinstance(item, dict):
                        child: Any = {}
                        entries: Iterator[tuple[Any, Any]] = iter(item.items())
                    else:
                        child = [None] * len(item)
                        entries = enumerate(item)
                    copy[key] = child
                    stack.append((entries, child, depth + 1, here))
                    break
                else:
                    copy[key] = self.leaf(item, (where, key))
            else:
                stack.pop()
        return root


def _plainly_valid(value: dict[str, Any]) -> bool:
    """Whether metadata is valid at a glance: flat, ASCII text without NUL, 64-bit integers, finite floats,
    booleans and nulls, and so short that it cannot serialize past the limit (no ASCII character takes more than 6
    bytes in JSON). Most metadata is; anything else is walked (`check_metadata`)."""
    size = 2
    for key, item in value.items():
        if key.__class__ is not str or not key.isascii() or "\x00" in key:
            return False
        cls = item.__class__
        if cls is str:
            if not item.isascii() or "\x00" in item:
                return False
            size += 6 * (len(key) + len(item)) + 6
        elif cls is int:
            if not _INT64[0] <= item <= _INT64[1]:
                return False
            size += 6 * len(key) + 24
        elif cls is float:
            if not math.isfinite(item):
                return False
            size += 6 * len(key) + 32
        elif item is None or cls is bool:
            size += 6 * len(key) + 12
        else:
            return False
    return size <= MAX_METADATA_BYTES


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata as validated (SPEC §2, §7): nested at most 16 levels, numbers that are 64-bit integers or finite
    doubles, no NUL character (PostgreSQL cannot store it), at most 16 KiB serialized. Returns the value with every
    `Decimal` as a float; raises one `metadata_invalid` error carrying every problem found, each with its path."""
    if _plainly_valid(value):
        return value
    walk = _MetadataWalk()
    checked = walk.run(value)
    try:
        encoded = orjson.dumps(checked)
    except TypeError as exc:  # e.g. a lone surrogate in a string
        walk.problem("invalid_type", f"metadata holds a value JSON cannot carry: {exc}", None)
    else:
        if len(encoded) > MAX_METADATA_BYTES:
            walk.problem(
                "metadata_too_large",
                f"metadata serializes to {len(encoded)} bytes; the limit is {MAX_METADATA_BYTES}",
                None,
            )
    if walk.problems:
        raise PydanticCustomError(
            "metadata_invalid",
            "metadata is invalid",
            {"problems": [(code, message, _path(where)) for code, message, where in walk.problems], "more": walk.more},
        )
    return checked


class _SyncPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier | None = None
    external_id: Text255 | None = None
    metadata: dict[str, Any] | None = None
    # Read-only fields an object read from the API carries: accepted and ignored.
    object: Any = None
    created_at: Any = None
    updated_at: Any = None

    _check_metadata = field_validator("metadata")(
        classmethod(lambda cls, v: check_metadata(v) if v is not None else v)  # noqa: ARG005
    )

    @property
    def sets_external_id(self) -> bool:
        """Whether `external_id` was in the payload (explicit null clears it; omitted keeps it)."""
        return "external_id" in self.model_fields_set


class BusinessPayload(_SyncPayload):
    """A business as a partner syncs it."""

    name: Text255


class CustomerPayload(_SyncPayload):
    """A customer as a partner syncs it."""

    email_address: Email | None = None
    phone_number: Phone | None = None
    full_name: OptionalText255 | None = None
    unsubscribed: Any = None
    business_id: Any = None


_MESSAGES = {
    "required": "this field is required",
    "unknown_field": "unknown field; see the API reference for the fields this resource has",
    "invalid_type": "{expected}",
    "too_short": "must not be empty",
    "too_long": "is too long (at most {max_length} characters)",
    "invalid_email": "is not a valid email address (at most 254 characters)",
    "invalid_phone": "must be 3 to 32 characters of digits, spaces and + - ( ) .",
    "nul_character": "text may not contain the NUL character",
}


def _field_error(err: Any, prefix: str) -> FieldError:
    kind: str = err["type"]
    loc = [str(part) for part in err["loc"]]
    path = prefix + ".".join(loc) if loc else (prefix.rstrip(".") or None)
    name = loc[0] if loc else ""
    ctx = err.get("ctx") or {}
    if kind == "missing":
        code = "required"
    elif kind == "extra_forbidden":
        code = "unknown_field"
    elif kind == "string_too_short":
        code = "too_short"
    elif kind == "string_too_long":
        code = "too_long"
    elif kind == "string_pattern_mismatch":
        if name == "email_address":
            code = "invalid_email"
        elif name == "phone_number":
            code = "invalid_phone"
        else:
            code = "nul_character"
    elif kind == "nul_character":
        return FieldError(kind, err["msg"], path)
    elif kind in ("json_invalid", "model_type", "model_attributes_type"):
        code = "malformed_record"
        return FieldError(code, "record is not a JSON object", path)
    else:
        code = "invalid_type"
        return FieldError(code, err["msg"].lower(), path)
    if name == "email_address" and code == "too_long":
        code = "invalid_email"
    message = _MESSAGES[code].format(max_length=ctx.get("max_length", 255), expected=err["msg"])
    return FieldError(code, message, path)


def validation_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Every error of a pydantic validation, as our field errors (all of them, not only the first), bounded as
    SPEC §7 says: at most `MAX_RECORD_ERRORS`, then one `too_many_errors` naming how many more there were."""
    errors: list[FieldError] = []
    more = 0
    for err in exc.errors(include_url=False, include_input=False):
        if err["type"] != "metadata_invalid":
            errors.append(_field_error(err, prefix))
            continue
        # One error of the metadata validator stands for every problem it found, each at its own path.
        base = prefix + ".".join(str(part) for part in err["loc"])
        ctx = err["ctx"]
        errors += [
            FieldError(code, message, f"{base}.{sub}" if sub else base) for code, message, sub in ctx["problems"]
        ]
        more += ctx["more"]
    return bounded_errors(errors, more)


PAYLOAD_MODELS: dict[str, type[BusinessPayload] | type[CustomerPayload]] = {
    "businesses": BusinessPayload,
    "customers": CustomerPayload,
}

# Fields an object read from the API carries that a sync accepts and ignores (so it can be sent back as it is).
READ_ONLY_FIELDS = frozenset({"object", "created_at", "updated_at", "unsubscribed", "business_id"})


def _writable(model: type[BaseModel]) -> tuple[str, ...]:
    names = [name for name in model.model_fields if name != "id" and name not in READ_ONLY_FIELDS]
    return tuple(sorted(names, key=lambda name: name == "metadata"))  # as declared, metadata last


# The one field table: the properties a sync writes, per kind, derived from the payload models. Every one missing
# from a payload is blanked (SPEC §3 rule 4); the columns written, compared and shown follow it.
WRITABLE: dict[str, tuple[str, ...]] = {kind: _writable(model) for kind, model in PAYLOAD_MODELS.items()}


def parse_record(kind: str, raw: bytes | dict[str, Any]) -> BusinessPayload | CustomerPayload | list[FieldError]:
    """Validate one record given as JSON bytes or as a parsed object; return the payload or its errors."""
    model = PAYLOAD_MODELS[kind]
    try:
        if isinstance(raw, bytes | bytearray | str):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as exc:
        return validation_errors(exc)
