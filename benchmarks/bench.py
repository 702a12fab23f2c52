"""The performance benchmark: the service end to end, side by side with the database's own ceiling, in one run.

    make bench                     # or: python -m benchmarks.bench [--records N] [--json-only]

It creates a scratch database on `DATABASE_URL`'s server (default: the machine's PostgreSQL at 127.0.0.1; the
embedded one when no server answers), uses `REDIS_URL` (a queue of its own) or else a spare, empty database of the
machine's Redis at 127.0.0.1:6379 (or an embedded Redis), starts the real processes (`pfsync api`, `pfsync
worker`, `pfsync scheduler`) on them, each with its defaults, and measures:

- the ceiling: the same customer rows written by COPY into a temporary table, then one
  `INSERT … SELECT … ON CONFLICT DO UPDATE`, create and replace;
- end to end: an HTTP POST of the batch until its job is `completed`, create and then replace; records/s and the
  ratio to the ceiling; the acceptance latency (POST → 202); `GET /jobs/{id}` latency while the job runs;
- single sync: requests/s, p50 and p99 under concurrent clients;
- peak RSS of the API and of the worker for a JSON body and for NDJSON bodies of two sizes;
- fairness: the time to completion of another partner's small job sent while a large job runs.

It prints a table and a JSON document, also written to benchmarks/results/latest.json, then drops the scratch
database; the exit status is 1 if a target of issue 6 is missed. Process logs are kept in benchmarks/results/logs/.
Method and figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import psycopg
import redis
from sqlalchemy.engine import make_url

from core.records.schemas import WRITABLE

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1/postgres"
DEFAULT_REDIS = ("127.0.0.1", 6379)
CUSTOMER_COLUMNS = WRITABLE["customers"]


# ---------------------------------------------------------------------------------------------------------------
# Data


def customers(count: int, *, version: int = 1, prefix: str = "c") -> list[dict[str, Any]]:
    """`count` customers keyed by external_id; another `version` changes every record (a replace of each)."""
    return [
        {
            "external_id": f"{prefix}-{i:07d}",
            "email_address": f"{prefix}{i}@example.com",
            "phone_number": f"+1 555 {i % 10_000:04d}",
            "full_name": f"Customer {i} v{version}",
            "metadata": {"tier": "gold" if i % 3 else "silver", "n": i, "version": version},
        }
        for i in range(count)
    ]


def json_body(records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"customers": records})


def ndjson_body(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + b"\n"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# ---------------------------------------------------------------------------------------------------------------
# Servers: a scratch database and a spare Redis database


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _libpq(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _with_database(url: str, name: str) -> str:
    """The same server's URL, naming another database."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@dataclass
class Servers:
    """Where the run's data lives; `close` drops the scratch database and clears what the run left in Redis."""

    admin_url: str
    database_url: str
    database_name: str
    redis_url: str
    queue: str
    # Whether the Redis database is the run's own (a spare or embedded one), which it may empty; else only the
    # run's queue is removed from it.
    owns_redis_db: bool
    embedded: list[str] = field(default_factory=list)
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def close(self, *, keep: bool) -> None:
        if not keep:
            with suppress(psycopg.Error), psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
            with suppress(redis.RedisError):
                client = redis.Redis.from_url(self.redis_url)
                if self.owns_redis_db:
                    client.flushdb()
                else:
                    client.delete(self.queue, f"_kombu.binding.{self.queue}")
                client.close()
        for cleanup in reversed(self._cleanups):
            with suppress(Exception):
                cleanup()


def prepare_servers(data_dir: Path) -> Servers:
    """A scratch database on DATABASE_URL's server (or the machine's, or an embedded one) and an empty Redis db."""
    cleanups: list[Callable[[], None]] = []
    embedded: list[str] = []
    admin = os.environ.get("DATABASE_URL")
    if admin is None and not _answers("127.0.0.1", 5432):
        from cli.embedded import ensure_postgres, stop_postgres

        admin = ensure_postgres(data_dir)
        cleanups.append(lambda: stop_postgres(data_dir))
        embedded.append("postgresql")
    admin = _libpq(admin or DEFAULT_DATABASE_URL)
    name = f"pfsync_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = _with_database(admin, name)

    redis_url = os.environ.get("REDIS_URL")
    owns_redis_db = redis_url is None
    if redis_url is None:
        if _answers(*DEFAULT_REDIS):
            redis_url = _spare_redis_db()
        else:
            from cli.embedded import EmbeddedRedis

            server = EmbeddedRedis(data_dir)
            redis_url = server.start()
            cleanups.append(server.stop)
            embedded.append("redis")
    queue = f"pfsync-bench-{uuid.uuid4().hex[:6]}"
    return Servers(admin, database_url, name, redis_url, queue, owns_redis_db, embedded, cleanups)


def _spare_redis_db() -> str:
    """The highest-numbered empty database of the machine's Redis (the test suites use the low ones)."""
    host, port = DEFAULT_REDIS
    for db in range(15, 0, -1):
        client = redis.Redis(host=host, port=port, db=db)
        try:
            if client.dbsize() == 0:
                return f"redis://{host}:{port}/{db}"
        finally:
            client.close()
    raise SystemExit("no empty Redis database on 127.0.0.1:6379; set REDIS_URL")


# ---------------------------------------------------------------------------------------------------------------
# The ceiling: COPY into a temporary table, then INSERT … SELECT … ON CONFLICT DO UPDATE


def _ceiling_rows(records: list[dict[str, Any]], ids: list[str]) -> list[tuple[Any, ...]]:
    return [
        (
            row_id,
            r["external_id"],
            r["email_address"],
            r["phone_number"],
            r["full_name"],
            orjson.dumps(r["metadata"]).decode(),
        )
        for row_id, r in zip(ids, records, strict=True)
    ]


def ceiling_upsert(conninfo: str, *, partner_id: str, business_id: str, rows: list[tuple[Any, ...]], seq: int) -> float:
    """Write `rows` into `customers` the fastest set-based way PostgreSQL offers; return rows/s."""
    with psycopg.connect(conninfo) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE ceiling_stage (id text, external_id text, email_address text, phone_number text, "
                "full_name text, metadata jsonb) ON COMMIT DROP"
            )
            with cur.copy("COPY ceiling_stage FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                "INSERT INTO customers (id, business_id, partner_id, external_id, email_address, phone_number, "
                " full_name, metadata, last_seq) "
                "SELECT id, %(business)s, %(partner)s, external_id, email_address, phone_number, full_name, metadata, "
                " %(seq)s FROM ceiling_stage "
                "ON CONFLICT (business_id, external_id) DO UPDATE SET email_address = EXCLUDED.email_address, "
                " phone_number = EXCLUDED.phone_number, full_name = EXCLUDED.full_name, metadata = EXCLUDED.metadata, "
                " updated_at = now(), last_seq = EXCLUDED.last_seq WHERE customers.last_seq <= EXCLUDED.last_seq",
                {"business": business_id, "partner": partner_id, "seq": seq},
            )
            assert cur.rowcount == len(rows), cur.rowcount
        conn.commit()
        return len(rows) / (time.perf_counter() - started)


def measure_ceiling(conninfo: str, count: int) -> dict[str, float]:
    """Create, then replace, `count` customers of a business of their own."""
    from core import ids

    partner_id, business_id = ids.new_id(ids.PARTNER), ids.new_id(ids.BUSINESS)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("INSERT INTO partners (id, name) VALUES (%s, 'ceiling')", (partner_id,))
        conn.execute(
            "INSERT INTO businesses (id, partner_id, external_id, name) VALUES (%s, %s, 'ceiling', 'ceiling')",
            (business_id, partner_id),
        )
    row_ids = ids.new_ids(ids.CUSTOMER, count)
    created = _ceiling_rows(customers(count, version=1), row_ids)
    replaced = _ceiling_rows(customers(count, version=2), row_ids)
    create = ceiling_upsert(conninfo, partner_id=partner_id, business_id=business_id, rows=created, seq=1)
    replace = ceiling_upsert(conninfo, partner_id=partner_id, business_id=business_id, rows=replaced, seq=2)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE customers")
    return {"create_rows_per_s": create, "replace_rows_per_s": replace}


# ---------------------------------------------------------------------------------------------------------------
# The service's processes


class Service:
    """`pfsync api`, `pfsync worker` and `pfsync scheduler`, each in its own process group, logs in files."""

    def __init__(self, servers: Servers, log_dir: Path, *, api_workers: int | None, concurrency: int | None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.env = dict(os.environ)
        self.env.update(
            DATABASE_URL=servers.database_url,
            REDIS_URL=servers.redis_url,
            PFSYNC_QUEUE_NAME=servers.queue,
            PYTHONUNBUFFERED="1",
            # The clients here measure the service's speed, not a partner's request budget (SPEC §8).
            PFSYNC_RATE_LIMIT_PER_SECOND="0",
        )
        self.api_args = ["api", "--host", "127.0.0.1", "--port", str(self.port)]
        if api_workers is not None:
            self.api_args += ["--workers", str(api_workers)]
        self.worker_args = ["worker"] + (["--concurrency", str(concurrency)] if concurrency is not None else [])
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def pfsync(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args], cwd=ROOT, env=self.env, capture_output=True, check=True, timeout=120
        )

    def start(self, names: tuple[str, ...] = ("api", "worker", "scheduler")) -> None:
        """Start the processes `names` (by default all three) and wait until the API is ready and any worker
        consumes the queue."""
        commands = {"api": self.api_args, "worker": self.worker_args, "scheduler": ["scheduler"]}
        for name, args in ((name, commands[name]) for name in names):
            log = (self.log_dir / f"{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "cli", *args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited ({process.returncode}); see {self.log_dir / name}.log")
            with suppress(httpx.HTTPError):
                ready = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
                if ready and ("worker" not in names or self._worker_ready()):
                    return
            if time.monotonic() > deadline:
                raise SystemExit(f"the service did not become ready; see {self.log_dir}")
            time.sleep(0.2)

    def _worker_ready(self) -> bool:
        # Celery logs "ready." once its pool is up and it consumes the queue.
        return b"ready." in (self.log_dir / "worker.log").read_bytes()

    def tree(self, name: str) -> list[psutil.Process]:
        """The process and all its descendants."""
        try:
            root = psutil.Process(self.processes[name].pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        for process in self.processes.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PeakRSS:
    """Peak resident memory of process trees while a block runs.

    A process's peak is the kernel's high-water mark (VmHWM, reset through /proc/PID/clear_refs at the start),
    exact and free to read; a tree's is the largest sum of its processes' RSS, sampled every 50 ms from
    /proc/PID/statm (the processes listed once at the start: the sampling must not steal the CPU it measures).
    """

    def __init__(self, service: Service, names: tuple[str, ...]) -> None:
        self.names = names
        self.trees = {name: [p.pid for p in service.tree(name)] for name in names}
        self._process_peak: dict[str, int] = dict.fromkeys(names, 0)
        self._tree_peak: dict[str, int] = dict.fromkeys(names, 0)
        self._hwm_reset = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRSS:
        for pids in self.trees.values():
            for pid in pids:
                try:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
                except OSError:
                    self._hwm_reset = False
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        for name, pids in self.trees.items():
            for pid in pids:
                with suppress(OSError, ValueError):
                    # Without a reset, VmHWM is the peak since the process started: use the samples only.
                    peak = _vm_hwm(pid) if self._hwm_reset else _rss(pid)
                    self._process_peak[name] = max(self._process_peak[name], peak)

    def _sample(self) -> None:
        for name, pids in self.trees.items():
            total = 0
            for pid in pids:
                with suppress(OSError, ValueError):
                    rss = _rss(pid)
                    total += rss
                    self._process_peak[name] = max(self._process_peak[name], rss)
            self._tree_peak[name] = max(self._tree_peak[name], total)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def mb(self, name: str) -> dict[str, float]:
        """{"process": largest single process, "tree": the whole tree} in MB."""
        return {
            "process": round(self._process_peak[name] / 2**20, 1),
            "tree": round(self._tree_peak[name] / 2**20, 1),
        }


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_SIZE


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The API as a client sees it


@dataclass
class Partner:
    partner_id: str
    key_id: str
    secret: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.key_id, self.secret)


def new_partner(service: Service, name: str) -> Partner:
    out = service.pfsync("partner", "create", name, "--json").stdout
    document = orjson.loads(out.strip().splitlines()[-1])
    return Partner(document["partner_id"], document["key_id"], document["secret"])


def new_business(client: httpx.Client, external_id: str) -> str:
    response = client.post("/sync/businesses", json={"external_id": external_id, "name": f"Business {external_id}"})
    response.raise_for_status()
    business_id: str = response.json()["id"]
    return business_id


@dataclass
class JobRun:
    """One batch from POST to `completed`."""

    records: int
    acceptance_s: float
    total_s: float
    job: dict[str, Any]
    poll_ms: list[float]

    @property
    def records_per_s(self) -> float:
        return self.records / self.total_s


def run_job(
    client: httpx.Client, business_id: str, body: bytes, *, records: int, ndjson: bool, poll_interval: float = 0.05
) -> JobRun:
    """POST a batch and poll `GET /jobs/{id}` until it is finished; time both."""
    headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
    started = time.perf_counter()
    response = client.post(f"/sync/businesses/{business_id}/customers/batch", content=body, headers=headers)
    accepted = time.perf_counter()
    if response.status_code != 202:
        raise SystemExit(f"batch refused: {response.status_code} {response.text[:500]}")
    job_id = response.json()["id"]
    poll_ms: list[float] = []
    while True:
        before = time.perf_counter()
        job = client.get(f"/jobs/{job_id}").json()
        after = time.perf_counter()
        poll_ms.append((after - before) * 1000)
        if job["status"] in ("completed", "cancelled", "failed"):
            break
        time.sleep(max(0.0, poll_interval - (after - before)))
    if job["status"] != "completed" or job["counts"]["processed"] != records:
        raise SystemExit(f"job {job_id} ended {job['status']}: {job['counts']}")
    return JobRun(records, accepted - started, after - started, job, poll_ms)


def single_sync_load(
    url: str, partner: Partner, business_id: str, *, clients: int, seconds: float, warmup: float = 1.0
) -> dict[str, float]:
    """`clients` threads, each one keep-alive connection syncing one new customer after the other."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    measuring = threading.Event()
    stop = threading.Event()

    def client_loop(n: int) -> None:
        with httpx.Client(base_url=url, auth=partner.auth, timeout=30) as client:
            path = f"/sync/businesses/{business_id}/customers"
            i = 0
            start.wait()
            while not stop.is_set():
                i += 1
                record = {
                    "external_id": f"single-{n}-{i}",
                    "email_address": f"single{n}.{i}@example.com",
                    "full_name": f"Single {n} {i}",
                    "metadata": {"n": i},
                }
                before = time.perf_counter()
                response = client.post(path, content=orjson.dumps(record), headers={"Content-Type": "application/json"})
                elapsed = time.perf_counter() - before
                if measuring.is_set() and not stop.is_set():
                    if response.status_code == 200:
                        latencies[n].append(elapsed * 1000)
                    else:
                        errors[n] += 1

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(warmup)
    measuring.set()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - began
    for thread in threads:
        thread.join()
    every = [ms for per_client in latencies for ms in per_client]
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(every),
        "errors": sum(errors),
        "requests_per_s": len(every) / elapsed,
        "p50_ms": percentile(every, 50),
        "p99_ms": percentile(every, 99),
    }


# ---------------------------------------------------------------------------------------------------------------
# The run


@contextmanager
def phase(name: str, quiet: bool) -> Iterator[None]:
    started = time.perf_counter()
    if not quiet:
        print(f"· {name}…", file=sys.stderr, flush=True)
    yield
    if not quiet:
        print(f"  {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    n = args.records
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    servers = prepare_servers(RESULTS / "embedded")
    service = Service(servers, log_dir, api_workers=args.api_workers, concurrency=args.concurrency)
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": [round(x, 2) for x in load_before],
        },
        "config": {
            "records": n,
            "fairness_large_records": args.fair_records,
            "single_sync_clients": args.clients,
            "single_sync_seconds": args.seconds,
            "api_workers": args.api_workers or "default",
            "worker_concurrency": args.concurrency or "default",
            "embedded": servers.embedded,
        },
    }
    try:
        with phase("migrating the scratch database", quiet):
            service.pfsync("migrate")
        with phase(f"ceiling: COPY + INSERT … ON CONFLICT of {n} customers", quiet):
            result["ceiling"] = measure_ceiling(_libpq(servers.database_url), n)
        with phase("starting pfsync api, worker and scheduler", quiet):
            service.start()
        result["end_to_end"] = {}
        result["rss_mb"] = {}
        partner = new_partner(service, "Bench Partner")
        other = new_partner(service, "Other Partner")
        with (
            httpx.Client(base_url=service.url, auth=partner.auth, timeout=120) as client,
            httpx.Client(base_url=service.url, auth=other.auth, timeout=120) as other_client,
        ):
            # NDJSON first, on fresh processes, so its peaks are not those a whole JSON document left behind.
            for count in (n // 2, n):
                business_id = new_business(client, f"ndjson-{count}")
                body = ndjson_body(customers(count))
                with phase(f"NDJSON batch of {count} customers ({len(body) / 2**20:.1f} MiB)", quiet):
                    with PeakRSS(service, ("api", "worker")) as peaks:
                        run = run_job(client, business_id, body, records=count, ndjson=True)
                    label = f"ndjson_{count // 1000}k"
                    result["rss_mb"][f"api_{label}"] = peaks.mb("api")
                    result["rss_mb"][f"worker_{label}"] = peaks.mb("worker")
                    result["end_to_end"][f"create_{label}"] = _run_summary(run, result["ceiling"]["create_rows_per_s"])

            business_id = new_business(client, "json")
            for action, version in (("create", 1), ("replace", 2)):
                body = json_body(customers(n, version=version))
                with phase(f"JSON batch of {n} customers, {action} ({len(body) / 2**20:.1f} MiB)", quiet):
                    with PeakRSS(service, ("api", "worker")) as peaks:
                        run = run_job(client, business_id, body, records=n, ndjson=False)
                    expected = "created" if action == "create" else "replaced"
                    if run.job["counts"][expected] != n:
                        raise SystemExit(f"{action}: expected {n} {expected}, got {run.job['counts']}")
                    result["end_to_end"][action] = _run_summary(run, result["ceiling"][f"{action}_rows_per_s"])
                    result["rss_mb"][f"api_json_{action}"] = peaks.mb("api")
                    result["rss_mb"][f"worker_json_{action}"] = peaks.mb("worker")

            with phase(f"fairness: 100 records of another partner during {args.fair_records}", quiet):
                result["fairness"] = fairness(client, other_client, args.fair_records)

            business_id = new_business(client, "single")
            with phase(f"single sync, {args.clients} clients, {args.seconds:g} s", quiet):
                result["single_sync"] = single_sync_load(
                    service.url, partner, business_id, clients=args.clients, seconds=args.seconds
                )
    finally:
        service.stop()
        servers.close(keep=args.keep)
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = judge(result)
    return result


def _run_summary(run: JobRun, ceiling: float) -> dict[str, Any]:
    return {
        "records": run.records,
        "acceptance_s": round(run.acceptance_s, 3),
        "total_s": round(run.total_s, 3),
        "records_per_s": round(run.records_per_s),
        "ratio_to_ceiling": round(run.records_per_s / ceiling, 3),
        "get_job_p50_ms": round(percentile(run.poll_ms, 50), 2),
        "get_job_p99_ms": round(percentile(run.poll_ms, 99), 2),
        "get_job_samples": len(run.poll_ms),
    }


def fairness(client: httpx.Client, other_client: httpx.Client, large: int) -> dict[str, Any]:
    """Another partner's 100-record job, sent once a large job is running: its time from POST to `completed`."""
    big_business = new_business(client, "fair-large")
    small_business = new_business(other_client, "fair-small")
    big_body = json_body(customers(large, prefix="big"))
    small_body = json_body(customers(100, prefix="small"))
    response = client.post(f"/sync/businesses/{big_business}/customers/batch", content=big_body,
                           headers={"Content-Type": "application/json"})  # fmt: skip
    response.raise_for_status()
    big_id = response.json()["id"]
    while (big := client.get(f"/jobs/{big_id}").json())["counts"]["processed"] == 0:
        time.sleep(0.02)
    small = run_job(other_client, small_business, small_body, records=100, ndjson=False, poll_interval=0.02)
    big_processed_at_small_done = client.get(f"/jobs/{big_id}").json()["counts"]["processed"]
    while (big := client.get(f"/jobs/{big_id}").json())["status"] not in ("completed", "cancelled", "failed"):
        time.sleep(0.05)
    return {
        "small_job_s": round(small.total_s, 3),
        "small_job_acceptance_s": round(small.acceptance_s, 3),
        "large_job_records": large,
        "large_job_processed_when_small_done": big_processed_at_small_done,
        "large_job_status": big["status"],
    }


def judge(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure of issue 6 against its target."""
    e2e = result["end_to_end"]
    rss = result["rss_mb"]
    single = result["single_sync"]
    ndjson = sorted((k for k in rss if k.startswith("api_ndjson_")), key=lambda k: int(k.split("_")[-1][:-1]))
    ndjson_growth = rss[ndjson[-1]]["process"] - rss[ndjson[0]]["process"] if len(ndjson) >= 2 else 0.0
    acceptance = max(e2e["create"]["acceptance_s"], e2e["replace"]["acceptance_s"])
    polls = max(e2e["create"]["get_job_p50_ms"], e2e["replace"]["get_job_p50_ms"])
    worker_peak = max(v["tree"] for k, v in rss.items() if k.startswith("worker_"))
    small_job = result["fairness"]["small_job_s"]
    rows: list[tuple[str, float, str, bool]] = [
        ("end to end create ÷ ceiling", e2e["create"]["ratio_to_ceiling"], "≥ 0.35",
         e2e["create"]["ratio_to_ceiling"] >= 0.35),
        ("end to end replace ÷ ceiling", e2e["replace"]["ratio_to_ceiling"], "≥ 0.35",
         e2e["replace"]["ratio_to_ceiling"] >= 0.35),
        ("acceptance of the JSON batch, POST → 202 (s)", acceptance, "≤ 3", acceptance <= 3),
        ("GET /jobs/{id} p50 while running (ms)", polls, "≤ 20", polls <= 20),
        ("single sync requests/s", round(single["requests_per_s"]), "≥ 500", single["requests_per_s"] >= 500),
        ("single sync p99 (ms)", round(single["p99_ms"], 1), "≤ 100", single["p99_ms"] <= 100),
        ("worker peak RSS, whole process tree (MB)", worker_peak, "≤ 400", worker_peak <= 400),
        ("API peak RSS, NDJSON 100k − 50k records (MB)", round(ndjson_growth, 1), "flat (≤ 10)", ndjson_growth <= 10),
        ("other partner's 100-record job, POST → completed (s)", small_job, "≤ 5", small_job <= 5),
    ]  # fmt: skip
    return [{"figure": f, "value": v, "target": t, "met": ok} for f, v, t, ok in rows]


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table, then the targets."""
    c = result["ceiling"]
    e2e = result["end_to_end"]
    s = result["single_sync"]
    lines = [
        "| figure | value |",
        "|---|---|",
        f"| ceiling, create (COPY + INSERT … ON CONFLICT) | {c['create_rows_per_s']:,.0f} rows/s |",
        f"| ceiling, replace | {c['replace_rows_per_s']:,.0f} rows/s |",
    ]
    for name, run in e2e.items():
        lines.append(
            f"| end to end, {name.replace('_', ' ')} ({run['records']:,} records) | {run['records_per_s']:,} records/s "
            f"({run['ratio_to_ceiling']:.2f} × ceiling; {run['total_s']:.2f} s; "
            f"POST → 202 {run['acceptance_s']:.2f} s; "
            f"GET /jobs p50 {run['get_job_p50_ms']:.1f} ms, p99 {run['get_job_p99_ms']:.1f} ms) |"
        )
    lines.append(
        f"| single sync, {s['clients']} clients | {s['requests_per_s']:,.0f} requests/s, p50 {s['p50_ms']:.1f} ms, "
        f"p99 {s['p99_ms']:.1f} ms ({s['errors']} errors) |"
    )
    for name, peak in result["rss_mb"].items():
        label = name.replace("_", " ")
        lines.append(f"| peak RSS, {label} | {peak['process']:.0f} MB (whole process tree {peak['tree']:.0f} MB) |")
    f = result["fairness"]
    lines.append(
        f"| fairness: other partner's 100 records during a {f['large_job_records']:,}-record job | done in "
        f"{f['small_job_s']:.2f} s (the large job at {f['large_job_processed_when_small_done']:,}) |"
    )
    lines += ["", "| target (issue 6) | measured | target | met |", "|---|---|---|---|"]
    for row in result["targets"]:
        lines.append(f"| {row['figure']} | {row['value']} | {row['target']} | {'yes' if row['met'] else 'NO'} |")
    load = result["machine"]
    lines += ["", f"{load['cpus']} CPUs; load average before {load['load_before']}, after {load['load_after']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records of the large batches (default 100000)")
    parser.add_argument("--fair-records", type=int, default=50_000, help="the large job of the fairness run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent single-sync clients (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="single-sync measuring time (default 5)")
    parser.add_argument("--api-workers", type=int, help="pfsync api --workers (default: its own default)")
    parser.add_argument("--concurrency", type=int, help="pfsync worker --concurrency (default: its own default)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON document")
    args = parser.parse_args(argv)
    result = measure(args)
    document = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    (RESULTS / "latest.json").write_text(document + "\n")
    if not args.json_only:
        print(table(result))
        print()
    print(document)
    return 0 if all(row["met"] for row in result["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
