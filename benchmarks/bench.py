"""The performance benchmark: the service end to end, side by side with the database's own ceilings and a bare
peer, in one run.

    make bench                     # or: python -m benchmarks.bench [--records N] [--rounds N] [--json-only]
    make bench-scale               # or: python -m benchmarks.bench --scale [--max-rows N] (benchmarks/scale.py)
    python -m benchmarks.bench --dry-runs [--records N] [--rounds R]   (benchmarks/dry_runs.py)

It creates a scratch database on `DATABASE_URL`'s server (default: the machine's PostgreSQL at 127.0.0.1; the
embedded one when no server answers), uses `REDIS_URL` (a queue of its own) or else a spare, empty database of the
machine's Redis at 127.0.0.1:6379 (or an embedded Redis), starts the real processes (`pfsync api`, `pfsync
worker`, `pfsync scheduler`) on them, each with its defaults, and measures:

- two ceilings: the same customer rows written by COPY into a temporary table, then one
  `INSERT … SELECT … ON CONFLICT DO UPDATE`, create and replace, into `ceiling_rules` (only what the sync rules
  need: primary key, unique (business_id, external_id), unique (business_id, lower(email_address))) and into the
  service's own `customers` table; each 3 times, the tables taking turns, medians;
- end to end: an HTTP POST of the batch until its job is `completed`, create and then replace; records/s and the
  ratio to each ceiling; the acceptance latency (POST → 202); `GET /jobs/{id}` latency while the job runs; CPU
  time a record of the API, the worker and the scratch database's PostgreSQL backends;
- single sync: the same clients (threads with keep-alive httpx connections) against the service, against a bare
  FastAPI + psycopg route (benchmarks/peer.py, as many uvicorn processes as `pfsync api`) and against a second
  `pfsync api` whose partner budget is counted but set too high to be reached, taking turns: requests/s, p50,
  p99, CPU time a request, and the ratio of the service to the peer;
- single sync while another partner's business's batch is `running`, against the same idle: p99 ratio;
- peak RSS of the API and of the worker for a JSON body and for NDJSON bodies of two sizes;
- fairness: the time to completion of another partner's small job sent while a large job runs.

It prints a table and a JSON document, also written to benchmarks/results/latest.json (the single-sync latencies
to latencies.json), draws docs/perf-latency.png, then drops the scratch database; the exit status is 1 if a
target of issue 15 or 6 is missed. Process logs are kept in benchmarks/results/logs/. Method and figures:
docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
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

from benchmarks.peer import PEER_TABLE_DDL
from cli.serve import default_api_workers
from core.jobs.status import FINISHED
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
# The ceilings: COPY into a temporary table, then INSERT … SELECT … ON CONFLICT DO UPDATE, into two tables

# What the sync rules need and nothing else: the customers table's columns and types (LIKE copies no index), a
# primary key, the two unique keys. The service's own table adds a third index, (business_id, id), for the list of a
# business's customers (its two foreign keys, checked row by row, went with migration 0007).
RULES_TABLE = "ceiling_rules"
RULES_TABLE_DDL = (
    f"CREATE TABLE {RULES_TABLE} (LIKE customers INCLUDING DEFAULTS)",
    f"ALTER TABLE {RULES_TABLE} ADD PRIMARY KEY (id)",
    f"ALTER TABLE {RULES_TABLE} ADD UNIQUE (business_id, external_id)",
    f"CREATE UNIQUE INDEX {RULES_TABLE}_email ON {RULES_TABLE} (business_id, lower(email_address))",
)
OWN_TABLE = "customers"


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


def backend_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a PostgreSQL backend has used; NaN when its server is not on this machine."""
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return float("nan")
    return float(times.user + times.system)


def ceiling_upsert(
    conninfo: str, *, table: str, partner_id: str, business_id: str, rows: list[tuple[Any, ...]], seq: int
) -> tuple[float, float]:
    """Write `rows` into `table` the fastest set-based way PostgreSQL offers, in one transaction.

    Returns rows/s and the CPU time its PostgreSQL backend spent, in µs a row."""
    with psycopg.connect(conninfo) as conn:
        cpu_before = backend_cpu_seconds(conn.info.backend_pid)
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
                f"INSERT INTO {table} (id, business_id, partner_id, external_id, email_address, phone_number, "
                " full_name, metadata, last_seq) "
                "SELECT id, %(business)s, %(partner)s, external_id, email_address, phone_number, full_name, metadata, "
                " %(seq)s FROM ceiling_stage "
                "ON CONFLICT (business_id, external_id) DO UPDATE SET email_address = EXCLUDED.email_address, "
                " phone_number = EXCLUDED.phone_number, full_name = EXCLUDED.full_name, metadata = EXCLUDED.metadata, "
                f" updated_at = now(), last_seq = EXCLUDED.last_seq WHERE {table}.last_seq <= EXCLUDED.last_seq",
                {"business": business_id, "partner": partner_id, "seq": seq},
            )
            assert cur.rowcount == len(rows), cur.rowcount
        conn.commit()
        elapsed = time.perf_counter() - started
        cpu = backend_cpu_seconds(conn.info.backend_pid) - cpu_before
        return len(rows) / elapsed, cpu / len(rows) * 1e6


def _ceiling_business(conninfo: str, name: str) -> tuple[str, str]:
    """A partner and a business of their own for a ceiling's rows, as the service's own rows have."""
    from core import ids

    partner_id, business_id = ids.new_id(ids.PARTNER), ids.new_id(ids.BUSINESS)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("INSERT INTO partners (id, name) VALUES (%s, %s)", (partner_id, name))
        conn.execute(
            "INSERT INTO businesses (id, partner_id, external_id, name) VALUES (%s, %s, %s, %s)",
            (business_id, partner_id, name, name),
        )
    return partner_id, business_id


@dataclass
class Ceiling:
    """One create and one replace of the same rows: rows/s and PostgreSQL's CPU µs a row of each."""

    create: float
    replace: float
    create_cpu_us: float
    replace_cpu_us: float


def ceiling_once(conninfo: str, table: str, count: int) -> Ceiling:
    """Create, then replace, `count` customers of a new business in `table`."""
    from core import ids

    partner_id, business_id = _ceiling_business(conninfo, f"ceiling-{uuid.uuid4().hex[:8]}")
    row_ids = ids.new_ids(ids.CUSTOMER, count)
    created = _ceiling_rows(customers(count, version=1), row_ids)
    replaced = _ceiling_rows(customers(count, version=2), row_ids)
    create, create_cpu = ceiling_upsert(
        conninfo, table=table, partner_id=partner_id, business_id=business_id, rows=created, seq=1
    )
    replace, replace_cpu = ceiling_upsert(
        conninfo, table=table, partner_id=partner_id, business_id=business_id, rows=replaced, seq=2
    )
    return Ceiling(create, replace, create_cpu, replace_cpu)


def measure_ceilings(conninfo: str, count: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Both ceilings, `repeats` times each, the tables taking turns; each figure the median of its repeats."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in RULES_TABLE_DDL:
            conn.execute(statement)
    samples: dict[str, list[Ceiling]] = {"rules": [], "own_table": []}
    for i in range(repeats):
        order = (("rules", RULES_TABLE), ("own_table", OWN_TABLE))
        for name, table in order if i % 2 == 0 else reversed(order):
            samples[name].append(ceiling_once(conninfo, table, count))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {OWN_TABLE}")
        conn.execute(f"VACUUM ANALYZE {RULES_TABLE}")
    return {name: _ceiling_summary(runs) for name, runs in samples.items()}


def _ceiling_summary(runs: list[Ceiling]) -> dict[str, Any]:
    return {
        "create_rows_per_s": round(statistics.median(c.create for c in runs)),
        "replace_rows_per_s": round(statistics.median(c.replace for c in runs)),
        "create_samples": [round(c.create) for c in runs],
        "replace_samples": [round(c.replace) for c in runs],
        "postgres_cpu_us_per_row": {
            "create": round(statistics.median(c.create_cpu_us for c in runs), 1),
            "replace": round(statistics.median(c.replace_cpu_us for c in runs), 1),
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# The service's processes


class Service:
    """`pfsync api`, `pfsync worker` and `pfsync scheduler`, each in its own process group, logs in files."""

    def __init__(self, servers: Servers, log_dir: Path, *, api_workers: int | None, concurrency: int | None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.database = servers.database_name
        self.env = dict(os.environ)
        self.env.update(
            DATABASE_URL=servers.database_url,
            REDIS_URL=servers.redis_url,
            PFSYNC_QUEUE_NAME=servers.queue,
            PYTHONUNBUFFERED="1",
            # The clients here measure the service's speed, not a partner's request budget (SPEC §8).
            PFSYNC_RATE_LIMIT_PER_SECOND="0",
        )
        self.api_workers_args = ["--workers", str(api_workers)] if api_workers is not None else []
        self.api_args = ["api", "--host", "127.0.0.1", "--port", str(self.port), *self.api_workers_args]
        # What `pfsync api` runs: --workers, else its default (one process per CPU, at most 4; cli/serve.py).
        self.api_processes = api_workers or default_api_workers()
        self.worker_args = ["worker"] + (["--concurrency", str(concurrency)] if concurrency is not None else [])
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def pfsync(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args], cwd=ROOT, env=self.env, capture_output=True, check=True, timeout=120
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def _wait(self, names: tuple[str, ...], ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while True:
            for name in names:
                process = self.processes[name]
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited ({process.returncode}); see {self.log_dir / name}.log")
            with suppress(httpx.HTTPError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise SystemExit(f"{', '.join(names)} did not become ready; see {self.log_dir}")
            time.sleep(0.2)

    def start(self, names: tuple[str, ...] = ("api", "worker", "scheduler")) -> None:
        """Start the processes `names` (by default all three) and wait until the API is ready and any worker
        consumes the queue."""
        commands = {"api": self.api_args, "worker": self.worker_args, "scheduler": ["scheduler"]}
        for name in names:
            self._spawn(name, [sys.executable, "-m", "cli", *commands[name]], self.env)
        self._wait(
            names,
            lambda: (
                httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
                and ("worker" not in names or self._worker_ready())
            ),
        )

    def start_api(self, name: str, **env: str) -> str:
        """Another `pfsync api` on a port of its own, its environment that of the first with `env`; its URL."""
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["api", "--host", "127.0.0.1", "--port", str(port), *self.api_workers_args]
        self._spawn(name, [sys.executable, "-m", "cli", *args], {**self.env, **env})
        self._wait((name,), lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200)
        return url

    def start_peer(self, database_url: str) -> str:
        """benchmarks/peer.py under uvicorn, with as many processes as `pfsync api` runs; its URL."""
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            *(sys.executable, "-m", "uvicorn", "benchmarks.peer:app", "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(self.api_processes), "--no-access-log", "--no-server-header", "--log-level", "warning"),
        ]
        self._spawn("peer", argv, {**self.env, "PEER_DATABASE_URL": database_url})
        # Any answer (404 here) means uvicorn serves; its other processes get the load's warm-up to come up.
        self._wait(("peer",), lambda: httpx.get(f"{url}/ready", timeout=2).status_code == 404)
        return url

    def stop_one(self, name: str) -> None:
        process = self.processes.pop(name)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

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


class CpuMeter:
    """CPU time (user + system) process groups spend while a block runs: each group's processes listed at the start
    and again at the end (one that started in between counts from zero; one that ended in between is lost).

    The groups: the service's process trees by name, `client` (this process), and `postgres`, the backends of the
    scratch database (their process titles name it; none when the server is not on this machine).
    """

    def __init__(self, service: Service, names: tuple[str, ...], database: str | None) -> None:
        self.service = service
        self.names = names
        self.database = database
        self._start: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}

    def _processes(self, name: str) -> list[psutil.Process]:
        if name == "client":  # this process: the load's client threads (its main thread sleeps meanwhile)
            return [psutil.Process()]
        if name != "postgres":
            return self.service.tree(name)
        assert self.database is not None
        title = f" {self.database} "
        found = []
        for process in psutil.process_iter(["cmdline"]):
            with suppress(psutil.Error, TypeError):
                if title in " ".join(process.info["cmdline"] or ()):
                    found.append(process)
        return found

    def _snapshot(self) -> dict[str, dict[int, float]]:
        snapshot: dict[str, dict[int, float]] = {}
        for name in (*self.names, *(("postgres",) if self.database else ())):
            snapshot[name] = {}
            for process in self._processes(name):
                with suppress(psutil.Error):
                    times = process.cpu_times()
                    snapshot[name][process.pid] = times.user + times.system
        return snapshot

    def __enter__(self) -> CpuMeter:
        self._start = self._snapshot()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._snapshot()
        for name, pids in end.items():
            before = self._start.get(name, {})
            if not pids and not before:  # no such processes here (a server on another machine)
                continue
            self.seconds[name] = sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in pids.items())

    def per(self, count: int, unit: float) -> dict[str, float]:
        """Each group's CPU time for one of `count` things, in `unit`s of a second (1e6: µs)."""
        return {name: round(seconds / count * unit, 2) for name, seconds in self.seconds.items()} if count else {}


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
    client: httpx.Client,
    business_id: str,
    body: bytes,
    *,
    records: int,
    ndjson: bool,
    poll_interval: float = 0.05,
    dry_run: bool = False,
) -> JobRun:
    """POST a batch (a dry run, if asked) and poll `GET /jobs/{id}` until it is finished; time both."""
    headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
    params = {"dry_run": "true"} if dry_run else None
    started = time.perf_counter()
    response = client.post(
        f"/sync/businesses/{business_id}/customers/batch", content=body, headers=headers, params=params
    )
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


@dataclass
class LoadResult:
    """What one single-sync load measured: every measured request's latency, in ms."""

    target: str
    clients: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    header_seen: int = 0
    # CPU time each process group spent over the measured time (CpuMeter), in seconds.
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": len(self.latencies_ms),
            "errors": self.errors,
            "requests_per_s": round(self.requests_per_s, 1),
            "p50_ms": round(percentile(self.latencies_ms, 50), 2),
            "p99_ms": round(percentile(self.latencies_ms, 99), 2),
            "cpu_ms_per_request": {
                name: round(seconds / len(self.latencies_ms) * 1000, 3) for name, seconds in self.cpu_seconds.items()
            }
            if self.latencies_ms
            else {},
        }


def pooled(name: str, runs: list[LoadResult]) -> LoadResult:
    """Several loads of one target as one: their requests over their summed measuring time."""
    return LoadResult(
        target=name,
        clients=runs[0].clients,
        seconds=sum(r.seconds for r in runs),
        latencies_ms=[ms for r in runs for ms in r.latencies_ms],
        errors=sum(r.errors for r in runs),
        header_seen=sum(r.header_seen for r in runs),
        cpu_seconds={name: sum(r.cpu_seconds.get(name, 0.0) for r in runs) for name in runs[0].cpu_seconds},
    )


class SyncLoad:
    """`clients` threads, each with one keep-alive httpx connection, syncing one new customer after the other.

    The same client drives the service and the peer: only the URL, the path and the credentials differ. Requests
    run from `start()`; those sent after `measure()` and answered before `stop()` are measured (a non-200 answer
    counts as an error). `header` names a response field to count, to show what a run really exercised.
    """

    def __init__(
        self,
        target: str,
        url: str,
        path: str,
        *,
        auth: tuple[str, str] | None,
        clients: int,
        header: str | None = None,
    ) -> None:
        self.target = target
        self.url = url
        self.path = path
        self.auth = auth
        self.clients = clients
        self.header = header
        self.prefix = uuid.uuid4().hex[:6]
        self._latencies: list[list[float]] = [[] for _ in range(clients)]
        self._errors = [0] * clients
        self._seen = [0] * clients
        self._started = threading.Barrier(clients + 1)
        self._measuring = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(clients)]
        self._measure_at = 0.0

    def _loop(self, n: int) -> None:
        headers = {"Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, auth=self.auth, timeout=30) as client:
            i = 0
            self._started.wait()
            while not self._stop.is_set():
                i += 1
                key = f"{self.prefix}-{n}-{i}"
                record = {
                    "external_id": f"single-{key}",
                    "email_address": f"single.{key}@example.com",
                    "full_name": f"Single {n} {i}",
                    "metadata": {"n": i},
                }
                measured = self._measuring.is_set()
                before = time.perf_counter()
                response = client.post(self.path, content=orjson.dumps(record), headers=headers)
                elapsed = time.perf_counter() - before
                if measured and not self._stop.is_set():
                    if response.status_code == 200:
                        self._latencies[n].append(elapsed * 1000)
                    else:
                        self._errors[n] += 1
                    if self.header is not None and self.header in response.headers:
                        self._seen[n] += 1

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self._started.wait()

    def measure(self) -> None:
        self._measure_at = time.perf_counter()
        self._measuring.set()

    def stop(self) -> LoadResult:
        self._stop.set()
        elapsed = time.perf_counter() - self._measure_at if self._measuring.is_set() else 0.0
        for thread in self._threads:
            thread.join()
        return LoadResult(
            target=self.target,
            clients=self.clients,
            seconds=elapsed,
            latencies_ms=[ms for per_client in self._latencies for ms in per_client],
            errors=sum(self._errors),
            header_seen=sum(self._seen),
        )

    def timed(self, seconds: float, warmup: float = 1.0, cpu: CpuMeter | None = None) -> LoadResult:
        """Start, warm up unmeasured for `warmup` seconds, measure for `seconds`, stop; `cpu` meters the measured
        seconds."""
        self.start()
        time.sleep(warmup)
        self.measure()
        if cpu is None:
            time.sleep(seconds)
            return self.stop()
        with cpu:
            time.sleep(seconds)
        result = self.stop()
        result.cpu_seconds = dict(cpu.seconds)
        return result


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


# The per-partner request budget (PFSYNC_RATE_LIMIT_PER_SECOND) set too high to be reached: every request counted
# in Redis, none refused.
UNREACHABLE_BUDGET = "1000000"


def _machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": [round(x, 2) for x in load_before],
    }


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The whole `make bench` run: its figures, and the single-sync latencies (ms) of each load for the pictures."""
    quiet = args.json_only
    n = args.records
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    servers = prepare_servers(RESULTS / "embedded")
    service = Service(servers, log_dir, api_workers=args.api_workers, concurrency=args.concurrency)
    result: dict[str, Any] = {
        "machine": _machine(load_before),
        "config": {
            "records": n,
            "ceiling_repeats": args.ceiling_repeats,
            "fairness_large_records": args.fair_records,
            "single_sync_clients": args.clients,
            "single_sync_seconds": args.seconds,
            "single_sync_rounds": args.rounds,
            "api_workers": args.api_workers or "default",
            "api_processes": service.api_processes,
            "worker_concurrency": args.concurrency or "default",
            "embedded": servers.embedded,
        },
    }
    latencies: dict[str, list[float]] = {}
    if args.only == "single":
        return measure_single(args, servers, service, result)
    try:
        with phase("migrating the scratch database", quiet):
            service.pfsync("migrate")
        with phase(f"ceilings: COPY + INSERT … ON CONFLICT of {n} customers, {args.ceiling_repeats}× each", quiet):
            result["ceiling"] = measure_ceilings(_libpq(servers.database_url), n, args.ceiling_repeats)
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
                    result["end_to_end"][f"create_{label}"] = _run_summary(run, result["ceiling"], "create")

            business_id = new_business(client, "json")
            for action, version in (("create", 1), ("replace", 2)):
                body = json_body(customers(n, version=version))
                with phase(f"JSON batch of {n} customers, {action} ({len(body) / 2**20:.1f} MiB)", quiet):
                    with (
                        PeakRSS(service, ("api", "worker")) as peaks,
                        CpuMeter(service, ("api", "worker"), service.database) as cpu,
                    ):
                        run = run_job(client, business_id, body, records=n, ndjson=False)
                    expected = "created" if action == "create" else "replaced"
                    if run.job["counts"][expected] != n:
                        raise SystemExit(f"{action}: expected {n} {expected}, got {run.job['counts']}")
                    result["end_to_end"][action] = _run_summary(run, result["ceiling"], action)
                    result["end_to_end"][action]["cpu_us_per_record"] = cpu.per(n, 1e6)
                    result["rss_mb"][f"api_json_{action}"] = peaks.mb("api")
                    result["rss_mb"][f"worker_json_{action}"] = peaks.mb("worker")

            with phase(f"fairness: 100 records of another partner during {args.fair_records}", quiet):
                result["fairness"] = fairness(client, other_client, args.fair_records)

            business_id = new_business(client, "single")
            result["single_sync"], loads = _single_sync_beside_peer(servers, service, partner, business_id, args)

            with phase(f"single sync during another business's {n}-record batch", quiet):
                result["during_batch"], busy = during_batch(
                    service, partner, business_id, other_client, records=n, clients=args.clients
                )
            idle = loads["service"]
            result["during_batch"]["idle"] = idle.summary()
            result["during_batch"]["p99_ratio"] = round(percentile(busy.latencies_ms, 99) / idle.summary()["p99_ms"], 2)
            # What the single syncs cost the batch: its records/s under their load ÷ the JSON create's alone.
            result["during_batch"]["batch"]["ratio_to_create_alone"] = round(
                result["during_batch"]["batch"]["records_per_s"] / result["end_to_end"]["create"]["records_per_s"], 3
            )
            latencies = {
                "service, idle": idle.latencies_ms,
                "service, budget counted": loads["service_budget_on"].latencies_ms,
                "peer (FastAPI + psycopg)": loads["peer"].latencies_ms,
                f"service, during a {n:,}-record batch": busy.latencies_ms,
            }
    finally:
        service.stop()
        servers.close(keep=args.keep)
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = judge(result)
    return result, latencies


def _single_sync_beside_peer(
    servers: Servers, service: Service, partner: Partner, business_id: str, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, LoadResult]]:
    """Step 7: the bare peer and a second `pfsync api` with the budget counted started beside the service, the same
    client load against each in turn (`single_sync_phase`), then both stopped."""
    quiet = args.json_only
    with phase("starting the bare peer and a second pfsync api with the budget on", quiet):
        with psycopg.connect(_libpq(servers.database_url), autocommit=True) as conn:
            conn.execute(PEER_TABLE_DDL)
        peer_url = service.start_peer(_libpq(servers.database_url))
        budget_url = service.start_api("api-budget", PFSYNC_RATE_LIMIT_PER_SECOND=UNREACHABLE_BUDGET)
    with phase(
        f"single sync, {args.clients} clients, {args.seconds:g} s each: service, peer, service with the "
        f"budget on; {args.rounds} round(s)",
        quiet,
    ):
        found = single_sync_phase(service, partner, business_id, peer_url=peer_url, budget_url=budget_url, args=args)
    service.stop_one("peer")
    service.stop_one("api-budget")
    return found


def measure_single(
    args: argparse.Namespace, servers: Servers, service: Service, result: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """`--only single`: the single-sync phase alone (service, peer, service with the budget counted), on the same
    processes as the whole run; judged against its own target only."""
    quiet = args.json_only
    try:
        with phase("migrating the scratch database", quiet):
            service.pfsync("migrate")
        with phase("starting pfsync api, worker and scheduler", quiet):
            service.start()
        partner = new_partner(service, "Bench Partner")
        with httpx.Client(base_url=service.url, auth=partner.auth, timeout=120) as client:
            business_id = new_business(client, "single")
        result["single_sync"], loads = _single_sync_beside_peer(servers, service, partner, business_id, args)
    finally:
        service.stop()
        servers.close(keep=args.keep)
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    ratio = result["single_sync"]["service_to_peer"]
    result["targets"] = [
        {"issue": "15", "figure": "single sync requests/s, service ÷ bare peer", "value": ratio, "target": "≥ 0.75",
         "met": ratio >= 0.75},
    ]  # fmt: skip
    latencies = {
        "service, idle": loads["service"].latencies_ms,
        "service, budget counted": loads["service_budget_on"].latencies_ms,
        "peer (FastAPI + psycopg)": loads["peer"].latencies_ms,
    }
    return result, latencies


def single_sync_phase(
    service: Service, partner: Partner, business_id: str, *, peer_url: str, budget_url: str, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, LoadResult]]:
    """The same load against the service, the bare peer and the service with the budget counted, taking turns."""
    path = f"/sync/businesses/{business_id}/customers"
    # Each target: its URL, path, credentials and the process tree that serves it (its CPU time is metered).
    targets: dict[str, tuple[str, str, tuple[str, str] | None, str]] = {
        "service": (service.url, path, partner.auth, "api"),
        "peer": (peer_url, "/customers", None, "peer"),
        "service_budget_on": (budget_url, path, partner.auth, "api-budget"),
    }
    runs: dict[str, list[LoadResult]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (url, target_path, auth, server) in targets.items():
            load = SyncLoad(name, url, target_path, auth=auth, clients=args.clients, header="ratelimit")
            meter = CpuMeter(service, (server, "client"), service.database)
            runs[name].append(load.timed(args.seconds, cpu=meter))
    loads = {name: pooled(name, rs) for name, rs in runs.items()}
    service_, peer, budget = (loads[name].summary() for name in targets)
    document: dict[str, Any] = {
        "service": service_,
        "peer": peer,
        "service_budget_on": budget,
        "service_to_peer": round(service_["requests_per_s"] / peer["requests_per_s"], 3),
        "budget_cost": {
            "limit_per_second": int(UNREACHABLE_BUDGET),
            "requests_per_s_ratio": round(budget["requests_per_s"] / service_["requests_per_s"], 3),
            "p50_ms_added": round(budget["p50_ms"] - service_["p50_ms"], 2),
            "p99_ms_added": round(budget["p99_ms"] - service_["p99_ms"], 2),
            # Answers carrying `RateLimit` (Redis asked); those of the service with the budget off carry none.
            "answers_with_ratelimit_field": loads["service_budget_on"].header_seen,
            "answers_with_ratelimit_field_budget_off": loads["service"].header_seen,
        },
        "per_round": {name: [r.summary() for r in rs] for name, rs in runs.items()},
    }
    return document, loads


def during_batch(
    service: Service, partner: Partner, business_id: str, other_client: httpx.Client, *, records: int, clients: int
) -> tuple[dict[str, Any], LoadResult]:
    """Single syncs measured from the moment another partner's business's batch is `running` until it completes."""
    big_business = new_business(other_client, "busy")
    body = json_body(customers(records, prefix="busy"))
    load = SyncLoad(
        "service_during_batch", service.url, f"/sync/businesses/{business_id}/customers", auth=partner.auth,
        clients=clients,
    )  # fmt: skip
    started = time.perf_counter()
    response = other_client.post(
        f"/sync/businesses/{big_business}/customers/batch", content=body, headers={"Content-Type": "application/json"}
    )
    if response.status_code != 202:
        raise SystemExit(f"batch refused: {response.status_code} {response.text[:500]}")
    accepted = time.perf_counter()
    job_id = response.json()["id"]
    load.start()
    running_at = None
    while True:
        job = other_client.get(f"/jobs/{job_id}").json()
        if job["status"] == "running" and running_at is None:
            running_at = time.perf_counter()
            load.measure()
        if job["status"] in FINISHED:
            break
        time.sleep(0.02)
    finished = time.perf_counter()
    busy = load.stop()
    if running_at is None or job["status"] != "completed":
        raise SystemExit(f"job {job_id} ended {job['status']} (running seen: {running_at is not None})")
    return {
        "during": busy.summary(),
        "batch": {
            "records": records,
            "acceptance_s": round(accepted - started, 3),
            "running_s": round(finished - running_at, 3),
            "total_s": round(finished - started, 3),
            "records_per_s": round(records / (finished - started)),
        },
    }, busy


def _run_summary(run: JobRun, ceilings: dict[str, dict[str, Any]], action: str) -> dict[str, Any]:
    rules = ceilings["rules"][f"{action}_rows_per_s"]
    own = ceilings["own_table"][f"{action}_rows_per_s"]
    return {
        "records": run.records,
        "acceptance_s": round(run.acceptance_s, 3),
        "total_s": round(run.total_s, 3),
        "records_per_s": round(run.records_per_s),
        "ratio_to_rules_ceiling": round(run.records_per_s / rules, 3),
        "ratio_to_own_table_ceiling": round(run.records_per_s / own, 3),
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
    while (big := client.get(f"/jobs/{big_id}").json())["status"] not in FINISHED:
        time.sleep(0.05)
    return {
        "small_job_s": round(small.total_s, 3),
        "small_job_acceptance_s": round(small.acceptance_s, 3),
        "large_job_records": large,
        "large_job_processed_when_small_done": big_processed_at_small_done,
        "large_job_status": big["status"],
    }


def judge(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure against its target: those of issue 15, then those of issue 6 it must not lose."""
    e2e = result["end_to_end"]
    rss = result["rss_mb"]
    single = result["single_sync"]
    service = single["service"]
    ndjson = sorted((k for k in rss if k.startswith("api_ndjson_")), key=lambda k: int(k.split("_")[-1][:-1]))
    ndjson_growth = rss[ndjson[-1]]["process"] - rss[ndjson[0]]["process"] if len(ndjson) >= 2 else 0.0
    acceptance = max(e2e["create"]["acceptance_s"], e2e["replace"]["acceptance_s"])
    polls = max(e2e["create"]["get_job_p50_ms"], e2e["replace"]["get_job_p50_ms"])
    worker_peak = max(v["tree"] for k, v in rss.items() if k.startswith("worker_"))
    small_job = result["fairness"]["small_job_s"]
    create, replace = e2e["create"], e2e["replace"]
    busy = result["during_batch"]["p99_ratio"]
    rows: list[tuple[str, str, float, str, bool]] = [
        ("15", "end to end create ÷ rules' ceiling", create["ratio_to_rules_ceiling"], "≥ 0.45",
         create["ratio_to_rules_ceiling"] >= 0.45),
        ("15", "end to end replace ÷ rules' ceiling", replace["ratio_to_rules_ceiling"], "≥ 0.6",
         replace["ratio_to_rules_ceiling"] >= 0.6),
        ("15", "single sync requests/s, service ÷ bare peer", single["service_to_peer"], "≥ 0.75",
         single["service_to_peer"] >= 0.75),
        ("15", "single sync p99 during a batch ÷ idle", busy, "≤ 2", busy <= 2),
        ("6", "end to end create ÷ own table's ceiling", create["ratio_to_own_table_ceiling"], "≥ 0.35",
         create["ratio_to_own_table_ceiling"] >= 0.35),
        ("6", "end to end replace ÷ own table's ceiling", replace["ratio_to_own_table_ceiling"], "≥ 0.35",
         replace["ratio_to_own_table_ceiling"] >= 0.35),
        ("6", "acceptance of the JSON batch, POST → 202 (s)", acceptance, "≤ 3", acceptance <= 3),
        ("6", "GET /jobs/{id} p50 while running (ms)", polls, "≤ 20", polls <= 20),
        ("6", "single sync requests/s", round(service["requests_per_s"]), "≥ 500", service["requests_per_s"] >= 500),
        ("6", "single sync p99 (ms)", round(service["p99_ms"], 1), "≤ 100", service["p99_ms"] <= 100),
        ("6", "worker peak RSS, whole process tree (MB)", worker_peak, "≤ 400", worker_peak <= 400),
        ("6", "API peak RSS, NDJSON 100k − 50k records (MB)", round(ndjson_growth, 1), "flat (≤ 10)",
         ndjson_growth <= 10),
        ("6", "other partner's 100-record job, POST → completed (s)", small_job, "≤ 5", small_job <= 5),
    ]  # fmt: skip
    return [{"issue": i, "figure": f, "value": v, "target": t, "met": ok} for i, f, v, t, ok in rows]


def _load_line(name: str, s: dict[str, Any]) -> str:
    return (
        f"| {name} | {s['requests_per_s']:,.0f} requests/s, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms "
        f"({s['requests']:,} requests in {s['seconds']:.1f} s, {s['errors']} errors) |"
    )


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table, then the targets."""
    rules, own = result["ceiling"]["rules"], result["ceiling"]["own_table"]
    e2e = result["end_to_end"]
    single = result["single_sync"]
    busy = result["during_batch"]
    cost = single["budget_cost"]
    clients = single["service"]["clients"]
    lines = [
        "| figure | value |",
        "|---|---|",
        f"| rules' ceiling, create / replace (COPY + INSERT … ON CONFLICT into `{RULES_TABLE}`) | "
        f"{rules['create_rows_per_s']:,} / {rules['replace_rows_per_s']:,} rows/s |",
        f"| own table's ceiling, create / replace (the same into `customers`) | "
        f"{own['create_rows_per_s']:,} / {own['replace_rows_per_s']:,} rows/s |",
    ]
    for name, run in e2e.items():
        lines.append(
            f"| end to end, {name.replace('_', ' ')} ({run['records']:,} records) | {run['records_per_s']:,} records/s "
            f"({run['ratio_to_rules_ceiling']:.2f} × rules' ceiling, {run['ratio_to_own_table_ceiling']:.2f} × own "
            f"table's; {run['total_s']:.2f} s; POST → 202 {run['acceptance_s']:.2f} s; "
            f"GET /jobs p50 {run['get_job_p50_ms']:.1f} ms, p99 {run['get_job_p99_ms']:.1f} ms) |"
        )
    for action in ("create", "replace"):
        cpu = e2e[action].get("cpu_us_per_record", {})
        lines.append(
            f"| CPU time a record, end to end {action} | "
            + ", ".join(f"{name} {us:.1f} µs" for name, us in cpu.items())
            + f" (PostgreSQL in the ceilings: rules' table {rules['postgres_cpu_us_per_row'][action]:.1f} µs, "
            f"own table {own['postgres_cpu_us_per_row'][action]:.1f} µs) |"
        )
    for name in ("service", "peer", "service_budget_on"):
        cpu = single[name].get("cpu_ms_per_request", {})
        lines.append(
            f"| CPU time a request, single sync, {name.replace('_', ' ')} | "
            + ", ".join(f"{group} {ms:.2f} ms" for group, ms in cpu.items())
            + " |"
        )
    lines += [
        _load_line(f"single sync, service, {clients} clients", single["service"]),
        _load_line("single sync, bare peer (FastAPI + psycopg pool)", single["peer"]),
        f"| single sync, service ÷ peer | {single['service_to_peer']:.2f} |",
        _load_line(f"single sync, service with a budget of {cost['limit_per_second']:,}/s counted",
                   single["service_budget_on"]),
        f"| what counting the budget costs | {cost['requests_per_s_ratio']:.2f} × the requests/s, p50 "
        f"{cost['p50_ms_added']:+.1f} ms, p99 {cost['p99_ms_added']:+.1f} ms |",
        _load_line(f"single sync during another business's {busy['batch']['records']:,}-record batch",
                   busy["during"]),
        f"| single sync p99, during the batch ÷ idle | {busy['p99_ratio']:.2f} (the batch "
        f"{busy['batch']['total_s']:.2f} s, {busy['batch']['records_per_s']:,} records/s, "
        f"{busy['batch']['ratio_to_create_alone']:.2f} × the JSON create's alone) |",
    ]  # fmt: skip
    for name, peak in result["rss_mb"].items():
        label = name.replace("_", " ")
        lines.append(f"| peak RSS, {label} | {peak['process']:.0f} MB (whole process tree {peak['tree']:.0f} MB) |")
    f = result["fairness"]
    lines.append(
        f"| fairness: other partner's 100 records during a {f['large_job_records']:,}-record job | done in "
        f"{f['small_job_s']:.2f} s (the large job at {f['large_job_processed_when_small_done']:,}) |"
    )
    lines += ["", "| issue | target | measured | target | met |", "|---|---|---|---|---|"]
    for row in result["targets"]:
        lines.append(
            f"| {row['issue']} | {row['figure']} | {row['value']} | {row['target']} | {'yes' if row['met'] else 'NO'} |"
        )
    load = result["machine"]
    lines += ["", f"{load['cpus']} CPUs; load average before {load['load_before']}, after {load['load_after']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records of the large batches (default 100000)")
    parser.add_argument("--ceiling-repeats", type=int, default=3, help="runs of each ceiling, median (default 3)")
    parser.add_argument("--fair-records", type=int, default=50_000, help="the large job of the fairness run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent single-sync clients (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="single-sync measuring time (default 5)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="single-sync rounds of service, peer, budget on, in turn; --dry-runs: rounds of its jobs (default 2)",
    )
    parser.add_argument("--api-workers", type=int, help="pfsync api --workers (default: its own default)")
    parser.add_argument("--concurrency", type=int, help="pfsync worker --concurrency (default: its own default)")
    parser.add_argument("--scale", action="store_true", help="the scale curve instead (benchmarks/scale.py)")
    parser.add_argument(
        "--max-rows", type=int, default=5_000_000, help="--scale: grow the customers table up to this (default 5 M)"
    )
    parser.add_argument(
        "--scale-repeats", type=int, default=2, help="--scale: ceilings and batches at each size (default 2, medians)"
    )
    parser.add_argument(
        "--dry-runs",
        action="store_true",
        help="dry runs beside the real runs after them instead (benchmarks/dry_runs.py)",
    )
    parser.add_argument(
        "--only",
        choices=("single",),
        help="single: only the single-sync phase (service, peer, budget on; about 40 s): no ceilings, batches, "
        "fairness or batch beside it; written to benchmarks/results/single.json, no picture",
    )
    parser.add_argument("--no-pictures", action="store_true", help="draw no PNG into docs/")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON document")
    args = parser.parse_args(argv)
    if args.scale:
        from benchmarks import scale

        return scale.run(args)
    if args.dry_runs:
        from benchmarks import dry_runs

        return dry_runs.run(args)
    result, latencies = measure(args)
    document = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if args.only:
        (RESULTS / f"{args.only}.json").write_text(document + "\n")
        print(document)
        return 0 if all(row["met"] for row in result["targets"]) else 1
    (RESULTS / "latest.json").write_text(document + "\n")
    (RESULTS / "latencies.json").write_bytes(orjson.dumps(latencies))
    if not args.no_pictures:
        from benchmarks import pictures

        m = result["machine"]
        pictures.latency(
            latencies, f"make bench, {m['cpus']} CPUs, load average before {m['load_before'][0]}, "
            f"after {m['load_after'][0]}"
        )  # fmt: skip
    if not args.json_only:
        print(table(result))
        print()
    print(document)
    return 0 if all(row["met"] for row in result["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
