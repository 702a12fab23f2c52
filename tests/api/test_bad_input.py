"""Hostile input gets a 4xx problem, never a 5xx, on every endpoint that takes a body, legacy ones included.

The in-process tests send garbage to every POST/PUT route found in `api.app.app.routes`; the last ones talk raw
HTTP to a real `pfsync api` process: malformed framing, and bodies over the limit refused while they stream in.
"""

from __future__ import annotations

import base64
import contextlib
import re
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import app
from tests.conftest import PartnerKey, make_partner
from tests.e2e.conftest import api_process
from tests.hostile import BAD_RECORDS, Endpoint, endpoints

# Routes whose body is not read (a cancel takes none).
NO_BODY = {("POST", "/jobs/{job_id}/cancel")}
JSON = {"Content-Type": "application/json"}


def body_endpoints() -> list[Endpoint]:
    found = [e for e in endpoints() if e.method in ("POST", "PUT", "PATCH") and (e.method, e.path) not in NO_BODY]
    assert len(found) >= 11, found
    return found


@pytest.fixture(scope="module")
def victim() -> Iterator[dict[str, Any]]:
    """A partner with a business, a customer and a job, so every path leads to an object and the body is read."""
    key = make_partner("bad input")
    with TestClient(app, raise_server_exceptions=False) as client:
        client.auth = key.auth
        business = client.post("/sync/businesses", json={"external_id": "bad", "name": "Bad"}).json()
        customer = client.post(f"/sync/businesses/{business['id']}/customers", json={"external_id": "c"}).json()
        job = client.post(
            f"/sync/businesses/{business['id']}/customers/batch", json={"customers": [{"external_id": "j"}]}
        ).json()
        yield {
            "client": client,
            "key": key,
            "ids": {"business_id": business["id"], "customer_id": customer["id"], "job_id": job["id"]},
        }


def assert_problem(response: Any, *statuses: int) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    problem: dict[str, Any] = response.json()
    assert problem["status"] == response.status_code
    assert problem["code"]
    assert problem["detail"]
    return problem


GARBAGE: list[tuple[str, bytes, tuple[int, ...]]] = [
    ("empty body", b"", (400, 422)),
    ("only whitespace", b" \n\t ", (400, 422)),
    ("invalid UTF-8", b'{"external_id": "x", "name": "\xff\xfe\xfd"}', (400,)),
    ("overlong UTF-8 encoding", b'{"external_id": "\xc0\xaf", "name": "x"}', (400,)),
    ("lone high surrogate", b'{"external_id": "x", "name": "\\ud800"}', (400,)),
    ("lone low surrogate", b'{"external_id": "x", "name": "x\\udc00y"}', (400,)),
    ("byte order mark", b'\xef\xbb\xbf{"external_id": "x", "name": "x"}', (400,)),
    ("deep nesting", b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}", (400,)),
    ("deep object nesting", b'{"a": ' * 3000 + b"1" + b"}" * 3000, (400,)),
    # A validation error (invalid_number) on the single endpoints, not a parse error: SPEC §7.
    ("number beyond a double", b'{"external_id": "x", "name": "x", "metadata": {"n": 1e999}}', (422,)),
    ("NaN", b'{"external_id": "x", "name": NaN}', (400,)),
    ("truncated document", b'{"external_id": "x", "name": "', (400,)),
    ("trailing garbage", b'{"external_id": "x", "name": "x"} {"again": 1}', (400,)),
    ("a bare string", b'"hello"', (400, 422)),
    ("an array", b"[1, 2, 3]", (400, 422)),
    ("null", b"null", (400, 422)),
    ("a huge integer", b"123456789012345678901234567890123456789", (400, 422)),
]


@pytest.mark.parametrize(("label", "body", "statuses"), GARBAGE, ids=[g[0] for g in GARBAGE])
def test_garbage_bodies_are_4xx_problems_on_every_endpoint(
    victim: dict[str, Any], label: str, body: bytes, statuses: tuple[int, ...]
) -> None:
    client: TestClient = victim["client"]
    for endpoint in body_endpoints():
        response = client.request(endpoint.method, endpoint.url(victim["ids"]), content=body, headers=JSON)
        if response.status_code < 400 and label in ("a huge integer",):
            continue
        problem = assert_problem(response, *statuses)
        if response.status_code == 400:
            assert problem["code"] == "malformed_body", (endpoint, problem)


def test_huge_numbers_in_records_are_record_errors_or_stored_exactly(victim: dict[str, Any]) -> None:
    client: TestClient = victim["client"]
    response = client.post("/sync/businesses", json={"external_id": 10**30, "name": "n"})
    assert_problem(response, 422)
    assert response.json()["errors"][0]["code"] == "invalid_type"
    big = b'{"external_id": "huge", "name": "n", "metadata": {"u64": 18446744073709551615, "big": 1e308}}'
    response = client.post("/sync/businesses", content=big, headers=JSON)
    problem = assert_problem(response, 422)
    assert [(e["code"], e["path"]) for e in problem["errors"]] == [("invalid_number", "metadata.u64")]
    exact = (
        b'{"external_id": "huge", "name": "n", "metadata": {"i64": -9223372036854775808, "big": 1e308, "tiny": 1e-300}}'
    )
    response = client.post("/sync/businesses", content=exact, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"i64": -(2**63), "big": 1e308, "tiny": 1e-300}


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
     "image/png", "application/octet-stream"],
)  # fmt: skip
def test_wrong_content_types_are_415_on_every_endpoint(victim: dict[str, Any], content_type: str) -> None:
    client: TestClient = victim["client"]
    body = orjson.dumps({"external_id": "x", "name": "x", "customers": [{"external_id": "x"}]})
    for endpoint in body_endpoints():
        if endpoint.path == "/webhook":
            continue  # its body is one small JSON object, judged by the webhook rules
        response = client.request(
            endpoint.method, endpoint.url(victim["ids"]), content=body, headers={"Content-Type": content_type}
        )
        problem = assert_problem(response, 415)
        assert problem["code"] == "unsupported_media_type"


@pytest.mark.parametrize("length", ["abc", "-5", "+5", " 5", "1e3", "5.0", "0x10", "\u0663", "99999999999999999999999"])
def test_bad_content_length_is_a_4xx_problem(victim: dict[str, Any], length: str) -> None:
    client: TestClient = victim["client"]
    for endpoint in body_endpoints():
        response = client.request(
            endpoint.method,
            endpoint.url(victim["ids"]),
            content=b'{"external_id": "x", "name": "x"}',
            headers={**JSON, "Content-Length": length.encode()},
        )
        problem = assert_problem(response, 400, 413)
        assert problem["code"] in ("malformed_body", "body_too_large")


def test_a_declared_length_over_the_limit_is_413_before_any_byte_is_read(victim: dict[str, Any]) -> None:
    client: TestClient = victim["client"]
    for endpoint in body_endpoints():
        response = client.request(
            endpoint.method,
            endpoint.url(victim["ids"]),
            content=b"{}",
            headers={**JSON, "Content-Length": str(200 * 1024 * 1024)},
        )
        problem = assert_problem(response, 413)
        assert problem["code"] == "body_too_large"
        assert re.search(r"\d+ bytes", problem["detail"])


def test_nul_characters_in_paths_and_queries_are_4xx(victim: dict[str, Any]) -> None:
    client: TestClient = victim["client"]
    ids = dict.fromkeys(victim["ids"], "x%00y")
    for endpoint in endpoints():
        if not endpoint.params:
            continue
        kwargs: dict[str, Any] = {"json": {"external_id": "x", "name": "x"}} if endpoint.method != "GET" else {}
        response = client.request(endpoint.method, endpoint.url(ids), **kwargs)
        assert_problem(response, 404)
    for url in ["/jobs?starting_after=%00", "/businesses?external_id=a%00", "/businesses?starting_after=%00"]:
        assert_problem(client.get(url), 422)
    business_id, job_id = victim["ids"]["business_id"], victim["ids"]["job_id"]
    for url in [f"/businesses/{business_id}/customers?email_address=%00", f"/jobs/{job_id}/results?starting_after=x"]:
        assert_problem(client.get(url), 422)


@pytest.mark.parametrize(("label", "record", "code", "path"), BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_a_bad_value_in_a_single_sync_is_a_422_naming_it(
    victim: dict[str, Any], label: str, record: dict[str, Any], code: str, path: str | None
) -> None:
    client: TestClient = victim["client"]
    response = client.post(f"/sync/businesses/{victim['ids']['business_id']}/customers", json=record)
    problem = assert_problem(response, 422)
    assert (code, path) in [(e["code"], e["path"]) for e in problem["errors"]], (label, problem)
    assert all(e["message"] for e in problem["errors"])


# --- Raw HTTP against a real API process ---------------------------------------------------------------------------

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory, victim: dict[str, Any]) -> Iterator[tuple[int, PartnerKey]]:
    """A `pfsync api` process on the test database with PFSYNC_MAX_BODY_BYTES of 1 MiB."""
    process, url = api_process(tmp_path_factory.mktemp("bad-input"), "bad-input-api", PFSYNC_MAX_BODY_BYTES=str(LIMIT))
    try:
        yield int(url.rsplit(":", 1)[1]), victim["key"]
    finally:
        process.stop()


def _raw(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; the status and body of the answer (0 if the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _auth(key: PartnerKey) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{key.key_id}:{key.secret}".encode()) + b"\r\n"


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: abc\r\n", b"Content-Length: -1\r\n", b"Content-Length: 5\r\nContent-Length: 6\r\n",
     b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n", b"Content-Length: 99999999999999999999\r\n"],
)  # fmt: skip
def test_malformed_framing_is_refused_with_a_4xx(live_api: tuple[int, PartnerKey], framing: bytes) -> None:
    port, key = live_api
    request = (
        b"POST /sync/businesses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + _auth(key)
        + framing
        + b"\r\nzz-not-a-chunk\r\n"
    )
    status, _ = _raw(port, request)
    assert 400 <= status < 500 or status == 0, status  # 0: the server hung up on a request it could not frame


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/sync/businesses/batch", "application/json"),
        ("/sync/businesses/batch", "application/x-ndjson"),
        ("/sync/businesses/{business_id}/customers/batch", "application/x-ndjson"),
        ("/businesses/{business_id}/customers/batch", "application/json"),
        ("/sync/businesses", "application/json"),
    ],
)
def test_a_body_over_the_limit_is_refused_while_it_streams_not_read_whole(
    live_api: tuple[int, PartnerKey], victim: dict[str, Any], path: str, content_type: str
) -> None:
    """A chunked body (no Content-Length to refuse up front) of 256 MiB against a 1 MiB limit: the 413 comes back
    while the client is still sending, after little more than the limit has left it."""
    port, key = live_api
    offered = 256 * 1024 * 1024
    record = b'{"external_id": "%d", "name": "padding padding padding padding padding padding"}'

    def body() -> Iterator[bytes]:
        if content_type == "application/json":
            yield b'10\r\n{"businesses": [\r\n'
        produced = 0
        n = 0
        while produced < offered:
            lines = [record % i for i in range(n, n + 1000)]
            n += 1000
            part = (b",".join(lines) + b",") if content_type == "application/json" else b"\n".join(lines) + b"\n"
            produced += len(part)
            yield b"%x\r\n%s\r\n" % (len(part), part)

    url = path.replace("{business_id}", victim["ids"]["business_id"]).encode()
    head = (
        b"POST " + url + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: " + content_type.encode() + b"\r\n" + _auth(key) + b"\r\n"
    )
    sent = 0
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        pending = b""
        parts = body()
        answered = False
        while time.monotonic() - started < 60:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                answered = True
                break
            if not writable:
                continue
            if not pending:
                pending = next(parts, b"")
                if not pending:
                    break
            try:
                count = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            pending = pending[count:]
            sent += count
        sock.setblocking(True)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
                    break
    assert answered, f"no answer after {sent} bytes"
    head_part, _, payload = data.partition(b"\r\n\r\n")
    assert head_part.split(b" ", 2)[1] == b"413", data[:300]
    assert b"problem+json" in head_part
    problem = orjson.loads(payload[payload.index(b"{") :] if b"{" in payload else payload)
    assert problem["code"] == "body_too_large"
    # The server stopped reading soon after the limit: the rest never left the client (socket buffers aside).
    assert sent < 24 * 1024 * 1024 < offered, sent
