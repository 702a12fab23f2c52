"""The console's benchmark: every page timed with ten thousand jobs and a million results stored.

    make console-bench             # or: python -m benchmarks.console [--jobs N] [--results N] [--screenshots DIR]

It creates a scratch database on `DATABASE_URL`'s server (as `make bench` does: the machine's PostgreSQL by
default), migrates it, and loads with COPY, in a few seconds, what a busy month leaves behind: 50 partners (one
with a fifth of the jobs), two keys each (one revoked), 10 000 jobs over 30 days — ten of 50 000 records, the rest
of about 50, a few hundred in the last hour, some failed, cancelled, running or queued — and their 1 000 000
results in about 10 500 chunks, 5 % failed with errors, exactly as workers store them. Then it starts `pfsync api`
(one process) and a worker on that database, signs in as an operator, and times every page and live fragment of
the console (after a warm-up, `--repeat` times each) and the downloads. It prints a table and a JSON document
(also written to benchmarks/results/console.json) and drops the scratch database; the exit status is 1 if a page's
p95 is 300 ms or more (SPEC §10). With `--screenshots DIR` it also takes the docs' screenshots on that data.
Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from benchmarks.bench import RESULTS, Service, _libpq, percentile, phase, prepare_servers
from core import ids
from core.records.rules import OUTCOMES

TARGET_MS = 300.0
PARTNERS = 50
BIG_JOBS = 10
BIG_JOB_RECORDS = 50_000
CHUNK = 1000
ERRORS = (
    ("invalid_email", "is not a valid email address (at most 254 characters)", "email_address"),
    ("required", "is required", "name"),
    ("unknown_field", "unknown field; see the API reference for the fields this resource has", "colour"),
    ("too_long", "is longer than 255 characters", "full_name"),
    ("duplicate_in_batch", "'c-1' also appears at index 7 of this batch; each record may appear once", "external_id"),
)


ABANDONED = {"code": "internal_error", "message": "processing failed 5 times; the record was not applied", "path": None}


def id_at(prefix: str, moment: datetime, serial: int) -> str:
    """An id as the service would have made it at `moment` (ids sort by creation time)."""
    body = (int(moment.timestamp() * 1000) << 80) | ((serial & 0xFFFF) << 64) | (serial * 2654435761 & (2**64 - 1))
    return f"{prefix}_{ids._encode(body, 26)}"


@dataclass
class Loaded:
    """What the load made, for the pages to visit."""

    jobs: int = 0
    results: int = 0
    chunks: int = 0
    partner_ids: list[str] = field(default_factory=list)
    heavy_partner: str = ""
    job_ids: list[str] = field(default_factory=list)
    big_job: str = ""
    running_job: str = ""
    small_job: str = ""
    seconds: float = 0.0


def _job_plan(jobs: int, results: int) -> list[int]:
    """The record count of each job, oldest first: BIG_JOBS of BIG_JOB_RECORDS spread out, the rest sharing what
    is left, so that the total is exactly `results`."""
    big_at = {round(jobs * (k + 1) / (BIG_JOBS + 1)) for k in range(BIG_JOBS - 2)} | {jobs - 40, jobs - 3}
    small_jobs = jobs - len(big_at)
    left = results - len(big_at) * BIG_JOB_RECORDS
    base, extra = divmod(left, small_jobs)
    sizes, small = [], 0
    for index in range(jobs):
        if index in big_at:
            sizes.append(BIG_JOB_RECORDS)
        else:
            sizes.append(base + (1 if small < extra else 0))
            small += 1
    return sizes


def _result(index: int, serial: int, outcome: str) -> dict[str, Any]:
    errors: list[dict[str, Any]] = []
    if outcome == "failed":
        first = ERRORS[serial % len(ERRORS)]
        errors.append({"code": first[0], "message": first[1], "path": first[2]})
        if serial % 7 == 0:
            second = ERRORS[(serial + 2) % len(ERRORS)]
            errors.append({"code": second[0], "message": second[1], "path": second[2]})
    # Ids and external ids as varied as real ones, so that the results compress no better than real ones do.
    noise = random.Random(serial)
    return {
        "index": index,
        "outcome": outcome,
        "id": None if outcome in ("failed", "cancelled") else f"cus_{ids._encode(noise.getrandbits(130), 26)}",
        "external_id": f"crm-{noise.getrandbits(40):x}-{index}",
        "errors": errors,
    }


def _outcome(serial: int) -> str:
    roll = random.Random(serial).randrange(100)
    if roll < 5:
        return "failed"
    if roll < 65:
        return "created"
    if roll < 90:
        return "replaced"
    if roll < 98:
        return "unchanged"
    return "superseded"


@dataclass
class JobPlan:
    """One job to load: what it is, and how far it got."""

    number: int
    job_id: str
    partner_id: str
    key_id: str
    kind: str
    size: int
    status: str
    chunk_count: int
    done_chunks: int
    created: datetime
    started: datetime | None
    # The serial number of its first processed record: every record's outcome follows from its serial.
    first_serial: int

    def chunks(self) -> Iterator[tuple[tuple[Any, ...], Counter[str]]]:
        """Each chunk's row for COPY as workers leave it, and the chunk's outcomes."""
        serial = self.first_serial
        processed_at = self.started or self.created
        for chunk_no in range(self.chunk_count):
            first = chunk_no * CHUNK
            count = min(CHUNK, self.size - first)
            payload = b"\n".join(b'{"external_id":"x-%d","name":"R"}' % (first + i) for i in range(count))
            if chunk_no >= self.done_chunks:
                running = self.status == "running"
                state = "queued" if running and chunk_no < self.done_chunks + 2 else "pending"
                empty = (None,) * 5
                yield (
                    (self.job_id, chunk_no, first, count, payload, state, int(state == "queued"), *empty),
                    Counter[str](),
                )
                continue
            cancelled = self.status == "cancelled" and chunk_no >= self.chunk_count // 2 and self.chunk_count > 1
            abandoned = self.status == "failed" and chunk_no == self.chunk_count - 1
            chunk_results = []
            for offset in range(count):
                serial += 1
                outcome = "cancelled" if cancelled else "failed" if abandoned else _outcome(serial)
                result = _result(first + offset, serial, outcome)
                if abandoned:
                    result["errors"] = [ABANDONED]
                chunk_results.append(result)
            outcomes = Counter(r["outcome"] for r in chunk_results)
            errors = Counter(e["code"] for r in chunk_results for e in r["errors"])
            processed_at += timedelta(milliseconds=35)
            row = (
                self.job_id, chunk_no, first, count, payload, "done", 6 if abandoned else 1,
                orjson.dumps(chunk_results), orjson.dumps(outcomes).decode(), orjson.dumps(errors).decode(),
                processed_at, None if cancelled or abandoned else 35,
            )  # fmt: skip
            yield row, outcomes

    def finished(self) -> datetime | None:
        if self.status not in ("completed", "cancelled", "failed") or self.started is None:
            return None
        return self.started + timedelta(milliseconds=35 * self.done_chunks)


def plan(
    *, jobs: int, results: int, now: datetime
) -> tuple[list[tuple[str, str]], dict[str, tuple[str, str]], list[JobPlan]]:
    """The partners (id, name), their keys (live, revoked) and the jobs, oldest first."""
    month_ago = now - timedelta(days=30)
    partners = [(id_at("ptn", month_ago - timedelta(days=1), p), f"Partner {p + 1:02d}") for p in range(PARTNERS)]
    keys = {p: (id_at("key", month_ago, i), id_at("key", month_ago, 1000 + i)) for i, (p, _) in enumerate(partners)}
    recent = 300  # jobs accepted in the last hour, so the chart has something to show
    planned = []
    serial = 0
    for number, size in enumerate(_job_plan(jobs, results)):
        if number < jobs - recent:
            created = month_ago + (now - timedelta(hours=1) - month_ago) * number / (jobs - recent)
        else:
            created = now - timedelta(hours=1) + timedelta(hours=1) * (number - jobs + recent) / recent
        partner_id = partners[0][0] if number % 5 == 0 else partners[1 + number % (PARTNERS - 1)][0]
        chunk_count = (size + CHUNK - 1) // CHUNK
        status, done = "completed", chunk_count
        if number >= jobs - 2:
            status, done = "queued", 0
        elif number >= jobs - 5:
            status, done = "running", chunk_count // 2
        elif number % 250 == 7:
            status = "cancelled"  # its later half ends cancelled
        elif number % 333 == 11:
            status = "failed"  # its last chunk was abandoned
        planned.append(
            JobPlan(
                number=number,
                job_id=id_at("job", created, number),
                partner_id=partner_id,
                key_id=keys[partner_id][0],
                kind="businesses" if number % 10 < 3 and size != BIG_JOB_RECORDS else "customers",
                size=size,
                status=status,
                chunk_count=chunk_count,
                done_chunks=done,
                created=created,
                started=None if status == "queued" else created + timedelta(milliseconds=120),
                first_serial=serial,
            )
        )
        serial += min(size, done * CHUNK)
    return partners, keys, planned


def load(conninfo: str, *, jobs: int, results: int) -> Loaded:
    """Partners, keys, jobs, chunks and results, written by COPY in one transaction: the jobs first (their
    counters summed from a first pass over their results), then the chunks."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    month_ago = now - timedelta(days=30)
    # Queued and running jobs have records without a result yet: plan more records until `results` have one.
    records = results
    while True:
        partners, keys, planned = plan(jobs=jobs, results=records, now=now)
        processed = sum(min(job.size, job.done_chunks * CHUNK) for job in planned)
        if processed == results:
            break
        records += results - processed
    loaded = Loaded(partner_ids=[p for p, _ in partners], heavy_partner=partners[0][0])
    columns = ", ".join(OUTCOMES)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        with cur.copy("COPY partners (id, name, created_at) FROM STDIN") as copy:
            for partner_id, name in partners:
                copy.write_row((partner_id, name, month_ago - timedelta(days=1)))
        with cur.copy(
            "COPY api_keys (id, partner_id, secret_hash, created_at, revoked_at, last_used_at) FROM STDIN"
        ) as copy:
            for partner_id, (live, revoked) in keys.items():
                copy.write_row((live, partner_id, "0" * 64, month_ago, None, now - timedelta(minutes=3)))
                copy.write_row((revoked, partner_id, "0" * 64, month_ago, month_ago + timedelta(days=3), month_ago))
        with cur.copy(
            "COPY sync_jobs (id, partner_id, type, business_id, status, seq, admitted, chunk_count, total, processed, "
            f"{columns}, abandoned_chunks, api_key_id, created_at, started_at, finished_at, cancel_requested_at) "
            "FROM STDIN"
        ) as copy:
            for job in planned:
                counts: Counter[str] = Counter()
                for _, outcomes in job.chunks():
                    counts.update(outcomes)
                finished = job.finished()
                copy.write_row((
                    job.job_id, job.partner_id, job.kind,
                    id_at("biz", month_ago, job.number) if job.kind == "customers" else None, job.status,
                    job.number + 1, job.status != "queued" or job.number == jobs - 1, job.chunk_count, job.size,
                    sum(counts.values()), *(counts.get(name, 0) for name in OUTCOMES), int(job.status == "failed"),
                    job.key_id, job.created, job.started, finished,
                    finished - timedelta(milliseconds=40) if job.status == "cancelled" and finished else None,
                ))  # fmt: skip
        with cur.copy(
            "COPY job_chunks (job_id, chunk_no, first_index, record_count, payload, state, attempts, results, "
            "outcome_counts, error_counts, processed_at, duration_ms) FROM STDIN"
        ) as copy:
            for job in planned:
                for row, outcomes in job.chunks():
                    copy.write_row(row)
                    loaded.chunks += 1
                    loaded.results += sum(outcomes.values())
        cur.execute("SELECT setval('write_seq', %s)", (jobs + 1,))
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    loaded.jobs = len(planned)
    loaded.job_ids = [job.job_id for job in planned]
    completed_big = [j for j in planned if j.size == BIG_JOB_RECORDS and j.status == "completed"]
    loaded.big_job = completed_big[-1].job_id
    loaded.running_job = next(j.job_id for j in reversed(planned) if j.status == "running")
    loaded.small_job = next(j.job_id for j in reversed(planned) if j.size < 100 and j.status == "completed")
    loaded.seconds = time.perf_counter() - started
    return loaded


def table_sizes(conninfo: str) -> dict[str, str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class "
            "WHERE relname IN ('sync_jobs', 'job_chunks') ORDER BY relname"
        ).fetchall()
    return dict(rows)


def time_get(client: httpx.Client, path: str, repeat: int) -> dict[str, Any]:
    """GET `path` (twice to warm up, then `repeat` times); its status and times in ms."""
    status = 0
    for _ in range(2):
        status = client.get(path).status_code
    times = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        size = len(response.content)
        times.append((time.perf_counter() - started) * 1000)
        status = response.status_code
    return {
        "status": status,
        "bytes": size,
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 95), 1),
        "max_ms": round(max(times), 1),
    }


def pages(loaded: Loaded, client: httpx.Client) -> list[tuple[str, str]]:
    """Every page and fragment to time, with what it shows."""
    middle = loaded.job_ids[len(loaded.job_ids) // 2]
    heavy = loaded.heavy_partner
    first_failed = client.get(f"/console/jobs/{loaded.big_job}").text
    marker = 'rel="next">Next failed results'
    results_page = first_failed.split(marker)[0].rsplit('href="', 1)[1].split('"')[0] if marker in first_failed else ""
    return [
        ("overview", "/console/"),
        ("overview, live fragment", "/console/live/overview"),
        ("jobs, newest", "/console/jobs"),
        ("jobs, live fragment", "/console/live/jobs"),
        ("jobs, status=failed (rare)", "/console/jobs?status=failed"),
        ("jobs, status=running", "/console/jobs?status=running"),
        ("jobs, type=businesses", "/console/jobs?type=businesses"),
        ("jobs, partner (2 000 jobs)", f"/console/jobs?partner={heavy}"),
        ("jobs, status+type+partner", f"/console/jobs?status=cancelled&type=customers&partner={heavy}"),
        ("jobs, a page in the middle", f"/console/jobs?after={middle}"),
        ("jobs, the page before it", f"/console/jobs?before={middle}"),
        ("find a job by id (303)", f"/console/jobs?id={middle}"),
        ("job, 50 000 records", f"/console/jobs/{loaded.big_job}"),
        ("job, next failed results", results_page.replace("&amp;", "&") or f"/console/jobs/{loaded.big_job}"),
        ("job, live fragment", f"/console/live/jobs/{loaded.big_job}"),
        ("job, running", f"/console/jobs/{loaded.running_job}"),
        ("job, 50 records", f"/console/jobs/{loaded.small_job}"),
        ("partners", "/console/partners"),
        ("partners, live fragment", "/console/live/partners"),
        ("partner (2 000 jobs)", f"/console/partners/{heavy}"),
        ("partner, live fragment", f"/console/live/partners/{heavy}"),
    ]


def downloads(loaded: Loaded, client: httpx.Client) -> dict[str, dict[str, float]]:
    """Time to the first byte and to the last of the big job's downloads."""
    measured = {}
    for name, path in (
        ("failed results, NDJSON", f"/console/jobs/{loaded.big_job}/results.ndjson?outcome=failed"),
        ("failed results, CSV", f"/console/jobs/{loaded.big_job}/results.csv?outcome=failed"),
        ("every result, NDJSON", f"/console/jobs/{loaded.big_job}/results.ndjson"),
    ):
        started = time.perf_counter()
        size = 0
        first = 0.0
        with client.stream("GET", path) as response:
            for part in response.iter_bytes():
                if not first:
                    first = time.perf_counter() - started
                size += len(part)
        measured[name] = {
            "first_byte_ms": round(first * 1000, 1),
            "total_ms": round((time.perf_counter() - started) * 1000, 1),
            "bytes": size,
        }
    return measured


def measure(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(exist_ok=True)
    servers = prepare_servers(RESULTS / "embedded")
    service = Service(servers, log_dir, api_workers=1, concurrency=1)
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": [round(x, 2) for x in os.getloadavg()],
        },  # fmt: skip
        "config": {"jobs": args.jobs, "results": args.results, "repeat": args.repeat, "api_workers": 1},
    }
    conninfo = _libpq(servers.database_url)
    try:
        with phase("migrating the scratch database", quiet):
            service.pfsync("migrate")
        with phase(f"loading {args.jobs} jobs and {args.results} results with COPY", quiet):
            loaded = load(conninfo, jobs=args.jobs, results=args.results)
        result["data"] = {
            "jobs": loaded.jobs,
            "chunks": loaded.chunks,
            "results": loaded.results,
            "partners": PARTNERS,
            "load_s": round(loaded.seconds, 1),
            "sizes": table_sizes(conninfo),
        }
        with phase("starting pfsync api and a worker", quiet):
            service.start(("api", "worker"))
        operator = orjson.loads(service.pfsync("operator", "create", "bench", "--role", "admin", "--json").stdout)
        with httpx.Client(base_url=service.url, timeout=60) as client:
            signed_in = client.post("/console/login", data={"username": "bench", "password": operator["password"]})
            if signed_in.status_code != 303:
                raise SystemExit(f"could not sign in: {signed_in.status_code} {signed_in.text[:200]}")
            client.get("/console/")  # the workers are asked from now on, in the background
            time.sleep(2)
            with httpx.Client(base_url=service.url, timeout=60) as anonymous:
                result["pages"] = {
                    "sign-in form": {"path": "/console/login", **time_get(anonymous, "/console/login", args.repeat)}
                }
            visits = pages(loaded, client)
            with phase(f"timing {len(visits)} pages, {args.repeat} times each", quiet):
                for name, path in visits:
                    result["pages"][name] = {"path": path, **time_get(client, path, args.repeat)}
            with phase("timing the downloads", quiet):
                result["downloads"] = downloads(loaded, client)
        if args.screenshots:
            from benchmarks.screenshots import take

            with phase(f"screenshots into {args.screenshots}", quiet):
                take(url=service.url, username="bench", password=operator["password"], job_id=loaded.big_job,
                     out=args.screenshots)  # fmt: skip
    finally:
        service.stop()
        servers.close(keep=args.keep)
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["slowest_p95_ms"] = max(page["p95_ms"] for page in result["pages"].values())
    result["met"] = all(
        page["p95_ms"] < TARGET_MS and page["status"] in (200, 303) for page in result["pages"].values()
    )
    return result


def table(result: dict[str, Any]) -> str:
    data = result["data"]
    lines = [
        f"{data['jobs']:,} jobs, {data['chunks']:,} chunks, {data['results']:,} results, {data['partners']} partners "
        f"(loaded in {data['load_s']} s; {', '.join(f'{k} {v}' for k, v in data['sizes'].items())})",
        "",
        "| page | status | p50 | p95 | max | size |",
        "|---|---|---|---|---|---|",
    ]
    for name, page in result["pages"].items():
        lines.append(
            f"| {name} | {page['status']} | {page['p50_ms']:.0f} ms | {page['p95_ms']:.0f} ms "
            f"| {page['max_ms']:.0f} ms | {page['bytes'] / 1024:.0f} KiB |"
        )
    lines += ["", "| download (the 50 000-record job) | first byte | whole | size |", "|---|---|---|---|"]
    for name, download in result["downloads"].items():
        lines.append(
            f"| {name} | {download['first_byte_ms']:.0f} ms | {download['total_ms']:.0f} ms "
            f"| {download['bytes'] / 2**20:.1f} MiB |"
        )
    machine = result["machine"]
    lines += [
        "",
        f"Slowest p95: {result['slowest_p95_ms']:.0f} ms (target < {TARGET_MS:.0f} ms): "
        f"{'met' if result['met'] else 'NOT MET'}. {machine['cpus']} CPUs; load average before "
        f"{machine['load_before']}, after {machine['load_after']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="console", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to load (default 10000)")
    parser.add_argument("--results", type=int, default=1_000_000, help="results to load (default 1000000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per page (default 20)")
    parser.add_argument("--screenshots", type=Path, help="also take the docs' screenshots into this folder")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON document")
    args = parser.parse_args(argv)
    if args.jobs < 100 or args.results < BIG_JOBS * BIG_JOB_RECORDS + args.jobs:
        parser.error(f"at least 100 jobs, and results enough for {BIG_JOBS} jobs of {BIG_JOB_RECORDS} and 1 per job")
    result = measure(args)
    document = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    (RESULTS / "console.json").write_text(document + "\n")
    if not args.json_only:
        print(table(result), file=sys.stderr)
        print(file=sys.stderr)
    print(document)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
