"""`pfsync push FILE (--businesses | --customers BUSINESS_ID)`: upload a batch, follow its job, report.

The file goes up as it is read (cli.batch_files), with a progress bar. Then the job is followed until it finishes,
its counts are printed and the failed results are written next to FILE. Exit status: 0 every record
succeeded, 1 some failed or were cancelled, 2 usage error, 3 the service refused the batch or could not be reached.
"""

from __future__ import annotations

import argparse
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


def failed_path(path: Path) -> Path:
    """Where the failed results of FILE go: `<FILE>.failed.ndjson`, next to it."""
    return path.with_name(path.name + FAILED_SUFFIX)


def batch_path(kind: str, business_id: str | None) -> str:
    """The batch endpoint for businesses, or for the customers of a business."""
    if kind == "businesses":
        return "/sync/businesses/batch"
    assert business_id is not None
    return f"/sync/businesses/{quote(business_id, safe='')}/customers/batch"


def upload_batch(client: httpx.Client, upload: Upload, *, path: str, label: str, key: str | None) -> Job:
    """Send the batch with a progress bar; the job the service answers with."""
    headers = {"Content-Type": upload.content_type}
    if upload.content_length is not None:
        headers["Content-Length"] = str(upload.content_length)
    if key:
        headers["Idempotency-Key"] = key
    with UploadProgress(console, label=label, total=upload.file_size) as progress:
        response = call(
            client,
            "POST",
            path,
            content=lambda: upload.parts(progress.update),
            headers=headers,
            timeout=UPLOAD_TIMEOUT,
        )
    body: Job = response.json()
    job: Job = body["job"] if "job" in body else body
    replayed = ""
    if response.headers.get("Idempotent-Replayed"):
        replayed = " (a replay: this Idempotency-Key was used before)"
    console.print(f"Accepted job [bold]{job['id']}[/]: {job['counts']['total']} records{replayed}.")
    return job


def write_failed_results(client: httpx.Client, job: Job, target: Path) -> int:
    """Stream the job's failed results into `target` (NDJSON, input order); return how many were written."""
    partial = target.with_name(target.name + ".part")
    lines = 0
    deadline = time.monotonic() + RETRY_WINDOW_SECONDS
    try:
        while True:
            with client.stream(
                "GET",
                f"/jobs/{job['id']}/results",
                params={"outcome": "failed"},
                headers={"Accept": "application/x-ndjson"},
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
                        lines += part.count(b"\n")
            break
        os.replace(partial, target)
    except httpx.TransportError as exc:
        raise unreachable(client, exc) from None
    except OSError as exc:
        raise CommandError(f"cannot write the failed results to {target}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return lines


def report(job: Job) -> None:
    """The job's end: how it finished and its counts."""
    took = job_duration(job)
    console.print(f"Job [bold]{job['id']}[/] {job['status']}" + (f" in {took}." if took else "."))
    print_table(console, counts_table(job))
    counts = job["counts"]
    console.print(f"{counts['total']} records: {counts_summary(counts)}.")


def run_push(args: argparse.Namespace) -> int:
    """Upload FILE as a batch, follow the job to its end, write the failed results; the exit status."""
    path = Path(args.file)
    kind = "businesses" if args.businesses else "customers"
    upload = prepare_upload(path, fmt=file_format(path, args.format), kind=kind)
    with open_client(args) as client:
        job = upload_batch(
            client, upload, path=batch_path(kind, args.customers), label=path.name, key=args.idempotency_key
        )
        if args.no_wait:
            console.print(f"Not waiting. Follow it with: pfsync jobs {job['id']} --watch")
            return 0
        try:
            [job] = follow_jobs(client, [job], target=console, label="Processing")
        except KeyboardInterrupt:
            console.print(f"\nStopped watching; the job goes on. Follow it with: pfsync jobs {job['id']} --watch")
            raise
        report(job)
        target = failed_path(path)
        if job["counts"]["failed"]:
            written = write_failed_results(client, job, target)
            console.print(
                f"{written} failed records written to [bold]{escape(str(target))}[/] "
                "(one result per line: index, outcome, id, external_id, errors)."
            )
        elif target.exists():
            # A file left by an earlier push of FILE would read as this run's failures.
            target.unlink()
            console.print(f"No failed records: removed {escape(str(target))}, left by an earlier push.")
    return 0 if succeeded(job) else 1
