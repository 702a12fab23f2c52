"""The pieces of a chunk's work one at a time, each beside what it replaced (`python -m benchmarks.hotpath`).

`make bench` measures the service end to end; this says what each piece of a worker's and the API's per-record work
costs, so that a change to one of them can be judged alone. In-process, on a scratch database migrated as `make
bench` makes one (DATABASE_URL's server, else the machine's, else an embedded one), on a business holding 200 000
customers (`--stored`):

- Python, per record: a new id; flat metadata validated at a glance, and by the full walk it spares.
- PostgreSQL, per chunk of 1000 (`--chunk`): the row load of a replace on a table without statistics, JIT off (as
  the service connects) and as the server is set; then, statistics made, the row load of a replace (every key
  found) and of a create (none found) as the service runs it (an email address the row named by external_id holds
  is not looked up again) and as it ran before (every email address looked up); the insert of 1000 new
  customers without ON CONFLICT (as the service does) and with `ON CONFLICT DO NOTHING`; a chunk's records and
  results stored compressed with lz4 and with pglz (time and bytes).

Each figure is the median of `--repeats` runs, the two sides of a comparison taking turns, each on keys of its own
that were read once before (so neither pays the first reading of a page). Prints a table and a JSON document
(`benchmarks/results/hotpath.json`). It judges nothing (exit 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from benchmarks.bench import CUSTOMER_COLUMNS, RESULTS, Service, customers, prepare_servers
from core import ids
from core.records.repository import _COLUMNS, _LOAD, _key_arrays, _load, _probe, _source
from core.records.rules import Scope
from core.records.schemas import MAX_METADATA_BYTES, _MetadataWalk, check_metadata

METADATA = {"tier": "gold", "n": 12, "tag": "spring"}


def _python(number: int) -> dict[str, float]:
    """µs a call of the per-record Python pieces."""

    def walk() -> None:
        checked = _MetadataWalk().run(METADATA)
        assert len(orjson.dumps(checked)) <= MAX_METADATA_BYTES

    def per_call(fn: Callable[[], object]) -> float:
        return round(min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6, 2)

    return {
        "new id": per_call(lambda: ids.new_id(ids.CUSTOMER)),
        "flat metadata, at a glance": per_call(lambda: check_metadata(METADATA)),
        "flat metadata, the full walk": per_call(walk),
    }


# The row load as it was before: every key of every record looked up, the email addresses too.
_LOAD_EVERY_KEY = _load(
    "customers",
    _COLUMNS["customers"],
    (
        _probe("customers", "business_id", "ids", "id"),
        _probe("customers", "business_id", "xids", "external_id"),
        _probe("customers", "business_id", "emails", "lower(email_address)"),
    ),
    lock=True,
)


def _setup(conninfo: str, stored: int) -> Scope:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        partner_id, business_id = ids.new_id(ids.PARTNER), ids.new_id(ids.BUSINESS)
        conn.execute("INSERT INTO partners (id, name) VALUES (%s, 'hotpath')", (partner_id,))
        conn.execute(
            "INSERT INTO businesses (id, partner_id, name) VALUES (%s, %s, 'hotpath')", (business_id, partner_id)
        )
        copy_sql = (
            "COPY customers (id, business_id, partner_id, external_id, email_address, full_name, metadata) FROM STDIN"
        )
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for r in customers(stored):
                copy.write_row(
                    (
                        ids.new_id(ids.CUSTOMER),
                        business_id,
                        partner_id,
                        r["external_id"],
                        r["email_address"],
                        r["full_name"],
                        orjson.dumps(r["metadata"]).decode(),
                    )
                )
        conn.execute("VACUUM customers")  # no ANALYZE yet: `_jit` measures a table without statistics
    return Scope("customers", partner_id, business_id)


def _jit(conninfo: str, scope: Scope, *, stored: int, chunk: int, repeats: int) -> dict[str, Any]:
    """ms the row load of a replace takes on a table without statistics (never analyzed: a new deployment, or
    autovacuum off), where the planner's estimates start JIT compilation; with JIT as the server is set, and off."""
    service = psycopg.connect(conninfo, options="-c jit=off")
    server_default = psycopg.connect(conninfo)
    jit = server_default.execute("SHOW jit").fetchone()
    times: dict[str, list[float]] = {"JIT off (as now)": [], f"JIT as the server is set ({jit[0] if jit else '?'})": []}
    slots = max(1, stored // chunk)
    for rep in range(repeats):
        params = _load_params(scope, (rep % slots) * chunk, chunk, found=True)
        _timed(service, _LOAD["customers", False], params)
        for values, conn in zip(times.values(), (service, server_default), strict=True):
            values.append(_timed(conn, _LOAD["customers", True], params) * 1000)
    service.close()
    server_default.close()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE customers")
    return {f"row load, replace, no statistics, {name}": round(statistics.median(v), 2) for name, v in times.items()}


def _timed(conn: psycopg.Connection[Any], statement: str, params: Any) -> float:
    """Seconds a statement takes (its rows fetched), rolled back after."""
    started = time.perf_counter()
    cur = conn.execute(statement, params, prepare=False)
    if cur.description is not None:
        cur.fetchall()
    elapsed = time.perf_counter() - started
    conn.rollback()
    return elapsed


def _load_params(scope: Scope, first: int, chunk: int, *, found: bool) -> dict[str, Any]:
    numbers = range(first, first + chunk) if found else range(10_000_000 + first, 10_000_000 + first + chunk)
    return {
        "scope": scope.business_id,
        **_key_arrays(
            ids=[],
            xids=[f"c-{i:07d}" for i in numbers],
            emails=[f"c{i}@example.com" for i in numbers],
        ),
    }


def _statements(conninfo: str, scope: Scope, *, stored: int, chunk: int, repeats: int) -> dict[str, Any]:
    """ms a chunk of each statement, the two sides of a comparison taking turns."""
    service = psycopg.connect(conninfo, options="-c jit=off")  # as core.db connects
    server_default = psycopg.connect(conninfo)
    times: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds * 1000)

    slots = max(1, stored // chunk // 2)
    for rep in range(repeats):
        # Replace: the same keys for both sides, read once first by an unlocked read.
        first = (rep % slots) * chunk
        params = _load_params(scope, first, chunk, found=True)
        _timed(service, _LOAD["customers", False], params)
        record("row load, replace, as now", _timed(service, _LOAD["customers", True], params))
        record("row load, replace, as before", _timed(server_default, _LOAD_EVERY_KEY, params))
        params = _load_params(scope, rep * chunk, chunk, found=False)
        record("row load, create, as now", _timed(service, _LOAD["customers", True], params))
        record("row load, create, as before", _timed(server_default, _LOAD_EVERY_KEY, params))
        for conflict in ("", " ON CONFLICT DO NOTHING"):
            rows = [{"id": ids.new_id(ids.CUSTOMER), **r} for r in customers(chunk, prefix=f"n{rep}{len(conflict)}")]
            source, document = _source(scope, rows)
            columns = ", ".join(CUSTOMER_COLUMNS)
            statement = (
                f"INSERT INTO customers (id, business_id, partner_id, {columns}, last_seq) "
                f"SELECT s.id, %s, %s, {', '.join('s.' + c for c in columns.split(', '))}, 1 FROM {source} "
                f"ORDER BY s.external_id, s.id{conflict}"
            )
            name = "insert of a chunk, " + ("ON CONFLICT DO NOTHING" if conflict else "plain (as now)")
            record(name, _timed(service, statement, (scope.business_id, scope.partner_id, document)))
    service.close()
    server_default.close()
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def _compression(conninfo: str, chunk: int, repeats: int) -> dict[str, Any]:
    """ms to store a chunk's records and its results, and their bytes, by compression method."""
    records = orjson.dumps(customers(chunk))
    results = orjson.dumps(
        [
            {
                "index": i,
                "outcome": "created",
                "id": ids.new_id(ids.CUSTOMER),
                "external_id": f"c-{i:07d}",
                "errors": [],
            }
            for i in range(chunk)
        ]
    )
    found: dict[str, Any] = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for method in ("lz4", "pglz"):
            conn.execute(f"CREATE TEMP TABLE store_{method} (n int, value bytea COMPRESSION {method})")
        for what, value in (("records", records), ("results", results)):
            times: dict[str, list[float]] = {"lz4": [], "pglz": []}
            for n in range(repeats):
                for method in times:
                    started = time.perf_counter()
                    conn.execute(f"INSERT INTO store_{method} VALUES (%s, %s)", (n, value))
                    times[method].append((time.perf_counter() - started) * 1000)
            for method, values in times.items():
                size = conn.execute(f"SELECT avg(pg_column_size(value))::float8 FROM store_{method}").fetchone()
                assert size is not None
                found[f"a chunk's {what}, {method}"] = {
                    "ms": round(statistics.median(values), 2),
                    "bytes": round(size[0]),
                    "raw bytes": len(value),
                }
                conn.execute(f"TRUNCATE store_{method}")
    return found


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pfsync-hotpath-") as scratch:
        servers = prepare_servers(Path(scratch))
        try:
            Service(servers, Path(scratch), api_workers=None, concurrency=None).pfsync("migrate")
            conninfo = servers.database_url
            scope = _setup(conninfo, args.stored)
            jit = _jit(conninfo, scope, stored=args.stored, chunk=args.chunk, repeats=args.repeats)
            return {
                "python µs a call": _python(args.number),
                "postgresql ms a chunk": jit
                | _statements(conninfo, scope, stored=args.stored, chunk=args.chunk, repeats=args.repeats),
                "storing a chunk": _compression(conninfo, args.chunk, args.repeats),
                "chunk": args.chunk,
                "stored customers": args.stored,
            }
        finally:
            servers.close(keep=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotpath", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--stored", type=int, default=200_000, help="customers stored in the business (default 200000)")
    parser.add_argument("--chunk", type=int, default=1000, help="records a chunk (default 1000)")
    parser.add_argument("--repeats", type=int, default=9, help="runs of each statement, median (default 9)")
    parser.add_argument("--number", type=int, default=20_000, help="calls a Python timing (default 20000)")
    args = parser.parse_args(argv)
    found = measure(args)
    print("| piece | figure |\n|---|---|")
    for name, value in found["python µs a call"].items():
        print(f"| {name} | {value} µs |")
    for name, value in found["postgresql ms a chunk"].items():
        print(f"| {name} ({args.chunk} records) | {value} ms |")
    for name, value in found["storing a chunk"].items():
        print(f"| {name} | {value['ms']} ms, {value['bytes']} bytes of {value['raw bytes']} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hotpath.json").write_bytes(orjson.dumps(found, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(found).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
