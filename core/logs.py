"""Structured logs: one JSON object per line, carrying the request, partner, job and console operator in context."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
partner_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("partner_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
# The username of the operator signed in to the console (SPEC §10): every console action is logged with it.
operator: contextvars.ContextVar[str | None] = contextvars.ContextVar("operator", default=None)

_CONTEXT = {"request_id": request_id, "partner_id": partner_id, "job_id": job_id, "operator": operator}


@contextmanager
def bound(**values: str | None) -> Iterator[None]:
    """Put `request_id`, `partner_id`, `job_id` and/or `operator` in the log context for the block, then restore it."""
    tokens = [(_CONTEXT[name], _CONTEXT[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with its context and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _CONTEXT.items():
            value = var.get()
            if value is not None:
                event[name] = value
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


def configure(level: str = "INFO", json: bool = True) -> None:
    """Send every log line to stderr, as JSON unless `json` is false."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
