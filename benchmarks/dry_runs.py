"""Dry runs beside the real runs after them (`python -m benchmarks.bench --dry-runs`), on the benchmark's processes.

Per round, on a new business: a dry run of N new customers then their real run, then a dry run of the same N changed
in every record then its real run, then the same again sent with their ids (every replaced row carried from chunk to
chunk); each timed from the POST to the poll that saw it `completed`, and the bytes each job's results take as
stored (`pg_column_size`, compressed, and `octet_length`, raw) per result. Written to
benchmarks/results/dry_runs.json; the exit status is 1 if a dry run was slower than its real run, or real results
grew. Method and figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import httpx
import orjson
import psycopg

from benchmarks.bench import (
    RESULTS,
    Service,
    _libpq,
    _machine,
    customers,
    json_body,
    new_business,
    new_partner,
    phase,
    prepare_servers,
    run_job,
)

# Bytes a real job's results took as stored per result before `changed_fields` (commit 33da897, 100 000 customers
# created or replaced: 26.8 compressed, 112 raw); the target keeps them within a tenth of that.
RESULT_BYTES_BEFORE = 26.8


def result_bytes(conninfo: str, job_id: str) -> dict[str, float]:
    """The bytes a job's results take as stored, per result: compressed as PostgreSQL keeps them (`pg_column_size`)
    and raw (`octet_length`)."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT sum(pg_column_size(results))::float8 / sum(record_count), "
            "sum(octet_length(results))::float8 / sum(record_count) FROM job_chunks WHERE job_id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return {"stored": round(row[0], 1), "raw": round(row[1], 1)}


# The dry runs measured, each followed by its real run: N new customers; the same N changed in every record, found
# by external_id (a dry run carries nothing from one chunk to the next: no later record can name a row again); and
# changed again, sent with their ids too (the worst case: any later record might name any row by id, so every
# replaced row is carried to the chunks after it).
DRY_RUN_ACTIONS = (("create", 1, "created"), ("replace", 2, "replaced"), ("replace_by_id", 3, "replaced"))


def result_ids(client: httpx.Client, job_id: str) -> list[str]:
    """The record ids of a job's results, in input order (streamed as NDJSON)."""
    response = client.get(f"/jobs/{job_id}/results", headers={"Accept": "application/x-ndjson"})
    response.raise_for_status()
    return [orjson.loads(line)["id"] for line in response.content.splitlines() if line]


def measure_dry_runs(args: argparse.Namespace) -> dict[str, Any]:
    """Dry runs beside the real runs after them: create, then replace, N customers, `args.rounds` times."""
    quiet = args.json_only
    n = args.records
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    servers = prepare_servers(RESULTS / "embedded")
    service = Service(servers, log_dir, api_workers=args.api_workers, concurrency=args.concurrency)
    conninfo = _libpq(servers.database_url)
    result: dict[str, Any] = {
        "machine": _machine(load_before),
        "config": {"records": n, "rounds": args.rounds, "embedded": servers.embedded},
        "rounds": [],
    }
    try:
        with phase("migrating the scratch database", quiet):
            service.pfsync("migrate")
        with phase("starting pfsync api, worker and scheduler", quiet):
            service.start()
        partner = new_partner(service, "Bench Partner")
        with httpx.Client(base_url=service.url, auth=partner.auth, timeout=120) as client:
            for number in range(args.rounds):
                business_id = new_business(client, f"dry-runs-{number}")
                figures: dict[str, Any] = {}
                ids: list[str] = []
                for action, version, outcome in DRY_RUN_ACTIONS:
                    records = customers(n, version=version)
                    if action == "replace_by_id":
                        records = [{"id": record_id, **record} for record_id, record in zip(ids, records, strict=True)]
                    body = json_body(records)
                    for label, dry_run in (("dry_run", True), ("real", False)):
                        with phase(f"round {number + 1}: {label.replace('_', ' ')} of {n} customers, {action}", quiet):
                            run = run_job(client, business_id, body, records=n, ndjson=False, dry_run=dry_run)
                        if run.job["counts"][outcome] != n or run.job["dry_run"] is not dry_run:
                            raise SystemExit(f"{label} {action}: expected {n} {outcome}, got {run.job}")
                        figures[f"{action}_{label}"] = {
                            "total_s": round(run.total_s, 3),
                            "records_per_s": round(run.records_per_s),
                            "acceptance_s": round(run.acceptance_s, 3),
                            "bytes_per_result": result_bytes(conninfo, run.job["id"]),
                        }
                        if action == "create" and not dry_run:
                            ids = result_ids(client, run.job["id"])
                result["rounds"].append(figures)
    finally:
        service.stop()
        servers.close(keep=args.keep)
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = judge_dry_runs(result)
    return result


def judge_dry_runs(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A dry run at least as fast as the real run (each round's), results as compact as before."""
    rows: list[tuple[str, float, str, bool]] = []
    for action, _, _ in DRY_RUN_ACTIONS:
        ratios = [r[f"{action}_dry_run"]["total_s"] / r[f"{action}_real"]["total_s"] for r in result["rounds"]]
        worst = round(max(ratios), 2)
        rows.append((f"dry run ÷ real run, {action}, time (worst round)", worst, "≤ 1", worst <= 1))
    stored = max(r[f"{a}_real"]["bytes_per_result"]["stored"] for r in result["rounds"] for a, _, _ in DRY_RUN_ACTIONS)
    limit = round(RESULT_BYTES_BEFORE * 1.1, 1)
    rows.append(("bytes per stored result of a real run", stored, f"≤ {limit}", stored <= limit))
    return [{"figure": f, "value": v, "target": t, "met": ok} for f, v, t, ok in rows]


def dry_runs_table(result: dict[str, Any]) -> str:
    """The dry-run figures as a Markdown table, then the targets."""
    lines = [
        "| round | job | time (s) | records/s | bytes per result, stored (raw) |",
        "|---|---|---|---|---|",
    ]
    for number, figures in enumerate(result["rounds"], start=1):
        for name, run in figures.items():
            size = run["bytes_per_result"]
            lines.append(
                f"| {number} | {name.replace('_', ' ')} | {run['total_s']:.2f} | {run['records_per_s']:,} | "
                f"{size['stored']} ({size['raw']}) |"
            )
    lines += ["", "| target | measured | target | met |", "|---|---|---|---|"]
    for row in result["targets"]:
        lines.append(f"| {row['figure']} | {row['value']} | {row['target']} | {'yes' if row['met'] else 'NO'} |")
    machine = result["machine"]
    lines += [
        "",
        f"{machine['cpus']} CPUs; load average before {machine['load_before']}, after {machine['load_after']}.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Measure, write benchmarks/results/dry_runs.json, print the table and the document; the exit status."""
    result = measure_dry_runs(args)
    document = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    (RESULTS / "dry_runs.json").write_text(document + "\n")
    if not args.json_only:
        print(dry_runs_table(result))
        print()
    print(document)
    return 0 if all(row["met"] for row in result["targets"]) else 1
