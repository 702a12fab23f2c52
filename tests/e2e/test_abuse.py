"""One partner's slow, stalled or overwhelming requests cost the others nothing (SPEC §7), through real `pfsync api`
processes: uploads hold no database connection while their bodies arrive and are capped per partner across
processes; a stalled body is cut off; an exhausted pool answers 503 at once, and /healthz never waits."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from tests.conftest import DATABASE_URL, PartnerKey, make_partner
from tests.e2e.conftest import Process, api_process

pytestmark = pytest.mark.usefixtures("worker")


def _connections_in_transaction() -> int:
    """Connections of the API processes that sit in a transaction (the test's own aside)."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'pfsync' AND state LIKE 'idle in transaction%%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


class SlowUpload:
    """A batch upload over a raw socket: its headers and the start of its body now, the rest on `finish`."""

    def __init__(self, url: str, key: PartnerKey, records: int = 50) -> None:
        self.body = b"".join(
            orjson.dumps({"external_id": f"slow-{i}-{id(self)}", "name": "Slow"}) + b"\n" for i in range(records)
        )
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        auth = base64.b64encode(f"{key.key_id}:{key.secret}".encode())
        head = (
            b"POST /sync/businesses/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Authorization: Basic " + auth + b"\r\nContent-Length: " + str(len(self.body)).encode() + b"\r\n\r\n"
        )
        self.sock.sendall(head + self.body[:100])

    def finish(self) -> tuple[int, bytes]:
        """Send the rest of the body; the answer's status and body."""
        self.sock.sendall(self.body[100:])
        return self.answer()

    def answer(self) -> tuple[int, bytes]:
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        self.sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture(scope="module")
def capped_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two API processes (`--workers 2`) allowing 2 concurrent uploads per partner and 2 s of body stall."""
    process, url = api_process(
        tmp_path_factory.mktemp("abuse"),
        "abuse-api",
        "--workers",
        "2",
        PFSYNC_MAX_CONCURRENT_UPLOADS_PER_PARTNER="2",
        PFSYNC_BODY_IDLE_TIMEOUT_SECONDS="2",
    )
    yield url
    process.stop()


def test_slow_uploads_hold_no_connection_and_are_capped_per_partner(capped_api: str) -> None:
    hostile, bystander = make_partner("slow uploader"), make_partner("bystander")
    slow = [SlowUpload(capped_api, hostile) for _ in range(2)]
    time.sleep(0.5)  # both are reading their bodies now
    try:
        assert _connections_in_transaction() == 0
        with httpx.Client(base_url=capped_api, auth=hostile.auth, timeout=10) as client:
            # A third upload, on whichever process: refused before its body is read.
            for _ in range(4):
                refused = client.post(
                    "/sync/businesses/batch", json={"businesses": [{"external_id": "x", "name": "x"}]}
                )
                assert refused.status_code == 429, refused.text
                assert refused.json()["code"] == "too_many_concurrent_uploads"
                assert int(refused.headers["Retry-After"]) >= 1
            # The same partner's single syncs are not uploads: they go on.
            assert client.post("/sync/businesses", json={"external_id": "s", "name": "S"}).status_code == 200
        with httpx.Client(base_url=capped_api, auth=bystander.auth, timeout=10) as client:
            started = time.monotonic()
            answer = client.post("/sync/businesses/batch", json={"businesses": [{"external_id": "b", "name": "B"}]})
            assert answer.status_code == 202, answer.text
            assert client.post("/sync/businesses", json={"external_id": "b1", "name": "B"}).status_code == 200
            assert time.monotonic() - started < 2
    finally:
        statuses = [upload.finish()[0] for upload in slow]
    assert statuses == [202, 202]
    with httpx.Client(base_url=capped_api, auth=hostile.auth, timeout=10) as client:  # the slots are free again
        answer = client.post("/sync/businesses/batch", json={"businesses": [{"external_id": "y", "name": "Y"}]})
        assert answer.status_code == 202, answer.text


def test_a_stalled_body_is_cut_off_with_408_and_frees_its_slot(capped_api: str) -> None:
    hostile = make_partner("staller")
    stalled = [SlowUpload(capped_api, hostile) for _ in range(2)]
    status, body = stalled[0].answer()  # sends nothing more: the server gives up after 2 s
    assert status == 408
    assert orjson.loads(body)["code"] == "body_timeout"
    stalled[1].answer()
    with httpx.Client(base_url=capped_api, auth=hostile.auth, timeout=10) as client:
        answer = client.post("/sync/businesses/batch", json={"businesses": [{"external_id": "z", "name": "Z"}]})
        assert answer.status_code == 202, answer.text


def test_an_exhausted_pool_answers_503_at_once_and_healthz_never_waits(tmp_path: Path) -> None:
    process: Process
    process, url = api_process(
        tmp_path, "small-pool-api", "--workers", "1", PFSYNC_DB_POOL_SIZE="1", PFSYNC_DB_POOL_TIMEOUT_SECONDS="1"
    )
    partner = make_partner("pool")
    answers: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=url, auth=partner.auth, timeout=30) as client:
            assert client.post("/sync/businesses", json={"external_id": "warm", "name": "W"}).status_code == 200
        # Every write to businesses waits behind this lock, each holding one of the pool's two connections.
        with psycopg.connect(DATABASE_URL) as lock:
            lock.execute("LOCK TABLE businesses IN ACCESS EXCLUSIVE MODE")

            def sync(n: int) -> None:
                with httpx.Client(base_url=url, auth=partner.auth, timeout=30) as client:
                    answers.append(client.post("/sync/businesses", json={"external_id": f"p{n}", "name": "P"}))

            threads = [threading.Thread(target=sync, args=(n,)) for n in range(6)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            time.sleep(0.3)
            health = httpx.get(url + "/healthz", timeout=5)
            assert health.status_code == 200
            assert health.elapsed.total_seconds() < 0.5
            while len(answers) < 4 and time.monotonic() - started < 10:
                time.sleep(0.05)
            refused = [a for a in answers if a.status_code == 503]
            assert len(refused) == 4, [(a.status_code, a.text) for a in answers]
            assert time.monotonic() - started < 5
            for answer in refused:
                assert answer.json()["code"] == "service_unavailable"
                assert int(answer.headers["Retry-After"]) >= 1
            lock.rollback()
        for thread in threads:
            thread.join(30)
        assert sorted(a.status_code for a in answers) == [200, 200, 503, 503, 503, 503]
    finally:
        process.stop()
    assert "Traceback" not in process.log()
