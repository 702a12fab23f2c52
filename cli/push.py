"""`pfsync push FILE (--businesses | --customers BUSINESS_ID) [--dry-run] [--results-format csv]`: upload a batch,
follow its job, report.

The file goes up as it is read (cli.batch_files), with a progress bar. Then the job is followed until it finishes,
its counts are printed and the failed results are written next to FILE (NDJSON, or CSV). With --dry-run the batch
is a dry run (SPEC §9): nothing is written, the counts are the would-be ones and the would-be failures go to a file
of their own. Exit status: 0 every record succeeded (would succeed), 1 some failed (would fail) or were cancelled,
2 usage error, 3 the service refused the batch or could not be reached.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from rich.markup import escape

from cli.batch_files import Upload, file_format, prepare_upload
from cli.client import RETRY_WINDOW_SECONDS, UPLOAD_TIMEOUT, call, open_client, refusal, retry_delay, unreachable
from cli.output import CommandError, console, print_table
from cli.progress import Job, UploadProgress, counts_summary, counts_table, follow_jobs, job_duration, succeeded

FAILED_SUFFIX = ".failed.ndjson"
# The results' formats: the file's suffix, and what the results endpoint is asked for.
RESULTS_FORMATS: dict[str, tuple[str, str]] = {
    "ndjson": (".ndjson", "application/x-ndjson"),
    "csv": (".csv", "text/csv"),
}


def failed_path(path: Path, *, dry_run: bool = False, results_format: str = "ndjson") -> Path:
    """Where the failed results of FILE go, next to it: `<FILE>.failed.ndjson` (or `.csv`); a dry run's would-be
    failures `<FILE>.dry-run.failed.ndjson`, so they never pass for those of a real push."""
    suffix = RESULTS_FORMATS[results_format][0]
    return path.with_name(path.name + (".dry-run" if dry_run else "") + ".failed" + suffix)


def batch_path(kind: str, business_id: str | None) -> str:
    """The batch endpoint for businesses, or for the customers of a business."""
    if kind == "businesses":
        return "/sync/businesses/batch"
    assert business_id is not None
    return f"/sync/businesses/{quote(business_id, safe='')}/customers/batch"


def upload_batch(
    client: httpx.Client, upload: Upload, *, path: str, label: str, key: str | None, dry_run: bool = False
) -> Job:
    """Send the batch with a progress bar; the job the service answers with."""
    headers = {"Content-Type": upload.content_type}
    if upload.content_length is not None:
        headers["Content-Length"] = str(upload.content_length)
    if key:
        headers["Idempotency-Key"] = key
    params = {"dry_run": "true"} if dry_run else None
    with UploadProgress(console, label=label, total=upload.file_size) as progress:
        response = call(
            client,
            "POST",
            path,
            content=lambda: upload.parts(progress.update),
            headers=headers,
            params=params,
            timeout=UPLOAD_TIMEOUT,
        )
    body: Job = response.json()
    job: Job = body["job"] if "job" in body else body
    replayed = ""
    if response.headers.get("Idempotent-Replayed"):
        replayed = " (a replay: this Idempotency-Key was used before)"
    what = "dry run" if job.get("dry_run") else "job"
    console.print(f"Accepted {what} [bold]{job['id']}[/]: {job['counts']['total']} records{replayed}.")
    if job.get("dry_run"):
        console.print("A dry run: nothing is written; the outcomes are what the batch would do now.")
    return job


def write_failed_results(client: httpx.Client, job: Job, target: Path, *, results_format: str = "ndjson") -> int:
    """Stream the job's failed results into `target` (NDJSON, or CSV with its header row; input order); return how
    many were written."""
    partial = target.with_name(target.name + ".part")
    written = 0
    deadline = time.monotonic() + RETRY_WINDOW_SECONDS
    try:
        while True:
            with client.stream(
                "GET",
                f"/jobs/{job['id']}/results",
                params={"outcome": "failed"},
                headers={"Accept": RESULTS_FORMATS[results_format][1]},
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    delay = retry_delay(response)
                    if delay is None or time.monotonic() + delay > deadline:
                        raise refusal(response)
                    time.sleep(delay)
                    continue
                with partial.open("wb") as out:
                    for part in response.iter_bytes():
                        out.write(part)
            break
        written = _count_results(partial, results_format)
        os.replace(partial, target)
    except httpx.TransportError as exc:
        raise unreachable(client, exc) from None
    except OSError as exc:
        raise CommandError(f"cannot write the failed results to {target}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return written


def _count_results(path: Path, results_format: str) -> int:
    """How many results a written file holds: its lines, or its CSV rows past the header (a message may hold a
    line break, so rows are counted by the csv module, not by lines)."""
    if results_format == "ndjson":
        with path.open("rb") as lines:
            return sum(1 for _ in lines)
    with path.open(newline="", encoding="utf-8") as rows:
        return max(0, sum(1 for _ in csv.reader(rows)) - 1)


def report(job: Job) -> None:
    """The job's end: how it finished and its counts (a dry run's: what would happen)."""
    took = job_duration(job)
    what = "Dry run" if job.get("dry_run") else "Job"
    console.print(f"{what} [bold]{job['id']}[/] {job['status']}" + (f" in {took}." if took else "."))
    print_table(console, counts_table(job))
    counts = job["counts"]
    if job.get("dry_run"):
        console.print(f"{counts['total']} records would be: {counts_summary(counts)}. Nothing was written.")
    else:
        console.print(f"{counts['total']} records: {counts_summary(counts)}.")


def run_push(args: argparse.Namespace) -> int:
    """Upload FILE as a batch, follow the job to its end, write the failed results; the exit status."""
    path = Path(args.file)
    kind = "businesses" if args.businesses else "customers"
    upload = prepare_upload(path, fmt=file_format(path, args.format), kind=kind)
    dry_run = bool(args.dry_run)
    results_format: str = args.results_format
    with open_client(args) as client:
        job = upload_batch(
            client,
            upload,
            path=batch_path(kind, args.customers),
            label=path.name,
            key=args.idempotency_key,
            dry_run=dry_run,
        )
        if args.no_wait:
            console.print(f"Not waiting. Follow it with: pfsync jobs {job['id']} --watch")
            return 0
        try:
            [job] = follow_jobs(client, [job], target=console, label="Dry run" if dry_run else "Processing")
        except KeyboardInterrupt:
            console.print(f"\nStopped watching; the job goes on. Follow it with: pfsync jobs {job['id']} --watch")
            raise
        report(job)
        target = failed_path(path, dry_run=bool(job.get("dry_run")), results_format=results_format)
        failed = "records that would fail" if job.get("dry_run") else "failed records"
        if job["counts"]["failed"]:
            written = write_failed_results(client, job, target, results_format=results_format)
            shape = (
                "one result per line: index, outcome, id, external_id, changed_fields, errors"
                if results_format == "ndjson"
                else "CSV: a header row, then a row per result"
            )
            console.print(f"{written} {failed} written to [bold]{escape(str(target))}[/] ({shape}).")
        elif target.exists():
            # A file left by an earlier push of FILE would read as this run's failures.
            target.unlink()
            console.print(f"No {failed}: removed {escape(str(target))}, left by an earlier push.")
    return 0 if succeeded(job) else 1
