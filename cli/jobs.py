"""`pfsync jobs [JOB_ID] [--watch]`: the partner's recent jobs, or one job's details and counts, through the API."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from rich.markup import escape
from rich.table import Table

from cli.client import get_json, open_client
from cli.output import console, on_a_tty, print_table
from cli.progress import Job, counts_table, duration, follow_jobs, is_finished, job_duration, parse_time
from core.jobs.status import JobStatus

WIDE_TERMINAL = 140
STATUS_STYLES: dict[str, str] = {
    JobStatus.QUEUED: "dim",
    JobStatus.RUNNING: "cyan",
    JobStatus.COMPLETED: "green",
    JobStatus.CANCELLED: "yellow",
    JobStatus.FAILED: "red",
}


def styled_status(status: str) -> str:
    return f"[{STATUS_STYLES.get(status, '')}]{status}[/]"


def when(value: str | None, now: datetime) -> str:
    """A timestamp and how long ago it was."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S')}Z ({duration((now - moment).total_seconds())} ago)"


def ago(value: str | None, now: datetime) -> str:
    moment = parse_time(value)
    return "-" if moment is None else f"{duration((now - moment).total_seconds())} ago"


def job_type(job: Job) -> str:
    """The job's type, labelled when it is a dry run (its outcomes are what would happen; nothing was written)."""
    return f"{job['type']} [magenta](dry run)[/]" if job.get("dry_run") else str(job["type"])


def jobs_table(jobs: list[Job], now: datetime, *, with_business: bool) -> Table:
    """One row per job, newest first."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("job", no_wrap=True)
    table.add_column("type")
    if with_business:
        table.add_column("business", no_wrap=True)
    table.add_column("status")
    table.add_column("processed", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    table.add_column("created", justify="right", no_wrap=True)
    for job in jobs:
        counts = job["counts"]
        business = [job["business_id"] or "-"] if with_business else []
        table.add_row(
            job["id"],
            job_type(job),
            *business,
            styled_status(job["status"]),
            f"{counts['processed']}/{counts['total']}",
            f"[red]{counts['failed']}[/]" if counts["failed"] else "0",
            ago(job["created_at"], now),
        )
    return table


def show_job(job: Job, now: datetime) -> None:
    """A job's details, then its counts."""
    details = Table.grid(padding=(0, 2))
    details.add_row("job", f"[bold]{job['id']}[/]")
    details.add_row("type", job["type"])
    if job.get("dry_run"):
        details.add_row("dry run", "yes: the counts are what the batch would do; nothing was written")
    if job["business_id"]:
        details.add_row("business", job["business_id"])
    details.add_row("status", styled_status(job["status"]))
    details.add_row("created", when(job["created_at"], now))
    details.add_row("started", when(job.get("started_at"), now))
    finished = when(job.get("finished_at"), now)
    took = job_duration(job)
    details.add_row("finished", finished + (f", took {took}" if took else ""))
    if job.get("cancel_requested_at"):
        details.add_row("cancel asked", when(job["cancel_requested_at"], now))
    print_table(console, details)
    console.print()
    print_table(console, counts_table(job))
    if job["counts"]["failed"]:
        console.print(
            f"\nFailed results: GET {escape(job['links']['results'])}?outcome=failed "
            "(with Accept: application/x-ndjson, all of them as one NDJSON stream)."
        )


def _print_json(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document).decode() + "\n")


def run_jobs(args: argparse.Namespace) -> int:
    """List the recent jobs, or show one; with --watch, follow the unfinished ones to their end first."""
    with open_client(args) as client:
        if args.job_id:
            job: Job = get_json(client, f"/jobs/{quote(args.job_id, safe='')}")
            if args.json:
                _print_json(job)
                return 0
            if args.watch and not is_finished(job):
                [job] = follow_jobs(client, [job], target=console)
            show_job(job, datetime.now(UTC))
            return 0
        dry_run = None if args.dry_run is None else str(bool(args.dry_run)).lower()
        listing = get_json(client, "/jobs", status=args.status, type=args.type, dry_run=dry_run, limit=args.limit)
        jobs: list[Job] = listing["data"]
        if args.json:
            _print_json(listing)
            return 0
        if args.watch:
            unfinished = [job for job in jobs if not is_finished(job)]
            if unfinished:
                final = {job["id"]: job for job in follow_jobs(client, unfinished, target=console)}
                jobs = [final.get(job["id"], job) for job in jobs]
            else:
                console.print("No unfinished jobs to watch.")
        if not jobs:
            filtered = args.status or args.type or args.dry_run is not None
            console.print("No jobs match." if filtered else "No jobs yet.")
            return 0
        # A narrow terminal leaves the business out (`pfsync jobs JOB_ID` shows it) rather than wrap every row.
        with_business = not on_a_tty(console) or console.width >= WIDE_TERMINAL
        print_table(console, jobs_table(jobs, datetime.now(UTC), with_business=with_business))
        if listing.get("has_more"):
            console.print(f"Showing the newest {len(jobs)}; --limit shows more (up to 1000).")
    return 0
