"""Sync payloads: one validation pass per record, every error reported with a code and a path."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from core.errors import FieldError

MAX_METADATA_BYTES = 16 * 1024
_NO_NUL = r"^[^\x00]*$"
_EMAIL = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00.]+$"
_PHONE = r"^[0-9 +\-().]{3,32}$"
# `\u0000` in serialized JSON that is not itself an escaped backslash.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

Text255 = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_NO_NUL)]
Identifier = Annotated[str, StringConstraints(pattern=_NO_NUL)]
OptionalText255 = Annotated[str, StringConstraints(max_length=255, pattern=_NO_NUL)]
Email = Annotated[str, StringConstraints(max_length=254, pattern=_EMAIL)]
Phone = Annotated[str, StringConstraints(pattern=_PHONE)]


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata must serialize to at most 16 KiB and hold no NUL character (PostgreSQL cannot store it)."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:  # e.g. an integer beyond 64 bits
        raise PydanticCustomError(
            "invalid_type", "metadata holds a value JSON cannot carry: {error}", {"error": str(exc)}
        ) from exc
    if len(encoded) > MAX_METADATA_BYTES:
        raise PydanticCustomError(
            "metadata_too_large",
            "metadata serializes to {size} bytes; the limit is {limit}",
            {"size": len(encoded), "limit": MAX_METADATA_BYTES},
        )
    if b"\\u0000" in encoded and _JSON_NUL.search(encoded):
        raise PydanticCustomError("nul_character", "text may not contain the NUL character")
    return value


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


SYNC_WRITABLE = {
    "businesses": ("external_id", "name", "metadata"),
    "customers": ("external_id", "email_address", "phone_number", "full_name", "metadata"),
}

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
    elif kind in ("metadata_too_large", "nul_character"):
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
    """Every error of a pydantic validation, as our field errors (all of them, not only the first)."""
    return [_field_error(err, prefix) for err in exc.errors(include_url=False, include_input=False)]


PAYLOAD_MODELS: dict[str, type[BusinessPayload] | type[CustomerPayload]] = {
    "businesses": BusinessPayload,
    "customers": CustomerPayload,
}


def parse_record(kind: str, raw: bytes | dict[str, Any]) -> BusinessPayload | CustomerPayload | list[FieldError]:
    """Validate one record given as JSON bytes or as a parsed object; return the payload or its errors."""
    model = PAYLOAD_MODELS[kind]
    try:
        if isinstance(raw, bytes | bytearray | str):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as exc:
        return validation_errors(exc)
