"""The scale curve: `python -m benchmarks.bench --scale [--max-rows N]` (make bench-scale).

On a scratch database and the real processes, as `make bench`:

1. the batch-size curve at the base size (the customers table nearly empty): batches of 1 000, 10 000 and
   100 000 new customers, each to a new business (5, 3 and 1 times; medians), records/s and the time from the POST
   to the poll that saw `completed` (polled every 10 ms for the small ones, 50 ms for 100 000);
2. then, at the base size and with the customers table grown to 1 M and 5 M rows (10 M with `--max-rows 10000000`
   when the disk allows; otherwise 10 M is extrapolated from 1 M and 5 M, on a straight line in log(rows), and
   said so): the own table's ceiling
   (COPY + INSERT … ON CONFLICT of 100 000 rows, create and replace), a 100 000-record batch end to end, create then
   replace, each twice (`--scale-repeats`; medians), and single sync (8 clients, 5 s).

The table grows by set-based inserts (`generate_series`) straight into `customers`, for filler businesses of
100 000 customers each of one filler partner, in transactions of 500 000 rows (triggers off,
`session_replication_role = replica`: the fillers' business and partner exist), then `VACUUM ANALYZE` and a
`CHECKPOINT`, so neither the vacuum the rows call for nor their checkpoint falls inside a measurement. Filler ids
sort before every id the service makes (as older rows would): the measured business is new, at the right edge of
each index, as a new business of a grown service is.

Writes benchmarks/results/scale.json and scale.md, and docs/perf-scale.png and docs/perf-batch-size.png.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from benchmarks import pictures
from benchmarks.bench import (
    OWN_TABLE,
    RESULTS,
    Partner,
    Service,
    SyncLoad,
    _libpq,
    _machine,
    ceiling_once,
    customers,
    json_body,
    new_business,
    new_partner,
    phase,
    prepare_servers,
    run_job,
)

FILLER_PER_BUSINESS = 100_000
FILL_TRANSACTION_ROWS = 500_000
FILLER_PARTNER = "ptn_00000000000000000000000000"
BATCH_SIZES = ((1_000, 5), (10_000, 3), (100_000, 1))
# Disk the fill must leave free, past its own estimate.
DISK_MARGIN_BYTES = 5 * 2**30


def count_rows(conninfo: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {OWN_TABLE}").fetchone()
    assert row is not None
    return int(row[0])


def fill(conninfo: str, *, first: int, rows: int, quiet: bool) -> float:
    """Filler customers number `first` … `first + rows - 1` into `customers`; return rows/s of the insert."""
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        try:
            conn.execute("SET session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:  # not a superuser: triggers run, as they would anyway
            pass
        conn.execute("INSERT INTO partners (id, name) VALUES (%s, 'filler') ON CONFLICT DO NOTHING", (FILLER_PARTNER,))
        last = first + rows - 1
        conn.execute(
            "INSERT INTO businesses (id, partner_id, external_id, name) "
            "SELECT 'biz_00' || lpad(b::text, 24, '0'), %(partner)s, 'filler-' || b, 'Filler ' || b "
            "FROM generate_series(%(b0)s::bigint, %(b1)s::bigint) b ON CONFLICT DO NOTHING",
            {"partner": FILLER_PARTNER, "b0": first // FILLER_PER_BUSINESS, "b1": last // FILLER_PER_BUSINESS},
        )
        for start in range(first, last + 1, FILL_TRANSACTION_ROWS):
            end = min(last, start + FILL_TRANSACTION_ROWS - 1)
            conn.execute(
                "INSERT INTO customers (id, business_id, partner_id, external_id, email_address, phone_number, "
                " full_name, metadata, last_seq) "
                "SELECT 'cus_00' || lpad(g::text, 24, '0'), "
                f" 'biz_00' || lpad((g / {FILLER_PER_BUSINESS})::text, 24, '0'), %(partner)s, "
                f" 'f-' || lpad((g %% {FILLER_PER_BUSINESS})::text, 7, '0'), 'f' || g || '@example.com', "
                " '+1 555 ' || lpad((g %% 10000)::text, 4, '0'), 'Filler customer ' || g, "
                " jsonb_build_object('tier', CASE WHEN g %% 3 = 0 THEN 'silver' ELSE 'gold' END, 'n', g), 1 "
                "FROM generate_series(%(g0)s::bigint, %(g1)s::bigint) g",
                {"partner": FILLER_PARTNER, "g0": start, "g1": end},
            )
            if not quiet:
                print(f"    {end + 1:,} filler rows", flush=True, file=sys.stderr)
        rate = rows / (time.perf_counter() - started)
        conn.execute("RESET session_replication_role")
    return rate


def settle(conninfo: str) -> None:
    """VACUUM ANALYZE the customers table and CHECKPOINT: nothing the fill owes falls into a measurement."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {OWN_TABLE}")
        conn.execute("CHECKPOINT")


def disk_allows(conninfo: str, rows_now: int, rows_more: int) -> tuple[bool, str]:
    """Whether the database's disk holds `rows_more` rows more, as large as those it holds now, twice over (WAL)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        size_row = conn.execute(f"SELECT pg_total_relation_size('{OWN_TABLE}')").fetchone()
        try:
            dir_row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.Error:
            dir_row = None
    assert size_row is not None
    need = int(size_row[0]) / max(rows_now, 1) * rows_more * 2
    if dir_row is None or not Path(str(dir_row[0])).exists():
        return True, f"about {need / 2**30:.1f} GiB needed; the server's free disk is not visible from here"
    free = shutil.disk_usage(str(dir_row[0])).free
    allowed = free - DISK_MARGIN_BYTES > need
    return allowed, f"about {need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free"


def batch_size_curve(client: httpx.Client, quiet: bool) -> list[dict[str, Any]]:
    curve = []
    for size, repeats in BATCH_SIZES:
        runs = []
        with phase(f"batch-size curve: {repeats} × {size:,} records", quiet):
            for r in range(repeats):
                business_id = new_business(client, f"size-{size}-{r}")
                body = json_body(customers(size, prefix=f"s{size}r{r}"))
                interval = 0.01 if size <= 10_000 else 0.05
                runs.append(run_job(client, business_id, body, records=size, ndjson=False, poll_interval=interval))
        curve.append(
            {
                "records": size,
                "repeats": repeats,
                "records_per_s": round(statistics.median(run.records_per_s for run in runs)),
                "total_s": round(statistics.median(run.total_s for run in runs), 3),
                "acceptance_s": round(statistics.median(run.acceptance_s for run in runs), 3),
                "total_s_samples": [round(run.total_s, 3) for run in runs],
            }
        )
    return curve


def measure_point(
    service: Service, client: httpx.Client, partner: Partner, conninfo: str, args: argparse.Namespace
) -> dict[str, Any]:
    """At the table's present size, `--scale-repeats` times: the own table's ceiling, then a batch end to end
    (create, replace) to a new business; medians. Then single sync once."""
    rows = count_rows(conninfo)
    n = args.records
    samples: dict[str, list[float]] = {"ceiling_create": [], "ceiling_replace": [], "create": [], "replace": []}
    totals: dict[str, list[float]] = {"create": [], "replace": []}
    for r in range(args.scale_repeats):
        ceiling = ceiling_once(conninfo, OWN_TABLE, n)
        samples["ceiling_create"].append(ceiling.create)
        samples["ceiling_replace"].append(ceiling.replace)
        business_id = new_business(client, f"scale-{rows}-{r}")
        for action, version in (("create", 1), ("replace", 2)):
            body = json_body(customers(n, version=version))
            run = run_job(client, business_id, body, records=n, ndjson=False)
            samples[action].append(run.records_per_s)
            totals[action].append(run.total_s)
    single_business = new_business(client, f"scale-single-{rows}")
    single = SyncLoad(
        "service", service.url, f"/sync/businesses/{single_business}/customers", auth=partner.auth,
        clients=args.clients,
    ).timed(args.seconds)  # fmt: skip
    s = single.summary()
    median = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "rows": rows,
        "rows_millions": round(rows / 1e6, 3),
        "extrapolated": False,
        "repeats": args.scale_repeats,
        "ceiling_create_rows_per_s": round(median["ceiling_create"]),
        "ceiling_replace_rows_per_s": round(median["ceiling_replace"]),
        "create_records_per_s": round(median["create"]),
        "replace_records_per_s": round(median["replace"]),
        "create_total_s": round(statistics.median(totals["create"]), 3),
        "replace_total_s": round(statistics.median(totals["replace"]), 3),
        "create_ratio_to_ceiling": round(median["create"] / median["ceiling_create"], 3),
        "replace_ratio_to_ceiling": round(median["replace"] / median["ceiling_replace"], 3),
        "samples": {key: [round(v) for v in values] for key, values in samples.items()},
        "single_requests_per_s": s["requests_per_s"],
        "single_p50_ms": s["p50_ms"],
        "single_p99_ms": s["p99_ms"],
        "single_errors": s["errors"],
    }


EXTRAPOLATED_KEYS = (
    "ceiling_create_rows_per_s",
    "ceiling_replace_rows_per_s",
    "create_records_per_s",
    "replace_records_per_s",
    "single_requests_per_s",
    "single_p50_ms",
    "single_p99_ms",
)


def extrapolate(points: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """Each figure carried on to `rows` along a straight line in log(rows) through the last two measured points
    (a B-tree's depth, and so the cost of each lookup, grows with the log of its size); none below zero."""
    a, b = points[-2], points[-1]
    span = math.log(b["rows"]) - math.log(a["rows"])
    point: dict[str, Any] = {"rows": rows, "rows_millions": round(rows / 1e6, 3), "extrapolated": True}
    for key in EXTRAPOLATED_KEYS:
        slope = (b[key] - a[key]) / span if span else 0.0
        point[key] = round(max(0.0, b[key] + slope * (math.log(rows) - math.log(b["rows"]))), 1)
    point["create_ratio_to_ceiling"] = round(point["create_records_per_s"] / point["ceiling_create_rows_per_s"], 3)
    point["replace_ratio_to_ceiling"] = round(point["replace_records_per_s"] / point["ceiling_replace_rows_per_s"], 3)
    return point


def measure_scale(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    servers = prepare_servers(RESULTS / "embedded")
    service = Service(servers, log_dir, api_workers=args.api_workers, concurrency=args.concurrency)
    conninfo = _libpq(servers.database_url)
    sizes = sorted(size for size in (1_000_000, 5_000_000, 10_000_000) if size <= args.max_rows)
    result: dict[str, Any] = {
        "machine": _machine(load_before),
        "config": {
            "records": args.records,
            "sizes": sizes,
            "max_rows": args.max_rows,
            "repeats": args.scale_repeats,
            "single_sync_clients": args.clients,
            "single_sync_seconds": args.seconds,
            "api_processes": service.api_processes,
            "embedded": servers.embedded,
        },
        "notes": [],
    }
    points: list[dict[str, Any]] = []
    filler = 0
    try:
        with phase("migrating the scratch database", quiet):
            service.pfsync("migrate")
        with phase("starting pfsync api, worker and scheduler", quiet):
            service.start()
        partner = new_partner(service, "Scale Partner")
        with httpx.Client(base_url=service.url, auth=partner.auth, timeout=120) as client:
            result["batch_sizes"] = batch_size_curve(client, quiet)
            for target in [0, *sizes]:
                rows = count_rows(conninfo)
                if target > rows:
                    more = target - rows
                    allowed, why = disk_allows(conninfo, rows, more)
                    if not allowed:
                        result["notes"].append(f"{target:,} rows not measured: the disk does not allow it ({why})")
                        break
                    with phase(f"growing customers from {rows:,} to {target:,} rows ({why})", quiet):
                        rate = fill(conninfo, first=filler, rows=more, quiet=quiet)
                        filler += more
                        result.setdefault("fill_rows_per_s", []).append(round(rate))
                with phase("VACUUM ANALYZE, CHECKPOINT", quiet):
                    settle(conninfo)
                with phase(f"measuring at {count_rows(conninfo):,} rows", quiet):
                    points.append(measure_point(service, client, partner, conninfo, args))
        grown = [p for p in points if p["rows"] >= 900_000]
        if points[-1]["rows"] < 9_000_000 and len(grown) >= 2:
            points.append(extrapolate(grown, 10_000_000))
            result["notes"].append(
                f"10 M rows extrapolated, not measured: each figure on a straight line in log(rows) through "
                f"{grown[-2]['rows_millions']:.1f} M and {grown[-1]['rows_millions']:.1f} M rows; "
                "run with --max-rows 10000000 where the disk allows"
            )
        elif points[-1]["rows"] < 9_000_000:
            result["notes"].append("10 M rows neither measured nor extrapolated (fewer than two points past 1 M)")
    finally:
        service.stop()
        servers.close(keep=args.keep)
    result["points"] = points
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| rows in customers | end to end create | replace | own table's ceiling, create / replace | "
        "create ÷ ceiling | replace ÷ ceiling | single sync, 8 clients |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in result["points"]:
        rows = f"{p['rows_millions']:.2f} M" + (" (extrapolated)" if p["extrapolated"] else "")
        lines.append(
            f"| {rows} | {p['create_records_per_s']:,.0f} records/s | {p['replace_records_per_s']:,.0f} | "
            f"{p['ceiling_create_rows_per_s']:,.0f} / {p['ceiling_replace_rows_per_s']:,.0f} rows/s | "
            f"{p['create_ratio_to_ceiling']:.2f} | {p['replace_ratio_to_ceiling']:.2f} | "
            f"{p['single_requests_per_s']:,.0f} requests/s, p50 {p['single_p50_ms']:.1f} ms, "
            f"p99 {p['single_p99_ms']:.1f} ms |"
        )
    lines += [
        "",
        "| batch (records, create) | records/s | POST → completed | POST → 202 | runs |",
        "|---|---|---|---|---|",
    ]
    for b in result["batch_sizes"]:
        lines.append(
            f"| {b['records']:,} | {b['records_per_s']:,} | {b['total_s']:.3f} s | {b['acceptance_s']:.3f} s | "
            f"{b['repeats']} (median) |"
        )
    m = result["machine"]
    lines += ["", f"{m['cpus']} CPUs; load average before {m['load_before']}, after {m['load_after']}."]
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = measure_scale(args)
    document = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    (RESULTS / "scale.json").write_text(document + "\n")
    text = markdown(result)
    (RESULTS / "scale.md").write_text(text + "\n")
    if not args.no_pictures:
        m = result["machine"]
        caption = f"{m['cpus']} CPUs, load average before {m['load_before'][0]}, after {m['load_after'][0]}"
        pictures.scale(result["points"], caption)
        pictures.batch_sizes(result["batch_sizes"], caption)
    if not args.json_only:
        print(text)
        print()
    print(document)
    return 0
