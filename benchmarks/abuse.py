"""The abuse drill: a hostile partner throws slow, stalled, deep, huge and malformed requests at the real processes
while an innocent partner keeps syncing, and the drill checks that nothing yields a 5xx and that the bystander
does not notice (SPEC §7).

    make abuse                     # or: python -m benchmarks.abuse [--slow-uploads 60] [--only PROBE ...] [--json-only]

It starts the processes exactly as the chaos drill does (benchmarks/chaos.py: a scratch PostgreSQL and Redis of
its own, `pfsync migrate`, `pfsync api`, two `pfsync worker`s, `pfsync scheduler`), creates two partners, A (the
hostile one) and B (the bystander), and while B syncs one business after another from a background thread (and
/healthz is polled from another), runs each probe as A:

- slow-uploads: 60 NDJSON batch uploads trickled at a few KB/s for ~20 s each, then completed: the first 4 are
  accepted (202), the rest refused at once (429 too_many_concurrent_uploads with Retry-After); no transaction
  stays open while the bodies arrive;
- deep-nesting: metadata nested 17, 252, 253 and 100 000 levels deep, single and in JSON and NDJSON batches: 4xx
  or per-record metadata_too_deep; the partner's list still reads;
- bad-credentials: NUL, non-UTF-8 and garbage in HTTP Basic credentials: 401;
- big-json: a 100 000-record, ~126 MiB batch as a JSON envelope and as NDJSON: 202, the API's RSS grows ≤ 100 MB;
- fat-records: a ~100 MiB JSON batch of 110 records of ~0.9 MiB (and two over 1 MiB): 202, the API's RSS grows
  ≤ 100 MB, every record fails alone (metadata_too_large, record_too_large), no worker process grows by 100 MB;
  then one record of ~100 MiB: 413 record_too_large as it is read, the API's RSS growing ≤ 100 MB;
- huge-ints: 2**70, 1e400 and -2**63-1 in metadata: invalid_number, single (422) and per record in a batch;
- unknown-fields: 10 000 unknown fields in one record: a small 422, and a bounded error list in a batch's results;
- repeated-invalid: two records sharing an invalid email: each is reported invalid_email and duplicate_in_batch;
- and the drill's own: a huge header, a 10 000-character Idempotency-Key, a Content-Length of 10 GB, odd bytes in
  path ids, a flood of 300 concurrent single syncs, and stalled uploads that never finish.

Each probe is one row: what was sent, the statuses seen, what was expected, B's latency meanwhile and a verdict. A
probe fails if it saw a status it did not expect, any 5xx, or if B's requests failed or B's p99 passed
--bystander-p99-ms. It prints the table and the same figures as one JSON line (also written to
benchmarks/results/abuse.json); process logs are kept in benchmarks/results/abuse-logs/. The exit status is 1 if
any probe failed or any 5xx was seen. Every target is 127.0.0.1; every request loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import select
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import psutil
import psycopg

from benchmarks.chaos import FINISHED, RESULTS, Child, Drill, say
from cli.embedded import ScratchRedis

LOGS = RESULTS / "abuse-logs"
MB = 1_000_000
NDJSON = "application/x-ndjson"
WAIT = {"Prefer": "wait=30"}
MIN_WINDOW = 1.0
PROBES = (
    "slow-uploads",
    "deep-nesting",
    "bad-credentials",
    "big-json",
    "fat-records",
    "huge-ints",
    "unknown-fields",
    "repeated-invalid",
    "huge-headers",
    "idempotency-key",
    "content-length",
    "path-ids",
    "flood",
    "stalled",
)


# --- raw HTTP, for what httpx would refuse to send or would send too well -------------------------------------------


@dataclass
class Answer:
    """A raw HTTP answer: its status (None: none came), headers (lower-case names), body, and why it ended."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else (self.error or "closed")

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


def problem_codes(body: Any) -> set[str]:
    """The machine codes of a problem body: its own and its field errors'."""
    if not isinstance(body, dict):
        return set()
    codes = {str(body["code"])} if "code" in body else set()
    errors = body.get("errors")
    if isinstance(errors, list):
        codes |= {str(e.get("code")) for e in errors if isinstance(e, dict)}
    return codes


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return out
        if size == 0:
            return out
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def parse_answer(data: bytes, error: str, seconds: float) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        return Answer(None, error=error or "closed", seconds=seconds)
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Answer(None, error="garbled", seconds=seconds)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    return Answer(status, headers, body, error, seconds)


def read_answer(sock: socket.socket, timeout: float, started: float | None = None) -> Answer:
    """Read one answer (the requests ask for Connection: close), waiting at most `timeout` seconds."""
    started = time.monotonic() if started is None else started
    deadline = time.monotonic() + timeout
    data = b""
    error = ""
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            length = _content_length(data[:head_end])
            if length is not None and len(data) - head_end - 4 >= length:
                break
            if length is None and data.endswith(b"0\r\n\r\n"):
                break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = "timeout"
            break
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            error = "timeout"
            break
        except OSError:
            error = "reset"
            break
        if not chunk:
            break
        data += chunk
    return parse_answer(data, error, time.monotonic() - started)


def head(method: str, path: bytes | str, headers: list[tuple[str, bytes | str]]) -> bytes:
    """A request line and headers, bytes as given (Host and Connection: close added)."""
    raw_path = path.encode() if isinstance(path, str) else path
    lines = [method.encode() + b" " + raw_path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in headers:
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def raw(port: int, data: bytes, timeout: float = 30) -> Answer:
    """Send `data` on a fresh connection and read the answer."""
    started = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as exc:
        return Answer(None, error=f"connect: {exc.__class__.__name__}")
    with sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer (and close) before it has read everything: the answer is what counts
        return read_answer(sock, timeout, started)


def basic(key_id: bytes | str, secret: bytes | str) -> bytes:
    user = key_id.encode() if isinstance(key_id, str) else key_id
    password = secret.encode() if isinstance(secret, str) else secret
    return b"Basic " + base64.b64encode(user + b":" + password)


# --- the bystander: latency samples, per probe -----------------------------------------------------------------------


@dataclass
class Sample:
    start: float
    end: float
    status: str


class Sampler(threading.Thread):
    """Calls `call` in a loop (a pause between calls) until stopped, recording each call's time and status."""

    def __init__(self, name: str, call: Callable[[int], int], pause: float) -> None:
        super().__init__(name=name, daemon=True)
        self.call = call
        self.pause = pause
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                status = str(self.call(i))
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.HTTPError as exc:
                status = exc.__class__.__name__
            with self.lock:
                self.samples.append(Sample(started, time.monotonic(), status))
            i += 1
            self.stopping.wait(self.pause)

    def stop(self) -> None:
        self.stopping.set()
        self.join(40)

    def during(self, start: float, end: float) -> dict[str, Any]:
        """Latency figures of the calls that overlapped [start, end]; a call still running counts as running."""
        with self.lock:
            seen = [s for s in self.samples if s.end >= start and s.start <= end]
        latencies = sorted((s.end - s.start) * 1000 for s in seen)
        statuses = Counter(s.status for s in seen)
        return {
            "requests": len(seen),
            "p50_ms": round(_percentile(latencies, 50), 1) if latencies else None,
            "p99_ms": round(_percentile(latencies, 99), 1) if latencies else None,
            "max_ms": round(latencies[-1], 1) if latencies else None,
            "statuses": dict(statuses),
            "failures": sum(n for status, n in statuses.items() if status != "200"),
        }


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


# --- probes ----------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    probe: str
    sent: str = ""
    expected: str = ""
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # the few figures the table shows
    bystander: dict[str, Any] = field(default_factory=dict)
    healthz: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    verdict: str = ""

    def see(self, label: str | int) -> None:
        self.statuses[str(label)] += 1

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    @property
    def five_xx(self) -> int:
        return sum(n for label, n in self.statuses.items() if label.startswith("5"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "sent": self.sent,
            "expected": self.expected,
            "statuses": dict(self.statuses),
            "bystander": self.bystander,
            "healthz": self.healthz,
            "notes": self.notes,
            "figures": self.figures,
            "problems": self.problems,
            "seconds": round(self.seconds, 1),
            "verdict": self.verdict,
        }


def nested(depth: int, kind: str = "object") -> bytes:
    """A JSON value `depth` levels deep (the value itself is level 1)."""
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def batch_bodies(records: list[bytes]) -> dict[str, tuple[bytes, str]]:
    """The same business records as a JSON envelope and as NDJSON, each with its Content-Type."""
    return {
        "json": (b'{"businesses":[' + b",".join(records) + b"]}", "application/json"),
        "ndjson": (b"\n".join(records) + b"\n", NDJSON),
    }


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants (uvicorn's supervisor and its workers)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += int(process.memory_info().rss)
    return total


class Watcher(threading.Thread):
    """Samples something every `interval` seconds until stopped, keeping the maximum."""

    def __init__(self, sample: Callable[[], int], interval: float) -> None:
        super().__init__(daemon=True)
        self.sample = sample
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self.sample())
                self.samples += 1
            self.stopping.wait(self.interval)

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.join(10)


class Abuse:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.drill = Drill(
            records=0,
            fault_interval=0,
            lease_seconds=30,
            chunk_size=1000,
            concurrency=2,
            logs=LOGS,
            broker=ScratchRedis(LOGS / "redis.log"),
            extra_env={
                "PFSYNC_QUEUE_NAME": "pfsync-abuse",
                "PFSYNC_BODY_IDLE_TIMEOUT_SECONDS": str(args.body_idle_timeout),
                # The drill measures the other limits (SPEC §7); the bystander's syncs would spend a budget.
                "PFSYNC_RATE_LIMIT_PER_SECOND": "0",
            },
        )
        self.rows: list[Row] = []
        self.port = 0
        self.a_auth: tuple[str, str] = ("", "")
        self.b_auth: tuple[str, str] = ("", "")
        self.home = ""  # a business of A's, for the customer probes
        self.started = time.monotonic()

    # -- plumbing

    @property
    def api(self) -> Child:
        return self.drill.children[0]

    def client(self, auth: tuple[str, str] | None, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.drill.api_url, auth=auth, timeout=timeout)

    def a_header(self) -> tuple[str, bytes]:
        return ("Authorization", basic(*self.a_auth))

    def long_transactions(self) -> int:
        """The service's connections whose transaction has been open for more than 5 s."""
        with psycopg.connect(self.drill.database_url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'pfsync' AND xact_start < now() - interval '5 seconds'"
            ).fetchone()
        return int(row[0]) if row else 0

    def results_of(self, client: httpx.Client, response: httpx.Response) -> list[dict[str, Any]]:
        """The per-record results of an accepted batch, once its job has finished (at most 60 s)."""
        body = response.json()
        job = body.get("job", body)
        deadline = time.monotonic() + 60
        while job["status"] not in FINISHED:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job['id']} did not finish in 60 s")
            time.sleep(0.3)
            job = client.get(f"/jobs/{job['id']}").json()
        results: list[dict[str, Any]] = []
        after = ""
        for _ in range(20):
            params: dict[str, str | int] = {"limit": 1000}
            if after:
                params["starting_after"] = after
            page = client.get(f"/jobs/{job['id']}/results", params=params)
            page.raise_for_status()
            data = page.json()
            results += data["data"]
            if not data["has_more"]:
                break
            after = data["next_cursor"] or str(results[-1]["index"])
        return results

    def start(self) -> None:
        say("starting a scratch PostgreSQL, Redis and the pfsync processes")
        self.drill.start()
        self.port = int(self.drill.api_url.rsplit(":", 1)[1])
        self.a_auth = self.drill.partner("abuse A (hostile)")
        self.b_auth = self.drill.partner("abuse B (bystander)")
        with self.client(self.a_auth) as a:
            answer = a.post("/sync/businesses", json={"external_id": "abuse-home", "name": "Home"})
            answer.raise_for_status()
            self.home = answer.json()["id"]
        self.bystander_client = self.client(self.b_auth, timeout=35)
        self.health_client = self.client(None, timeout=35)

        def sync_one(i: int) -> int:
            body = {"external_id": f"bystander-{i % 50}", "name": f"Bystander {i}"}
            return self.bystander_client.post("/sync/businesses", json=body).status_code

        self.bystander = Sampler("bystander", sync_one, 0.02)
        self.health = Sampler("healthz", lambda _i: self.health_client.get("/healthz").status_code, 0.1)
        self.bystander.start()
        self.health.start()

    def stop(self) -> None:
        for sampler in ("bystander", "health"):
            if hasattr(self, sampler):
                getattr(self, sampler).stop()
        for client in ("bystander_client", "health_client"):
            if hasattr(self, client):
                getattr(self, client).close()
        self.drill.stop()

    def run_probe(self, name: str, probe: Callable[[Row], None]) -> Row:
        row = Row(name)
        if time.monotonic() - self.started > self.args.budget:
            row.problems.append(f"skipped: the drill's {self.args.budget:g} s budget is spent")
        else:
            say(f"probe: {name}")
            start = time.monotonic()
            try:
                probe(row)
            except Exception as exc:  # a probe that breaks is a FAIL row, not the end of the drill
                row.problems.append(f"probe crashed: {exc.__class__.__name__}: {str(exc)[:200]}")
                say(traceback.format_exc(limit=3))
            # A probe's window lasts at least MIN_WINDOW seconds, so the bystander is measured after a quick one too.
            time.sleep(max(0.0, MIN_WINDOW - (time.monotonic() - start)))
            end = time.monotonic()
            time.sleep(0.05)  # let the bystander's call in flight land
            row.seconds = end - start
            row.bystander = self.bystander.during(start, end)
            row.healthz = self.health.during(start, end)
            if row.five_xx:
                row.problems.append(f"{row.five_xx} answers were 5xx")
            b = row.bystander
            if b["failures"]:
                row.problems.append(f"bystander saw {b['statuses']}")
            if b["p99_ms"] is not None and b["p99_ms"] > self.args.bystander_p99_ms:
                row.problems.append(f"bystander p99 {b['p99_ms']} ms > {self.args.bystander_p99_ms} ms")
            if not b["requests"]:
                row.problems.append("the bystander made no request meanwhile")
            if row.healthz["failures"]:
                row.problems.append(f"/healthz saw {row.healthz['statuses']}")
        row.verdict = "FAIL" if row.problems else "ok"
        for problem in row.problems:
            say(f"  {name}: {problem}")
        self.rows.append(row)
        return row

    # -- the probes

    def baseline(self, row: Row) -> None:
        row.sent = "nothing (B alone)"
        row.expected = "B unhindered"
        time.sleep(3)

    def slow_uploads(self, row: Row) -> None:
        count, seconds, rate = self.args.slow_uploads, self.args.slow_seconds, self.args.slow_rate
        limit = 4  # PFSYNC_MAX_CONCURRENT_UPLOADS_PER_PARTNER's default, which the drill keeps
        row.sent = f"{count} NDJSON batches at {rate / 1000:g} KB/s for {seconds:g} s each"
        row.expected = f"{limit}×202, {count - limit}×429 at once, no long transaction"
        answers: list[Answer | None] = [None] * count

        def upload(n: int) -> None:
            size = int(rate * seconds)
            lines: list[bytes] = []
            total = 0
            while total < size:
                line = orjson.dumps({"external_id": f"slow-{n}-{len(lines)}", "name": "Slow upload"}) + b"\n"
                lines.append(line)
                total += len(line)
            body = b"".join(lines)
            request = head(
                "POST",
                "/sync/businesses/batch",
                [self.a_header(), ("Content-Type", NDJSON), ("Content-Length", str(len(body)))],
            )
            started = time.monotonic()
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError as exc:
                answers[n] = Answer(None, error=f"connect: {exc.__class__.__name__}")
                return
            with sock:
                sent = 0
                try:
                    sock.sendall(request)
                    while sent < len(body) and time.monotonic() - started < seconds + 30:
                        if select.select([sock], [], [], 0)[0]:
                            break  # answered before the body is complete
                        due = min(len(body), int((time.monotonic() - started) / seconds * len(body)) + 1)
                        if due > sent:
                            sock.sendall(body[sent:due])
                            sent = due
                        time.sleep(0.2)
                except OSError:
                    pass
                answers[n] = read_answer(sock, 60, started)

        threads = [threading.Thread(target=upload, args=(n,), daemon=True) for n in range(count)]
        with Watcher(self.long_transactions, 0.5) as transactions:
            for thread in threads:
                thread.start()
                time.sleep(0.02)
            for thread in threads:
                thread.join(seconds + 100)
        done = [a for a in answers if a is not None]
        for answer in done:
            row.see(answer.label)
        refused = [a for a in done if a.status == 429]
        accepted = [a for a in done if a.status == 202]
        row.check(len(done) == count, f"{count - len(done)} uploads never ended")
        row.check(len(accepted) == limit, f"{len(accepted)} accepted, not {limit}")
        row.check(len(refused) == count - limit, f"{len(refused)} refused, not {count - limit}")
        row.check(all("retry-after" in a.headers for a in refused), "a 429 without Retry-After")
        row.check(
            all("too_many_concurrent_uploads" in problem_codes(a.json()) for a in refused),
            "a 429 without code too_many_concurrent_uploads",
        )
        slowest_refusal = max((a.seconds for a in refused), default=0.0)
        row.check(slowest_refusal < 5, f"a refusal took {slowest_refusal:.1f} s (the body was read first?)")
        row.check(transactions.peak == 0, f"{transactions.peak} transactions open > 5 s while bodies arrived")
        row.notes = {
            "slowest_refusal_s": round(slowest_refusal, 2),
            "accepted_after_s": [round(a.seconds, 1) for a in accepted],
            "long_transactions": transactions.peak,
        }
        row.figures.append(f"refused within {slowest_refusal:.1f} s; long transactions {transactions.peak}")

    def deep_nesting(self, row: Row) -> None:
        depths = (17, 252, 253, 100_000)
        row.sent = "metadata 16 (control), 17, 252, 253, 100k deep (+100k arrays): single, JSON and NDJSON batch"
        row.expected = "16→200; else 4xx or per-record metadata_too_deep (malformed_record past 1024); list 200"

        def record(depth: int, kind: str = "object") -> bytes:
            name = f"deep-{kind}-{depth}".encode()
            metadata = nested(depth) if kind == "object" else b'{"a":' + nested(depth - 1, "array") + b"}"
            return b'{"external_id":"' + name + b'","name":"Deep","metadata":' + metadata + b"}"

        with self.client(self.a_auth) as a:
            control = a.post("/sync/businesses", content=record(16), headers={"Content-Type": "application/json"})
            row.see(control.status_code)
            row.check(control.status_code == 200, f"16 levels deep answered {control.status_code}, not 200")
            singles = [record(d) for d in depths] + [record(100_000, "array")]
            for body in singles:
                answer = a.post("/sync/businesses", content=body, headers={"Content-Type": "application/json"})
                row.see(answer.status_code)
                row.check(400 <= answer.status_code < 500, f"single ({len(body)} B) answered {answer.status_code}")
                row.notes.setdefault("single_codes", []).append(sorted(problem_codes(answer.json()))[:3])
            records = [record(d) for d in depths]
            for kind, (body, content_type) in batch_bodies(records).items():
                answer = a.post("/sync/businesses/batch", content=body, headers={"Content-Type": content_type, **WAIT})
                row.see(answer.status_code)
                if answer.status_code in (200, 202):
                    results = self.results_of(a, answer)
                    summary = [(r["outcome"], sorted({e["code"] for e in r["errors"]})) for r in results]
                    row.notes[f"{kind}_batch"] = summary
                    row.check(
                        len(results) == len(records)
                        # Past 1024 levels a line is not JSON to the parser at all: malformed_record.
                        and all(
                            o == "failed" and {"metadata_too_deep", "malformed_record"} & set(c) for o, c in summary
                        ),
                        f"{kind} batch: results {summary}",
                    )
                else:
                    row.check(400 <= answer.status_code < 500, f"{kind} batch answered {answer.status_code}")
                    row.notes[f"{kind}_batch"] = sorted(problem_codes(answer.json()))
        # On a fresh connection: the question is whether what was accepted reads back, whatever became of the
        # connection the probes used.
        with self.client(self.a_auth) as a:
            pages = 0
            after: str | None = None
            for _ in range(50):
                params: dict[str, str | int] = {"limit": 1000}
                if after:
                    params["starting_after"] = after
                try:
                    listing = a.get("/businesses", params=params)
                except httpx.HTTPError as exc:
                    row.see(exc.__class__.__name__)
                    row.check(False, f"GET /businesses: {exc.__class__.__name__}: {exc}")
                    break
                row.see(listing.status_code)
                pages += 1
                if listing.status_code != 200:
                    row.check(False, f"GET /businesses answered {listing.status_code}")
                    break
                data = listing.json()
                if not data["has_more"]:
                    break
                after = data["next_cursor"]
            row.notes["list_pages"] = pages

    def bad_credentials(self, row: Row) -> None:
        key, secret = self.a_auth
        variants: list[tuple[str, bytes]] = [
            ("key NUL", basic(key + "\0", secret)),
            ("secret NUL", basic(key, secret + "\0")),
            ("NUL only", basic("\0", "\0")),
            ("non-UTF-8 user", basic(b"\xff\xfe\xfd", secret)),
            ("non-UTF-8 secret", basic(key, secret.encode() + b"\xc3\x28")),
            ("raw non-UTF-8 bytes", b"Basic \xff\xfe\xc3\x28garbage"),
            ("raw NUL byte", b"Basic a\x00b"),
            ("not base64", b"Basic !!!not-base64!!!"),
            ("no colon", b"Basic " + base64.b64encode(b"nocolon")),
            ("empty", b"Basic "),
            ("colon only", basic("", "")),
            ("Bearer", b"Bearer " + secret.encode()),
            ("8 KB", b"Basic " + b"A" * 8192),
        ]
        row.sent = f"{len(variants)} Authorization headers: NUL, non-UTF-8, garbage"
        row.expected = "401 with WWW-Authenticate (raw NUL: 400)"
        body = b'{"external_id":"creds","name":"Creds"}'
        for label, value in variants:
            answer = raw(
                self.port,
                head(
                    "POST",
                    "/sync/businesses",
                    [
                        ("Authorization", value),
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                + body,
            )
            row.see(answer.label)
            # A raw NUL is not allowed in a header at all: the HTTP parser may refuse the request first.
            allowed = {400, 401} if label == "raw NUL byte" else {401}
            row.check(answer.status in allowed, f"{label}: {answer.label}")
            if answer.status == 401:
                row.check("www-authenticate" in answer.headers, f"{label}: 401 without WWW-Authenticate")

    def big_json(self, row: Row) -> None:
        records, target = self.args.big_records, self.args.big_mib * 2**20
        row.sent = f"{records} records, {self.args.big_mib} MiB, as JSON envelope and NDJSON"
        row.expected = f"202; API RSS growth ≤ {self.args.max_rss_mb} MB"
        overhead = len(orjson.dumps({"external_id": "big-json-000000", "name": "Big 000000", "metadata": {"pad": ""}}))
        pad = "x" * max(0, target // records - overhead - 1)
        with self.client(self.a_auth, timeout=300) as a:
            for kind in ("json", "ndjson"):
                lines = [
                    orjson.dumps(
                        {"external_id": f"big-{kind}-{i:06d}", "name": f"Big {i:06d}", "metadata": {"pad": pad}}
                    )
                    for i in range(records)
                ]
                if kind == "json":
                    body, content_type = b'{"businesses":[' + b",".join(lines) + b"]}", "application/json"
                else:
                    body, content_type = b"\n".join(lines) + b"\n", NDJSON
                del lines
                before = tree_rss(self.api.proc.pid)
                started = time.monotonic()
                with Watcher(lambda: tree_rss(self.api.proc.pid), 0.05) as rss:
                    answer = a.post("/sync/businesses/batch", content=body, headers={"Content-Type": content_type})
                seconds = time.monotonic() - started
                row.see(answer.status_code)
                growth = max(0, rss.peak - before)
                row.notes[kind] = {
                    "body_mib": round(len(body) / 2**20, 1),
                    "upload_s": round(seconds, 1),
                    "rss_before_mb": round(before / MB),
                    "rss_growth_mb": round(growth / MB, 1),
                    "rss_samples": rss.samples,
                }
                del body
                row.figures.append(f"{kind}: RSS +{growth / MB:.0f} MB, {seconds:.1f} s")
                row.check(answer.status_code == 202, f"{kind}: {answer.status_code} {answer.text[:200]}")
                row.check(growth <= self.args.max_rss_mb * MB, f"{kind}: RSS grew {growth / MB:.0f} MB")
                if answer.status_code == 202:
                    # Only the upload is on trial: spare the workers 100 000 records each.
                    cancel = a.post(f"/jobs/{answer.json()['id']}/cancel")
                    row.see(cancel.status_code)

    def fat_records(self, row: Row) -> None:
        """Few records, each nearly as large as a record may be: a chunk is cut at 4 MiB of them (MAX_CHUNK_BYTES),
        not only at PFSYNC_CHUNK_SIZE records, so neither the API nor a worker holds the whole batch parsed."""
        fat = {f"k{i}": i for i in range(60_000)}  # ~0.85 MiB of JSON, 60 000 Python objects a record
        records = [{"external_id": f"fat-{i:03d}", "name": "Fat", "metadata": fat} for i in range(110)]
        records[40:40] = [
            {"external_id": f"too-large-{i}", "name": "Too", "metadata": {"pad": "x" * 1_200_000}} for i in range(2)
        ]
        body = orjson.dumps({"businesses": records})
        del records
        row.sent = f"{len(body) / 2**20:.0f} MiB JSON batch: 110 records of 0.85 MiB, 2 of 1.1 MiB; one of 100 MiB"
        row.expected = (
            f"202; API RSS growth ≤ {self.args.max_rss_mb} MB; each record fails alone; a worker ≤ 100 MB more; "
            "the 100 MiB record 413"
        )
        pool = [p for child in self.drill.workers for p in psutil.Process(child.proc.pid).children(recursive=True)]
        base = {p.pid: p.memory_info().rss for p in pool}

        def largest_growth() -> int:
            """The most any one worker pool process grew since the upload started."""
            grown = 0
            for p in pool:
                with contextlib.suppress(psutil.Error):
                    grown = max(grown, p.memory_info().rss - base[p.pid])
            return grown

        with self.client(self.a_auth, timeout=300) as a:
            api_before = tree_rss(self.api.proc.pid)
            with Watcher(lambda: tree_rss(self.api.proc.pid), 0.05) as api_rss, Watcher(largest_growth, 0.05) as w_rss:
                answer = a.post("/sync/businesses/batch", content=body, headers={"Content-Type": "application/json"})
                row.see(answer.status_code)
                results = self.results_of(a, answer) if answer.status_code == 202 else []
            api_growth, workers_growth = max(0, api_rss.peak - api_before), max(0, w_rss.peak)
        codes = Counter(e["code"] for r in results for e in r["errors"])
        row.notes |= {
            "api_rss_growth_mb": round(api_growth / MB, 1),
            "worker_rss_growth_mb": round(workers_growth / MB, 1),
        }
        row.notes["error_codes"] = dict(codes)
        row.figures.append(f"API RSS +{api_growth / MB:.0f} MB, a worker process +{workers_growth / MB:.0f} MB at most")
        row.check(answer.status_code == 202, f"{answer.status_code} {answer.text[:200]}")
        row.check(api_growth <= self.args.max_rss_mb * MB, f"API RSS grew {api_growth / MB:.0f} MB")
        row.check(workers_growth <= 100 * MB, f"a worker process grew {workers_growth / MB:.0f} MB")
        row.check(len(results) == 112 and all(r["outcome"] == "failed" for r in results), f"results: {codes}")
        row.check(codes == Counter({"metadata_too_large": 110, "record_too_large": 2}), f"errors: {dict(codes)}")
        # One record of ~100 MiB: refused while it is read, before the parser has built it.
        giant = orjson.dumps(
            {"businesses": [{"external_id": "giant", "name": "G", "metadata": {f"k{i}": i for i in range(6_000_000)}}]}
        )
        with self.client(self.a_auth, timeout=300) as a:
            before = tree_rss(self.api.proc.pid)
            with Watcher(lambda: tree_rss(self.api.proc.pid), 0.05) as rss:
                answer = a.post("/sync/businesses/batch", content=giant, headers={"Content-Type": "application/json"})
            growth = max(0, rss.peak - before)
        del giant
        row.see(answer.status_code)
        row.notes["giant_record"] = {"status": answer.status_code, "api_rss_growth_mb": round(growth / MB, 1)}
        row.figures.append(f"one record of 100 MiB: {answer.status_code}, API RSS +{growth / MB:.0f} MB")
        code = answer.json().get("code") if answer.headers.get("content-type", "").endswith("json") else None
        row.check(answer.status_code == 413 and code == "record_too_large", f"giant record: {answer.status_code}")
        row.check(growth <= self.args.max_rss_mb * MB, f"giant record: API RSS grew {growth / MB:.0f} MB")

    def huge_ints(self, row: Row) -> None:
        values = [b"1180591620717411303424", b"1e400", b"-9223372036854775809"]
        row.sent = "metadata n = 2**70, 1e400, -2**63-1: single, JSON and NDJSON batch (wait=30)"
        row.expected = "422 invalid_number; batch records failed invalid_number"

        def record(i: int, value: bytes) -> bytes:
            return b'{"external_id":"huge-%d","name":"Huge","metadata":{"n":' % i + value + b"}}"

        with self.client(self.a_auth) as a:
            for i, value in enumerate(values):
                answer = a.post(
                    "/sync/businesses", content=record(i, value), headers={"Content-Type": "application/json"}
                )
                row.see(answer.status_code)
                codes = (
                    problem_codes(answer.json()) if answer.headers.get("content-type", "").endswith("json") else set()
                )
                row.check(
                    answer.status_code == 422 and "invalid_number" in codes,
                    f"single {value.decode()}: {answer.status_code} {sorted(codes)}",
                )
            for kind, (body, content_type) in batch_bodies([record(i, v) for i, v in enumerate(values)]).items():
                answer = a.post("/sync/businesses/batch", content=body, headers={"Content-Type": content_type, **WAIT})
                row.see(answer.status_code)
                if answer.status_code not in (200, 202):
                    row.check(False, f"{kind} batch: {answer.status_code} {answer.text[:200]}")
                    continue
                results = self.results_of(a, answer)
                summary = [(r["outcome"], sorted({e["code"] for e in r["errors"]})) for r in results]
                row.notes[f"{kind}_batch"] = summary
                row.check(
                    len(results) == len(values) and all(o == "failed" and "invalid_number" in c for o, c in summary),
                    f"{kind} batch: {summary}",
                )
            listing = a.get("/businesses", params={"limit": 1000})
            row.see(listing.status_code)
            row.check(listing.status_code == 200, f"GET /businesses answered {listing.status_code}")

    def unknown_fields(self, row: Row) -> None:
        fields = 10_000
        row.sent = f"a record with {fields} unknown fields: single, and in a batch (wait=30)"
        row.expected = "422 ≤ 16 KiB; ≤ 21 errors; results fast and small"
        record = {"external_id": "unknown-fields", "name": "Unknown", **{f"f{i:05d}": i for i in range(fields)}}
        with self.client(self.a_auth) as a:
            answer = a.post("/sync/businesses", json=record)
            row.see(answer.status_code)
            row.notes["single_bytes"] = len(answer.content)
            row.figures.append(f"422 body {len(answer.content)} B")
            row.check(answer.status_code == 422, f"single: {answer.status_code}")
            row.check(len(answer.content) <= 16 * 1024, f"single: a {len(answer.content)}-byte problem")
            batch = a.post("/sync/businesses/batch", json={"businesses": [record]}, headers=WAIT)
            row.see(batch.status_code)
            row.notes["batch_answer_bytes"] = len(batch.content)
            if batch.status_code not in (200, 202):
                row.check(False, f"batch: {batch.status_code} {batch.text[:200]}")
                return
            self.results_of(a, batch)
            job_id = batch.json().get("job", batch.json())["id"]
            started = time.monotonic()
            results = a.get(f"/jobs/{job_id}/results")
            millis = (time.monotonic() - started) * 1000
            row.see(results.status_code)
            errors = results.json()["data"][0]["errors"] if results.status_code == 200 else []
            row.notes.update(results_ms=round(millis, 1), results_bytes=len(results.content), errors=len(errors))
            row.figures.append(f"results: {len(errors)} errors, {millis:.0f} ms, {len(results.content)} B")
            row.check(results.status_code == 200, f"results: {results.status_code}")
            row.check(len(errors) <= 21, f"{len(errors)} errors on one record")
            row.check(any(e["code"] == "too_many_errors" for e in errors), "no too_many_errors entry")
            row.check(millis < 1000, f"results took {millis:.0f} ms")
            row.check(len(results.content) <= 16 * 1024, f"results are {len(results.content)} bytes")

    def repeated_invalid(self, row: Row) -> None:
        row.sent = 'customers batch: two records with email "not-an-email" (wait=30)'
        row.expected = "both failed: invalid_email + duplicate_in_batch"
        records = [{"external_id": f"repeated-{i}", "email_address": "not-an-email"} for i in range(2)]
        with self.client(self.a_auth) as a:
            answer = a.post(f"/sync/businesses/{self.home}/customers/batch", json={"customers": records}, headers=WAIT)
            row.see(answer.status_code)
            if answer.status_code not in (200, 202):
                row.check(False, f"batch: {answer.status_code} {answer.text[:200]}")
                return
            results = self.results_of(a, answer)
            summary = [sorted({e["code"] for e in r["errors"]}) for r in results]
            row.notes["codes"] = summary
            row.check(
                len(results) == 2 and all({"invalid_email", "duplicate_in_batch"} <= set(c) for c in summary),
                f"codes {summary}",
            )

    def huge_headers(self, row: Row) -> None:
        auth = self.a_header()
        junk: list[tuple[str, list[tuple[str, bytes | str]]]] = [
            ("64 KiB header", [auth, ("X-Junk", "a" * 65536)]),
            ("1 MiB header", [auth, ("X-Junk", "a" * 2**20)]),
            ("5000 headers", [auth, *((f"X-H{i}", "v") for i in range(5000))]),
            ("1 MiB Authorization", [("Authorization", b"Basic " + b"A" * 2**20)]),
            ("16 MiB header", [auth, ("X-Junk", "a" * 16 * 2**20)]),
        ]
        row.sent = "GET /businesses with 64 KiB, 1 MiB and 16 MiB headers, 5000 headers, a 1 MiB Authorization"
        row.expected = "never 5xx (4xx/dropped preferred); the API still answers"
        for label, headers in junk:
            before = tree_rss(self.api.proc.pid)
            with Watcher(lambda: tree_rss(self.api.proc.pid), 0.05) as rss:
                answer = raw(self.port, head("GET", "/businesses?limit=1", headers), timeout=20)
            growth = max(0, rss.peak - before) / MB
            row.see(answer.label)
            row.notes[label] = {"status": answer.label, "rss_growth_mb": round(growth, 1)}
            row.figures.append(f"{label}: {answer.label}" + (f" (RSS +{growth:.0f} MB)" if growth >= 1 else ""))
            row.check(answer.status is None or answer.status < 500, f"{label}: {answer.label}")
        with self.client(self.a_auth) as a:
            after = a.get("/businesses", params={"limit": 1})
            row.see(after.status_code)
            row.check(after.status_code == 200, f"then GET /businesses: {after.status_code}")

    def idempotency_key(self, row: Row) -> None:
        row.sent = "Idempotency-Key of 10 000 and 256 chars (single, batch), of 255 (control), raw bytes"
        row.expected = ">255: 4xx; 255: 200 then replayed; bytes: no 5xx"
        with self.client(self.a_auth) as a:
            body = {"external_id": "idem", "name": "Idem"}
            for length in (10_000, 256):
                key = "k" * length
                single = a.post("/sync/businesses", json=body, headers={"Idempotency-Key": key})
                batch = a.post("/sync/businesses/batch", json={"businesses": [body]}, headers={"Idempotency-Key": key})
                for what, answer in (("single", single), ("batch", batch)):
                    row.see(answer.status_code)
                    row.check(400 <= answer.status_code < 500, f"{length} chars, {what}: {answer.status_code}")
            key = "k" * 255
            first = a.post("/sync/businesses", json=body, headers={"Idempotency-Key": key})
            again = a.post("/sync/businesses", json=body, headers={"Idempotency-Key": key})
            for answer in (first, again):
                row.see(answer.status_code)
            row.check(first.status_code == 200, f"255 chars: {first.status_code}")
            row.check(
                again.status_code == 200 and again.headers.get("idempotent-replayed") == "true",
                f"255 chars replayed: {again.status_code} replayed={again.headers.get('idempotent-replayed')}",
            )
        payload = b'{"external_id":"idem-raw","name":"Idem"}'
        for label, key_bytes in (("NUL", b"key\x00nul"), ("non-UTF-8", b"key\xff\xfe"), ("10k NUL", b"\x00" * 10_000)):
            reply = raw(
                self.port,
                head(
                    "POST",
                    "/sync/businesses",
                    [
                        self.a_header(),
                        ("Idempotency-Key", key_bytes),
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(payload))),
                    ],
                )
                + payload,
            )
            row.see(reply.label)
            row.notes[label] = reply.label
            row.check(reply.status is None or reply.status < 500, f"key {label}: {reply.label}")

    def content_length(self, row: Row) -> None:
        ten_gb = str(10 * 2**30)
        cases: list[tuple[str, str, list[tuple[str, bytes | str]], bytes, set[int]]] = [
            ("batch 10 GB", "/sync/businesses/batch", [("Content-Length", ten_gb)], b'{"businesses":[', {413}),
            ("single 10 GB", "/sync/businesses", [("Content-Length", ten_gb)], b"{", {413}),
            ("batch 10^26", "/sync/businesses/batch", [("Content-Length", "9" * 26)], b"{", {400, 413}),
            ("batch -1", "/sync/businesses/batch", [("Content-Length", "-1")], b"{", {400}),
            (
                "batch CL + chunked",
                "/sync/businesses/batch",
                [("Content-Length", ten_gb), ("Transfer-Encoding", "chunked")],
                b"2\r\n{}\r\n0\r\n\r\n",
                set(range(400, 500)),
            ),
        ]
        row.sent = "Content-Length 10 GB (batch, single), 10^26, -1, with chunked"
        row.expected = "413 at once (10 GB); 4xx"
        for label, path, headers, body, expected in cases:
            answer = raw(
                self.port,
                head("POST", path, [self.a_header(), ("Content-Type", "application/json"), *headers]) + body,
                timeout=15,
            )
            row.see(answer.label)
            row.notes[label] = f"{answer.label} in {answer.seconds:.2f} s"
            if "10 GB" in label:
                row.figures.append(f"{label}: {row.notes[label]}")
            row.check(answer.status in expected, f"{label}: {answer.label}, not {sorted(expected)[:3]}")
            row.check(answer.seconds < 3, f"{label}: answered after {answer.seconds:.1f} s")

    def path_ids(self, row: Row) -> None:
        home = self.home.encode()
        paths: list[tuple[str, bytes]] = [
            ("GET", b"/jobs/%00"),
            ("GET", b"/jobs/%FF%FE"),
            ("GET", b"/jobs/job_%00x/results"),
            ("GET", b"/jobs/" + b"j" * 10_000),
            ("GET", b"/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
            ("GET", b"/jobs?starting_after=%00"),
            ("GET", b"/jobs?status=%FF&type=%00"),
            ("GET", b"/businesses/%00"),
            ("GET", b"/businesses/biz_%C0%AF"),
            ("GET", b"/businesses?limit=99999999999999999999999&starting_after=%FF"),
            ("GET", b"/businesses/" + home + b"/customers?starting_after=%00&email_address=%00"),
            ("GET", b"/customers/cus_%E2%80%AE%00"),
            ("GET", b"/jobs/\xff\xfe"),
            ("GET", b"/businesses/\x01\x7f"),
            ("POST", b"/sync/businesses/%00/customers"),
            ("POST", b"/sync/businesses/%FF/customers/batch"),
            ("POST", b"/jobs/%00/cancel"),
            ("POST", b"/businesses/%00/customers"),
        ]
        row.sent = f"{len(paths)} requests with NUL, %FF, overlong UTF-8, 10 000-char and raw bytes in path ids"
        row.expected = "4xx (or dropped for raw bytes)"
        body = b'{"external_id":"odd","email_address":"odd@example.com"}'
        for method, path in paths:
            extra: list[tuple[str, bytes | str]] = []
            payload = b""
            if method == "POST":
                payload = body
                extra = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            answer = raw(self.port, head(method, path, [self.a_header(), *extra]) + payload, timeout=15)
            row.see(answer.label)
            shown = path[:40].decode("latin-1")
            ok = (answer.status is not None and 400 <= answer.status < 500) or (
                answer.status is None and answer.error != "timeout"
            )
            row.check(ok, f"{method} {shown!r}: {answer.label}")

    def flood(self, row: Row) -> None:
        count = self.args.flood
        row.sent = f"{count} concurrent single syncs (10 external_ids)"
        row.expected = "200 or 429; never 5xx"

        async def flood() -> Counter[str]:
            limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
            async with httpx.AsyncClient(
                base_url=self.drill.api_url, auth=self.a_auth, limits=limits, timeout=40
            ) as client:

                async def one(i: int) -> str:
                    try:
                        body = {"external_id": f"flood-{i % 10}", "name": f"Flood {i}"}
                        answer = await client.post("/sync/businesses", json=body)
                        return str(answer.status_code)
                    except httpx.TimeoutException:
                        return "timeout"
                    except httpx.HTTPError as exc:
                        return exc.__class__.__name__

                return Counter(await asyncio.gather(*(one(i) for i in range(count))))

        started = time.monotonic()
        statuses = asyncio.run(asyncio.wait_for(flood(), 90))
        row.notes["seconds"] = round(time.monotonic() - started, 1)
        row.figures.append(f"in {row.notes['seconds']} s")
        row.statuses.update(statuses)
        unexpected = {s: n for s, n in statuses.items() if s not in ("200", "429")}
        row.check(not unexpected, f"unexpected {unexpected}")
        time.sleep(3)  # let A's request budget refill before the next probe

    def stalled(self, row: Row) -> None:
        idle = self.args.body_idle_timeout
        row.sent = "4 batch uploads stalled after 100 B, 1 request stalled mid-headers"
        row.expected = f"408 or dropped within ~{idle:g} s; A's 5th 429, B's batch 202; slots freed"
        stalls: list[tuple[socket.socket, float]] = []
        declared = 10_000
        request = head(
            "POST",
            "/sync/businesses/batch",
            [self.a_header(), ("Content-Type", NDJSON), ("Content-Length", str(declared))],
        )
        body = b'{"external_id":"stalled","name":"Stalled"}\n' * 3
        slowloris: socket.socket | None = None
        try:
            for _ in range(4):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(request + body[:100])
                stalls.append((sock, time.monotonic()))
            slowloris = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            slowloris.sendall(b"POST /sync/businesses/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            time.sleep(1)
            small = {"businesses": [{"external_id": "while-stalled", "name": "While stalled"}]}
            with (
                self.client(self.a_auth) as a,
                self.client(self.b_auth) as b,
                Watcher(self.long_transactions, 0.5) as transactions,
            ):
                fifth = a.post("/sync/businesses/batch", json=small)
                row.see(fifth.status_code)
                row.check(fifth.status_code == 429, f"A's 5th upload while 4 stall: {fifth.status_code}")
                theirs = b.post("/sync/businesses/batch", json=small)
                row.see(theirs.status_code)
                row.check(theirs.status_code == 202, f"B's batch while A's stall: {theirs.status_code}")
                row.notes["b_batch"] = theirs.status_code
                answers = [read_answer(sock, idle + 20, started) for sock, started in stalls]
                for answer in answers:
                    row.see(answer.label)
                    row.check(answer.status == 408 or answer.status is None, f"stalled upload: {answer.label}")
                    row.check(answer.error != "timeout", f"a stalled upload held after {answer.seconds:.0f} s")
                row.notes["stalled_answered_s"] = [round(x.seconds, 1) for x in answers]
                time.sleep(0.5)
                later = a.post("/sync/businesses/batch", json=small)
                row.see(later.status_code)
                row.check(later.status_code == 202, f"A's upload once the stalls ended: {later.status_code}")
            row.check(transactions.peak == 0, f"{transactions.peak} transactions open > 5 s during the stall")
            row.notes["long_transactions"] = transactions.peak
            dropped = bool(select.select([slowloris], [], [], 0)[0])
            row.notes["mid_headers_dropped"] = dropped
            waited = max((x.seconds for x in answers), default=0.0)
            row.figures.append(
                f"stalls ended after ≤ {waited:.1f} s; mid-headers dropped: {'yes' if dropped else 'no'}"
            )
        finally:
            for sock, _ in stalls:
                sock.close()
            if slowloris is not None:
                slowloris.close()

    def run(self) -> None:
        probes: list[tuple[str, Callable[[Row], None]]] = [
            ("baseline", self.baseline),
            ("slow-uploads", self.slow_uploads),
            ("deep-nesting", self.deep_nesting),
            ("bad-credentials", self.bad_credentials),
            ("big-json", self.big_json),
            ("fat-records", self.fat_records),
            ("huge-ints", self.huge_ints),
            ("unknown-fields", self.unknown_fields),
            ("repeated-invalid", self.repeated_invalid),
            ("huge-headers", self.huge_headers),
            ("idempotency-key", self.idempotency_key),
            ("content-length", self.content_length),
            ("path-ids", self.path_ids),
            ("flood", self.flood),
            ("stalled", self.stalled),
        ]
        assert tuple(name for name, _ in probes[1:]) == PROBES
        for name, probe in probes:
            if self.args.only and name not in self.args.only and name != "baseline":
                continue
            self.run_probe(name, probe)


def table(rows: list[Row]) -> str:
    header = ("probe", "sent", "statuses", "expected", "B p50/p99 ms", "healthz p99", "verdict", "figures")
    lines = [
        (
            row.probe,
            row.sent,
            " ".join(f"{status}×{n}" for status, n in sorted(row.statuses.items())) or "-",
            row.expected,
            f"{row.bystander.get('p50_ms')}/{row.bystander.get('p99_ms')}",
            str(row.healthz.get("p99_ms")),
            row.verdict,
            "; ".join(row.figures),
        )
        for row in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    failed = [row for row in rows if row.problems]
    if failed:
        out.append("")
        out += [f"{row.probe}: {'; '.join(row.problems)}"[:400] for row in failed]
    return "\n".join(out)


@contextlib.contextmanager
def drill_running(abuse: Abuse) -> Iterator[Abuse]:
    try:
        abuse.start()
        yield abuse
    finally:
        abuse.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.abuse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow-uploads", type=int, default=60, help="slow batch uploads (%(default)s)")
    parser.add_argument("--slow-seconds", type=float, default=20, help="seconds each slow upload takes (%(default)s)")
    parser.add_argument("--slow-rate", type=int, default=3000, help="bytes per second of a slow upload (%(default)s)")
    parser.add_argument("--big-records", type=int, default=100_000, help="records of the big batch (%(default)s)")
    parser.add_argument("--big-mib", type=int, default=126, help="MiB of the big batch (%(default)s)")
    parser.add_argument("--max-rss-mb", type=float, default=100, help="allowed API RSS growth (%(default)s MB)")
    parser.add_argument("--flood", type=int, default=300, help="concurrent single syncs of the flood (%(default)s)")
    parser.add_argument(
        "--body-idle-timeout", type=float, default=10, help="PFSYNC_BODY_IDLE_TIMEOUT_SECONDS (%(default)s)"
    )
    parser.add_argument(
        "--bystander-p99-ms", type=float, default=1000, help="B's allowed p99 during a probe (%(default)s ms)"
    )
    parser.add_argument("--budget", type=float, default=300, help="skip probes after this many seconds (%(default)s)")
    parser.add_argument(
        "--only", nargs="+", metavar="PROBE", choices=PROBES, help="run only these (and the baseline): %(choices)s"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with drill_running(Abuse(args)) as abuse:
        abuse.run()
    rows = abuse.rows
    five_xx = sum(row.five_xx for row in rows) + sum(
        n for row in rows for status, n in row.bystander.get("statuses", {}).items() if status.startswith("5")
    )
    figures = {
        "probes": [row.as_dict() for row in rows],
        "failed": [row.probe for row in rows if row.verdict != "ok"],
        "five_xx": five_xx,
        "seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(figures).decode()
    (RESULTS / "abuse.json").write_text(line + "\n")
    if not args.json_only:
        print(table(rows))
    print(line)
    return 1 if figures["failed"] or five_xx else 0


if __name__ == "__main__":
    sys.exit(main())
