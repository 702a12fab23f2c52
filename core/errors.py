"""Domain errors. Each is mapped once to an HTTP problem (api/problems.py) and once to a record outcome."""

from __future__ import annotations

import re
from collections.abc import Iterable
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


# SPEC §7: every error list is bounded. A record carries at most this many errors, then one `too_many_errors`.
MAX_RECORD_ERRORS = 20
MAX_ERROR_PATH = 256
MAX_ERROR_MESSAGE = 512
TOO_MANY_ERRORS = "too_many_errors"
_MORE = re.compile(r"and (\d+) more error")


def _cut(text: str, limit: int) -> str:
    """`text` at most `limit` characters long (marked with an ellipsis where cut), and without NUL characters:
    a path or message can quote what the client sent, and PostgreSQL stores no NUL in text or jsonb."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unfit(path: str) -> bool:
    return len(path) > MAX_ERROR_PATH or "\x00" in path


def _more_than_shown(error: FieldError) -> int:
    """How many errors a `too_many_errors` entry stands for (it names the count in its message)."""
    found = _MORE.search(error.message)
    return int(found.group(1)) if found else 1


def bounded_errors(errors: Iterable[FieldError], more: int = 0) -> list[FieldError]:
    """A record's errors as reported: the first `MAX_RECORD_ERRORS`, each message and path cut to size, then one
    `too_many_errors` naming how many more there were (`more` of them already left out by the caller).

    A `too_many_errors` entry among `errors` (lists already bounded, combined) counts for the errors it stands for,
    so bounding twice, or bounding lists put together, reports the right number.
    """
    shown: list[FieldError] = []
    for error in errors:
        if error.code == TOO_MANY_ERRORS:
            more += _more_than_shown(error)
        elif len(shown) < MAX_RECORD_ERRORS:
            message, path = error.message, error.path
            if len(message) > MAX_ERROR_MESSAGE or "\x00" in message or (path is not None and _unfit(path)):
                error = FieldError(error.code, _cut(message, MAX_ERROR_MESSAGE), path and _cut(path, MAX_ERROR_PATH))
            shown.append(error)
        else:
            more += 1
    if more:
        noun = "error" if more == 1 else "errors"
        shown.append(
            FieldError(TOO_MANY_ERRORS, f"and {more} more {noun} (a record reports at most {MAX_RECORD_ERRORS})", None)
        )
    return shown
