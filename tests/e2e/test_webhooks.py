"""Completion webhooks end to end: configured through the API, sent by a real scheduler to a real local receiver."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.config import settings
from tests.e2e.conftest import Process, publishing_to, scheduler_process, wait_for, wait_job

# The scheduler of this module retries fast and gives up after 4 s, so every path runs in seconds.
SCHEDULER_ENV = {
    "PFSYNC_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "PFSYNC_WEBHOOK_RETRY_HOURS": str(4 / 3600),
    "PFSYNC_WEBHOOK_POLL_SECONDS": "0.05",
    "PFSYNC_WEBHOOK_TIMEOUT_SECONDS": "2",
}


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers the statuses planned for its path."""

    server: ThreadingHTTPServer
    plans: dict[str, list[int]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    received: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def plan(self, path: str, *statuses: int, delay: float = 0.0) -> str:
        """Answer `statuses` in turn to POSTs on `path` (then 200), each after `delay` s; returns the URL."""
        self.plans[path] = list(statuses)
        self.delays[path] = delay
        return self.origin + path

    def at(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.received if d.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            rec = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with rec.lock:
                rec.received.append(Delivery(self.path, dict(self.headers.items()), body, time.monotonic()))
                plan = rec.plans.get(self.path, [])
                status = plan.pop(0) if plan else 200
                delay = rec.delays.get(self.path, 0.0)
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def scheduler(log_dir: Path) -> Iterator[Process]:
    process = scheduler_process(log_dir, **SCHEDULER_ENV).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def plain_http_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The receiver is plain HTTP on loopback; production keeps PFSYNC_WEBHOOK_REQUIRE_HTTPS on.
    monkeypatch.setattr(settings, "webhook_require_https", False)


def configure(client: Any, url: str) -> str:
    response = client.put("/webhook", json={"url": url})
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


def verify(secret: str, delivery: Delivery, tolerance: float = 300) -> dict[str, Any]:
    """What a receiver does: check the signature over `<t>.<body>` and the timestamp, then parse the body."""
    fields = dict(part.split("=", 1) for part in delivery.headers["Pocketflows-Signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"])
    assert abs(time.time() - int(fields["t"])) < tolerance
    event: dict[str, Any] = orjson.loads(delivery.body)
    return event


def deliveries(client: Any, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/jobs/{job_id}/webhook_deliveries")
    assert response.status_code == 200
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def settled(client: Any, job_id: str) -> list[dict[str, Any]] | None:
    found = deliveries(client, job_id)
    return found if found and all(d["status"] != "pending" for d in found) else None


def test_the_webhook_is_configured_through_the_api(client: Any) -> None:
    assert client.get("/webhook").status_code == 404
    created = client.put("/webhook", json={"url": "http://127.0.0.1:9/hooks"})
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    assert client.get("/webhook").json() == {"object": "webhook", "url": "http://127.0.0.1:9/hooks"}
    moved = client.put("/webhook", json={"url": "http://127.0.0.1:9/v2"})
    assert moved.status_code == 200
    assert "secret" not in moved.json()
    rotated = client.put("/webhook", json={"url": "http://127.0.0.1:9/v2", "rotate_secret": True})
    assert rotated.json()["secret"] not in (None, secret)
    assert client.delete("/webhook").status_code == 204
    assert client.get("/webhook").status_code == 404
    assert client.delete("/webhook").status_code == 404


def test_bad_webhook_bodies_are_refused(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "webhook_require_https", True)
    plain = client.put("/webhook", json={"url": "http://hooks.example.com/x"})
    assert plain.status_code == 422
    assert plain.headers["content-type"] == "application/problem+json"
    assert plain.json()["code"] == "invalid_url"
    assert plain.json()["errors"][0]["path"] == "url"
    assert client.put("/webhook", json={"url": "https://hooks.example.com", "secret": "x"}).json()["code"] == (
        "unknown_field"
    )
    assert client.put("/webhook", json={}).status_code == 422
    assert client.get("/webhook").status_code == 404
    assert client.put("/webhook", json={"url": "https://hooks.example.com"}, auth=None).status_code == 401


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_finished_job_is_posted_signed_and_a_failing_receiver_is_retried(client: Any, receiver: Receiver) -> None:
    secret = configure(client, receiver.plan("/hooks/retry", 500))
    records = [{"external_id": f"wh-{i}", "name": f"Hooked {i}"} for i in range(3)] + [{"name": ""}]
    response = client.post("/sync/businesses/batch", json={"businesses": records}, headers={"X-Request-Id": "rq-1"})
    job = wait_job(client, response.json()["id"])
    [delivery] = wait_for(lambda: settled(client, job["id"]), timeout=20, what="the delivery to settle")

    first, second = receiver.at("/hooks/retry")
    assert second.received_at - first.received_at >= 0.15  # the backoff, not an immediate repeat
    for attempt in (first, second):
        event = verify(secret, attempt)
        assert attempt.body == first.body  # every attempt sends the same event
        assert attempt.headers["Content-Type"] == "application/json"
        assert attempt.headers["Pocketflows-Event"] == "sync_job.completed"
        assert attempt.headers["Pocketflows-Delivery"] == delivery["id"]
    assert event["id"] == delivery["id"]
    assert event["type"] == "sync_job.completed"
    assert event["data"] == job
    assert event["data"]["counts"]["created"] == 3
    assert event["data"]["counts"]["failed"] == 1

    assert delivery["status"] == "succeeded"
    assert delivery["url"] == receiver.origin + "/hooks/retry"
    assert delivery["attempts"] == 2
    assert (delivery["last_status_code"], delivery["last_error"]) == (200, None)
    assert delivery["delivered_at"] is not None
    assert delivery["next_attempt_at"] is None
    assert [(h["attempt"], h["status_code"], h["error"]) for h in delivery["history"]] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_batch_callback_url_overrides_the_webhook_path(client: Any, receiver: Receiver) -> None:
    secret = configure(client, receiver.plan("/hooks/default"))
    callback = receiver.plan("/hooks/job-7")
    response = client.post(
        "/sync/businesses/batch", params={"callback_url": callback}, json={"businesses": [{"name": "No id"}]}
    )
    assert response.status_code == 202
    job = wait_job(client, response.json()["id"])
    [delivery] = wait_for(lambda: settled(client, job["id"]), timeout=20, what="the delivery to settle")
    assert (delivery["url"], delivery["status"]) == (callback, "succeeded")
    [received] = receiver.at("/hooks/job-7")
    assert verify(secret, received)["data"]["id"] == job["id"]
    assert receiver.at("/hooks/default") == []

    elsewhere = client.post(
        "/sync/businesses/batch",
        params={"callback_url": "http://127.0.0.2:1/steal"},
        json={"businesses": [{"external_id": "x", "name": "X"}]},
    )
    assert elsewhere.status_code == 422
    assert elsewhere.json()["code"] == "callback_url_not_allowed"


def test_a_callback_url_needs_a_configured_webhook(client: Any, receiver: Receiver) -> None:
    response = client.post(
        "/sync/businesses/batch",
        params={"callback_url": receiver.origin + "/hooks/x"},
        json={"businesses": [{"external_id": "x", "name": "X"}]},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "webhook_not_configured"


@pytest.mark.usefixtures("scheduler")
def test_cancelling_a_job_notifies_the_webhook(client: Any, receiver: Receiver, idle_queue: str) -> None:
    secret = configure(client, receiver.plan("/hooks/cancel"))
    with publishing_to(idle_queue):  # no worker runs the job: it is still waiting when cancelled
        response = client.post("/sync/businesses/batch", json={"businesses": [{"external_id": "c", "name": "C"}]})
    job = client.post(f"/jobs/{response.json()['id']}/cancel").json()
    assert job["status"] == "cancelled"
    [delivery] = wait_for(lambda: settled(client, job["id"]), timeout=20, what="the delivery to settle")
    assert (delivery["event"], delivery["status"]) == ("sync_job.cancelled", "succeeded")
    event = verify(secret, receiver.at("/hooks/cancel")[0])
    assert event["type"] == "sync_job.cancelled"
    assert event["data"]["counts"]["cancelled"] == 1


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_receiver_that_keeps_failing_is_given_up_after_the_retry_window(client: Any, receiver: Receiver) -> None:
    configure(client, receiver.plan("/hooks/down", *[503] * 50))
    response = client.post("/sync/businesses/batch", json={"businesses": [{"external_id": "d", "name": "D"}]})
    job = wait_job(client, response.json()["id"])
    [delivery] = wait_for(lambda: settled(client, job["id"]), timeout=30, what="the delivery to give up")
    assert delivery["status"] == "failed"
    assert delivery["attempts"] >= 3
    assert delivery["attempts"] == len(delivery["history"]) == len(receiver.at("/hooks/down"))
    assert {h["status_code"] for h in delivery["history"]} == {503}
    assert delivery["last_error"] == "HTTP 503"
    assert delivery["delivered_at"] is None


def test_another_partner_cannot_see_a_jobs_deliveries(
    client: Any, other_partner: Any, receiver: Receiver, idle_queue: str
) -> None:
    configure(client, receiver.plan("/hooks/private"))
    with publishing_to(idle_queue):
        response = client.post("/sync/businesses/batch", json={"businesses": [{"external_id": "p", "name": "P"}]})
    job_id = response.json()["id"]
    assert client.get(f"/jobs/{job_id}/webhook_deliveries").json()["data"] == []
    assert client.get(f"/jobs/{job_id}/webhook_deliveries", auth=other_partner.auth).status_code == 404
    client.post(f"/jobs/{job_id}/cancel")


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_slow_receiver_does_not_hold_up_other_deliveries(client: Any, other_partner: Any, receiver: Receiver) -> None:
    configure(client, receiver.plan("/hooks/slow", delay=1.0))
    response = client.post("/sync/businesses/batch", json={"businesses": [{"external_id": "s", "name": "Slow"}]})
    wait_job(client, response.json()["id"])
    [slow] = wait_for(lambda: receiver.at("/hooks/slow"), timeout=20, what="the slow receiver to be called")
    other = client.put("/webhook", json={"url": receiver.plan("/hooks/fast")}, auth=other_partner.auth)
    assert other.status_code == 201
    response = client.post(
        "/sync/businesses/batch", json={"businesses": [{"external_id": "f", "name": "Fast"}]}, auth=other_partner.auth
    )
    [fast] = wait_for(lambda: receiver.at("/hooks/fast"), timeout=20, what="the fast receiver to be called")
    assert fast.received_at - slow.received_at < 1.0  # sent while the slow receiver still held its attempt


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_dry_runs_event_says_it_is_a_dry_run(client: Any, receiver: Receiver) -> None:
    secret = configure(client, receiver.plan("/hooks/dry"))
    response = client.post(
        "/sync/businesses/batch", params={"dry_run": "true"}, json={"businesses": [{"external_id": "d", "name": "D"}]}
    )
    job = wait_job(client, response.json()["id"])
    [delivery] = wait_for(lambda: settled(client, job["id"]), timeout=20, what="the delivery to settle")

    [attempt] = receiver.at("/hooks/dry")
    event = verify(secret, attempt)
    assert event["type"] == "sync_job.completed"
    assert event["data"] == job
    assert event["data"]["dry_run"] is True
    assert event["data"]["counts"]["created"] == 1
    assert delivery["status"] == "succeeded"
    assert client.get("/businesses", params={"external_id": "d"}).json()["data"] == []
