"""Domain errors. Each is mapped once to an HTTP problem (api/problems.py) and once to a record outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class FieldError:
    """One thing wrong with one record: a stable code, a sentence, and the field it concerns (or None)."""

    code: str
    message: str
    path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "path": self.path}


@dataclass
class DomainError(Exception):
    """An error of a whole request; `status` is the HTTP status it answers with."""

    code: str
    message: str
    status: int = 400
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def not_found(what: str) -> DomainError:
    return DomainError("not_found", f"No such {what}.", 404)


# Record-level error codes with the HTTP status a single sync answers them with.
RECORD_ERROR_STATUS: dict[str, int] = {
    "not_found": 404,
    "external_id_conflict": 409,
    "email_address_taken": 409,
    "missing_identifier": 422,
}
