"""Structured logs: the request id travels from the API request into the job and the worker's log lines."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy.exc import OperationalError

from core.logs import JsonFormatter
from core.records import service as resources
from tests.conftest import PartnerKey
from tests.e2e.conftest import Process, wait_for, wait_job


class JsonLines(logging.Handler):
    """Formats each record when it is emitted (while its context is current), as the service's handler does."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(orjson.loads(self.format(record)))


@pytest.fixture
def api_log() -> Iterator[JsonLines]:
    handler = JsonLines()
    loggers = [logging.getLogger(name) for name in ("pfsync.access", "api.routes.batch")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def worker_events(worker: Process) -> list[dict[str, Any]]:
    """The JSON lines of the worker's log (Celery's own banner lines are not JSON)."""
    events = []
    for line in worker.log().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def test_the_worker_logs_each_chunk_with_its_job_and_originating_request(
    client: Any, partner: PartnerKey, worker: Process, api_log: JsonLines
) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    records = [{"external_id": f"log-{i}", "name": f"Logged {i}"} for i in range(3)]
    response = client.post("/sync/businesses/batch", json={"businesses": records}, headers={"X-Request-Id": request_id})
    assert response.status_code == 202
    assert response.headers["X-Request-Id"] == request_id
    job_id = response.json()["id"]
    assert wait_job(client, job_id)["status"] == "completed"

    def chunk_line() -> dict[str, Any] | None:
        lines = [e for e in worker_events(worker) if e.get("message") == "chunk processed"]
        return next((e for e in lines if e.get("job_id") == job_id), None)

    event = wait_for(chunk_line, timeout=10, what="the worker's chunk log line")
    assert event["request_id"] == request_id
    assert event["partner_id"] == partner.partner_id
    assert event["level"] == "info"
    assert event["records"] == 3
    assert event["outcome_created"] == 3
    assert event["duration_ms"] >= 0

    # On the API side, the lines of the request carry its id and the partner, and name the job it created.
    [accepted] = [e for e in api_log.events if e["message"] == "job accepted" and e.get("job_id") == job_id]
    assert (accepted["request_id"], accepted["partner_id"], accepted["records"]) == (
        request_id,
        partner.partner_id,
        3,
    )
    [access] = [e for e in api_log.events if e["message"] == "request" and e["request_id"] == request_id]
    assert access["partner_id"] == partner.partner_id
    assert (access["method"], access["route"], access["status"]) == ("POST", "/sync/businesses/batch", 202)


def test_a_request_without_an_id_gets_one(app_client: Any, api_log: JsonLines) -> None:
    response = app_client.get("/healthz")
    generated = response.headers["X-Request-Id"]
    assert len(generated) == 32
    assert [e["request_id"] for e in api_log.events if e["message"] == "request"] == [generated]


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (RuntimeError("boom"), 500, "unhandled error"),
        (OperationalError("SELECT 1", {}, Exception("connection refused")), 503, "database unavailable"),
    ],
    ids=["unhandled", "database down"],
)
def test_error_log_lines_carry_the_request_id(
    client: Any, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int, message: str
) -> None:
    # The 500 handler runs outside the middleware that holds the request's log context: it must name it anyway.
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(resources, "list_businesses", fail)
    handler = JsonLines()
    loggers = [logging.getLogger(name) for name in ("api.problems", "pfsync.access")]
    for logger in loggers:
        monkeypatch.setattr(logger, "level", logging.INFO)
        logger.addHandler(handler)
    try:
        for given in (f"req-{uuid.uuid4().hex}", None):
            handler.events.clear()
            response = client.get("/businesses", headers={"X-Request-Id": given} if given else {})
            assert response.status_code == status
            [access] = [e for e in handler.events if e["message"] == "request"]
            request_id = access["request_id"]
            assert request_id == (given or request_id)
            assert len(request_id) >= 32
            [event] = [e for e in handler.events if e["message"].startswith(message)]
            assert event["request_id"] == request_id, event
            assert event["level"] in ("error", "warning")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
