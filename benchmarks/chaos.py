"""The chaos drill: a 30 000-record job through the real processes while workers die, Redis forgets and
PostgreSQL restarts; then proof that every record got exactly one outcome and nothing was lost or duplicated.

    make chaos                     # or: python -m benchmarks.chaos [--records N] [--fault-interval S] [--json-only]

Everything it breaks is its own: a scratch PostgreSQL (pgserver's binaries, in a temporary folder, on its own port)
and a Redis server of its own, both thrown away at the end; the machine's servers are never touched. On them it
runs `pfsync migrate`, `pfsync api`, two `pfsync worker`s and `pfsync scheduler`, submits one batch, and until the
job finishes injects, in turn, every `--fault-interval` seconds:

- kill-worker: SIGKILL a worker's whole process group (the Celery parent and its pool) and start a new worker;
- flush-redis: FLUSHALL (queues, unacknowledged messages, bindings);
- restart-postgres: stop PostgreSQL (alternately `fast` and `immediate`, a crash), wait, start it again;
- restart-redis: SIGKILL Redis and start it empty on the same port.

Then it reads every result back through the API and counts, from the database, the rows of each external_id. It
prints a table and the same figures as one JSON line (also written to benchmarks/results/chaos.json); process logs
are kept in benchmarks/results/chaos-logs/. The exit status is 1 if any record was lost or duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import redis

from cli.embedded import ScratchPostgres, ScratchRedis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LOGS = RESULTS / "chaos-logs"
PFSYNC_SCRIPT = Path(sys.executable).with_name("pfsync")
PFSYNC = [str(PFSYNC_SCRIPT)] if PFSYNC_SCRIPT.exists() else [sys.executable, "-m", "cli"]
FINISHED = ("completed", "cancelled", "failed")
FAULTS = ("kill-worker", "flush-redis", "restart-postgres", "kill-worker", "restart-redis")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Child:
    """A process in its own process group, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path = LOGS) -> None:
        self.name = name
        log = (logs / f"{name}.log").open("ab")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 15) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class Drill:
    records: int
    fault_interval: float
    lease_seconds: int
    chunk_size: int
    concurrency: int
    # Where the process logs go, and settings added to (or overriding) the processes' environment; the abuse drill
    # (benchmarks/abuse.py) starts the same processes with its own.
    logs: Path = LOGS
    extra_env: dict[str, str] = field(default_factory=dict)
    pg: ScratchPostgres = field(default_factory=ScratchPostgres)
    broker: ScratchRedis = field(default_factory=lambda: ScratchRedis(LOGS / "redis.log"))
    children: list[Child] = field(default_factory=list)
    workers: list[Child] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    api_url: str = ""
    _workers_started: int = 0

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink()
        admin = self.pg.start()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE pfsync")
        self.database_url = admin.rsplit("/", 1)[0] + "/pfsync"
        self.broker.start()
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.broker.url,
            "PFSYNC_DATA_DIR": str(self.pg.dir / "pfsync"),
            "PFSYNC_QUEUE_NAME": "pfsync-chaos",
            "PFSYNC_LEASE_SECONDS": str(self.lease_seconds),
            "PFSYNC_SWEEP_INTERVAL_SECONDS": "1",
            "PFSYNC_CHUNK_SIZE": str(self.chunk_size),
            "PFSYNC_LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        subprocess.run([*PFSYNC, "migrate"], env=self.env, check=True, capture_output=True, timeout=120)
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        self.children.append(
            Child("api", [*PFSYNC, "api", "--host", "127.0.0.1", "--port", str(port)], self.env, self.logs)
        )
        self.children.append(Child("scheduler", [*PFSYNC, "scheduler"], self.env, self.logs))
        for _ in range(2):
            self.start_worker()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.api_url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start; see " + str(self.logs / "api.log"))
            time.sleep(0.1)

    def start_worker(self) -> None:
        self._workers_started += 1
        worker = Child(
            f"worker-{self._workers_started}",
            [*PFSYNC, "worker", "--concurrency", str(self.concurrency)],
            self.env,
            self.logs,
        )
        self.workers.append(worker)
        self.children.append(worker)

    def partner(self, name: str = "chaos drill") -> tuple[str, str]:
        out = subprocess.run(
            [*PFSYNC, "partner", "create", name, "--json"], env=self.env, check=True, capture_output=True
        )
        created = orjson.loads(out.stdout)
        return created["key_id"], created["secret"]

    def inject(self, fault: str) -> None:
        say(f"fault: {fault}")
        if fault == "kill-worker":
            victim = self.workers.pop(0)
            victim.kill()
            self.start_worker()
        elif fault == "flush-redis":
            client = redis.Redis.from_url(self.broker.url)
            client.flushall()
            client.close()
        elif fault == "restart-postgres":
            self.pg.stop("immediate" if self.faults[fault] % 2 else "fast")
            time.sleep(1)
            self.pg.start()
        elif fault == "restart-redis":
            self.broker.kill()
            time.sleep(1)
            self.broker.start()
        self.faults[fault] += 1

    def stop(self) -> None:
        for child in reversed(self.children):
            child.kill(signal.SIGTERM, timeout=10)
        self.broker.kill()
        self.pg.destroy()


def retrying(call: Callable[[], httpx.Response], what: str, timeout: float = 120) -> httpx.Response:
    """A call retried while the service is down (503) or unreachable, as a client would."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            response = call()
            if response.status_code < 500:
                return response
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: no answer in {timeout} s")
        time.sleep(0.5)


def verify(drill: Drill, client: httpx.Client, job_id: str, business_id: str, submitted: list[str]) -> dict[str, Any]:
    """What happened to every submitted record, from the API's results and the database's rows."""
    response = retrying(
        lambda: client.get(f"/jobs/{job_id}/results", headers={"Accept": "application/x-ndjson"}, timeout=120),
        "results",
    )
    results = [orjson.loads(line) for line in response.content.splitlines() if line]
    per_index = Counter(r["index"] for r in results)
    with psycopg.connect(drill.database_url) as conn:
        rows: dict[str, int] = dict(
            conn.execute(
                "SELECT external_id, count(*) FROM customers WHERE business_id = %s GROUP BY external_id",
                (business_id,),
            ).fetchall()
        )
        # A row that does not hold what was sent for it counts as lost too.
        stored = conn.execute(
            "SELECT external_id, email_address, full_name FROM customers WHERE business_id = %s", (business_id,)
        ).fetchall()
        attempts = conn.execute("SELECT max(attempts), sum(attempts) FROM job_chunks WHERE job_id = %s", (job_id,))
        max_attempts, total_attempts = attempts.fetchone() or (0, 0)
    applied = {r["index"] for r in results if r["outcome"] in ("created", "replaced", "unchanged", "superseded")}
    missing_rows = sum(1 for i in applied if rows.get(submitted[i], 0) == 0)
    index_of = {x: i for i, x in enumerate(submitted)}
    wrong = sum(1 for x, email, name in stored if (email, name) != (f"{x}@example.com", f"Customer {index_of.get(x)}"))
    outcomes = Counter(r["outcome"] for r in results)
    internal = sum(1 for r in results if any(e["code"] == "internal_error" for e in r["errors"]))
    return {
        "records_submitted": len(submitted),
        "records_with_exactly_one_outcome": sum(1 for i in range(len(submitted)) if per_index[i] == 1),
        "duplicates": sum(n - 1 for n in rows.values() if n > 1) + sum(n - 1 for n in per_index.values() if n > 1),
        "lost": sum(1 for i in range(len(submitted)) if per_index[i] == 0) + missing_rows + wrong,
        "outcomes": dict(outcomes),
        "failed_internal_error": internal,
        "rows_in_database": sum(rows.values()),
        "max_chunk_attempts": max_attempts,
        "chunk_attempts": total_attempts,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    drill = Drill(args.records, args.fault_interval, args.lease_seconds, args.chunk_size, args.concurrency)
    try:
        say("starting a scratch PostgreSQL, Redis and the pfsync processes")
        drill.start()
        key_id, secret = drill.partner()
        client = httpx.Client(base_url=drill.api_url, auth=(key_id, secret), timeout=60)
        business = retrying(
            lambda: client.post("/sync/businesses", json={"external_id": "chaos", "name": "Chaos"}), "business"
        ).json()
        submitted = [f"chaos-{i:06d}" for i in range(drill.records)]
        records = [
            {"external_id": x, "email_address": f"{x}@example.com", "full_name": f"Customer {i}", "metadata": {"i": i}}
            for i, x in enumerate(submitted)
        ]
        started = time.monotonic()
        response = client.post(f"/sync/businesses/{business['id']}/customers/batch", json={"customers": records})
        if response.status_code != 202:
            raise RuntimeError(f"batch refused: {response.status_code} {response.text[:300]}")
        job_id = response.json()["id"]
        say(f"job {job_id}: {drill.records} records accepted; injecting faults every {drill.fault_interval} s")
        plan = iter(FAULTS * 1000)
        next_fault = time.monotonic() + drill.fault_interval
        job: dict[str, Any] = {}
        while time.monotonic() - started < args.timeout:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                answer = client.get(f"/jobs/{job_id}", timeout=5)
                if answer.status_code == 200:
                    job = answer.json()
                    if job["status"] in FINISHED:
                        break
            if time.monotonic() >= next_fault:
                drill.inject(next(plan))
                next_fault = time.monotonic() + drill.fault_interval
            time.sleep(0.2)
        else:
            raise RuntimeError(f"job {job_id} did not finish within {args.timeout} s: {job}")
        elapsed = time.monotonic() - started
        say(f"job {job['status']} after {elapsed:.1f} s; verifying")
        figures = verify(drill, client, job_id, business["id"], submitted)
        return {
            "faults_injected": sum(drill.faults.values()),
            "faults": dict(drill.faults),
            **figures,
            "job_status": job["status"],
            "job_counts": job["counts"],
            "seconds": round(elapsed, 1),
        }
    finally:
        drill.stop()


def table(figures: dict[str, Any]) -> str:
    faults = ", ".join(f"{name} {count}" for name, count in figures["faults"].items())
    rows = [
        ("faults injected", f"{figures['faults_injected']} ({faults})"),
        ("records submitted", figures["records_submitted"]),
        ("records with exactly one outcome", figures["records_with_exactly_one_outcome"]),
        ("duplicates", figures["duplicates"]),
        ("lost", figures["lost"]),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in figures["outcomes"].items())),
        ("failed with internal_error", figures["failed_internal_error"]),
        ("job", f"{figures['job_status']} in {figures['seconds']} s"),
        ("chunk attempts (max per chunk)", f"{figures['chunk_attempts']} ({figures['max_chunk_attempts']})"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'what':<{width}}  figure", f"{'-' * width}  {'-' * 40}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=30_000, help="records in the job (default: %(default)s)")
    parser.add_argument("--fault-interval", type=float, default=0.5, help="seconds between faults (%(default)s)")
    parser.add_argument("--lease-seconds", type=int, default=3, help="PFSYNC_LEASE_SECONDS (%(default)s)")
    parser.add_argument("--chunk-size", type=int, default=100, help="PFSYNC_CHUNK_SIZE (%(default)s)")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="pool processes of each of the 2 workers (%(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="give up after this many seconds (%(default)s)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    figures = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(figures).decode()
    (RESULTS / "chaos.json").write_text(line + "\n")
    if not args.json_only:
        print(table(figures))
    print(line)
    return 1 if figures["lost"] or figures["duplicates"] else 0


if __name__ == "__main__":
    sys.exit(main())
