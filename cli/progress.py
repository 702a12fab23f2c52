"""Progress of an upload and of jobs being processed, and a job's counts.

On a terminal these are rich's live bars. Into a pipe or a file (CI, scripts, tests) a live bar would be noise, so
the same progress comes as plain lines: one per tenth of an upload, and one per change of a job, at most every
PLAIN_INTERVAL seconds, plus its final state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cli.client import get_json
from cli.output import ServiceError, is_live
from core.jobs.status import FINISHED

SUCCEEDED = ("created", "replaced", "unchanged", "superseded")
OUTCOMES = (*SUCCEEDED, "failed", "cancelled")
POLL_SECONDS = 0.5
PLAIN_INTERVAL = 1.0
PLAIN_HEARTBEAT = 30.0
# How long following a job survives a service that stopped answering (a restart, a network blip).
RETRY_SECONDS = 60.0

Job = dict[str, Any]


def is_finished(job: Job) -> bool:
    return str(job["status"]) in FINISHED


def succeeded(job: Job) -> bool:
    """Every record of the finished job succeeded: created, replaced, unchanged or superseded."""
    counts: dict[str, int] = job["counts"]
    return str(job["status"]) == "completed" and counts["failed"] == 0 and counts["cancelled"] == 0


def counts_summary(counts: dict[str, int]) -> str:
    """The outcomes so far, e.g. "created 480, failed 20"."""
    parts = [f"{name} {counts[name]}" for name in OUTCOMES if counts.get(name)]
    return ", ".join(parts) or "no outcome yet"


def counts_table(job: Job) -> Table:
    """A job's records by outcome."""
    counts = job["counts"]
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("outcome")
    table.add_column("records", justify="right")
    for name in OUTCOMES:
        style = "red" if name in ("failed", "cancelled") and counts[name] else ""
        table.add_row(name, f"{counts[name]}", style=style)
    table.add_section()
    table.add_row("processed", f"{counts['processed']}")
    table.add_row("total", f"{counts['total']}", style="bold")
    return table


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def duration(seconds: float) -> str:
    """A short human duration: "40 ms", "1.4 s", "12 s", "3 min 4 s", "2 h 5 min", "3 d 4 h"."""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f} ms"
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def job_duration(job: Job) -> str | None:
    """How long the job took from acceptance to its end, once it ended."""
    created, finished = parse_time(job["created_at"]), parse_time(job.get("finished_at"))
    if created is None or finished is None:
        return None
    return duration((finished - created).total_seconds())


class UploadProgress:
    """Bytes of a file handed to the connection: a live bar on a terminal, a line per tenth otherwise."""

    def __init__(self, target: Console, *, label: str, total: int) -> None:
        self._target = target
        self._label = label
        self._total = total
        self._sent = 0
        self._printed_tenth = -1
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> UploadProgress:
        if is_live(self._target):
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._target,
            )
            self._task = self._bar.add_task(f"Uploading {escape(self._label)}", total=self._total or None)
            self._bar.start()
        return self

    def update(self, sent: int) -> None:
        """`sent` bytes of the file are on their way."""
        self._sent = sent
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=sent)
            return
        if self._total:
            tenth = min(10, sent * 10 // self._total)
            if tenth > self._printed_tenth:
                self._printed_tenth = tenth
                self._target.print(
                    f"Uploading {escape(self._label)}: {tenth * 10}% ({decimal(sent)} of {decimal(self._total)})"
                )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif exc_type is None:
            elapsed = time.monotonic() - self._started
            self._target.print(f"Uploaded {escape(self._label)} ({decimal(self._sent)}) in {duration(elapsed)}.")


class _PlainLines:
    """A job's progress as lines: on every change of status or processed count, at most every PLAIN_INTERVAL,
    and every PLAIN_HEARTBEAT while nothing changes (a job waiting for a worker), so a log shows it is alive."""

    def __init__(self, target: Console) -> None:
        self._target = target
        self._last: dict[str, tuple[str, int]] = {}
        self._printed_at: dict[str, float] = {}

    def show(self, job: Job) -> None:
        state = (job["status"], job["counts"]["processed"])
        now = time.monotonic()
        since = now - self._printed_at.get(job["id"], -PLAIN_HEARTBEAT)
        if self._last.get(job["id"]) == state:
            if since < PLAIN_HEARTBEAT:
                return
        elif not is_finished(job) and since < PLAIN_INTERVAL:
            return
        self._last[job["id"]] = state
        self._printed_at[job["id"]] = now
        counts = job["counts"]
        total = counts["total"]
        percent = 100 * counts["processed"] // total if total else 100
        self._target.print(
            f"Processing {job['id']}: {job['status']}, {counts['processed']}/{total} records ({percent}%)"
            f" — {counts_summary(counts)}"
        )


def short_counts(counts: dict[str, int]) -> str:
    """The outcomes in a few characters, for a bar: "29970 ok, 30 failed"."""
    parts = [f"{sum(counts[name] for name in SUCCEEDED)} ok"]
    parts += [f"{counts[name]} {name}" for name in ("failed", "cancelled") if counts[name]]
    return ", ".join(parts)


class _LiveBars:
    """A live bar per job, fitting 80 columns when it is labelled with a word rather than the job's id."""

    def __init__(self, target: Console, label: str | None) -> None:
        self._label = label
        self._bars = Progress(
            TextColumn("{task.description}"),
            TextColumn("{task.fields[status]:<9}"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=target,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _LiveBars:
        self._bars.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bars.stop()

    def show(self, job: Job) -> None:
        counts = job["counts"]
        fields = {"status": job["status"], "counts": short_counts(counts)}
        task = self._tasks.get(job["id"])
        if task is None:
            task = self._bars.add_task(escape(self._label or job["id"]), total=counts["total"] or None, **fields)
            self._tasks[job["id"]] = task
        self._bars.update(task, completed=counts["processed"], **fields)
        if is_finished(job):
            self._bars.stop_task(task)


def _poll(client: httpx.Client, job_id: str, failing_since: dict[str, float]) -> Job | None:
    """The job now; None while a retryable failure lasts less than RETRY_SECONDS."""
    try:
        job: Job = get_json(client, f"/jobs/{job_id}")
    except ServiceError as exc:
        since = failing_since.setdefault(job_id, time.monotonic())
        if not exc.retryable or time.monotonic() - since > RETRY_SECONDS:
            raise
        return None
    failing_since.pop(job_id, None)
    return job


def follow_jobs(client: httpx.Client, jobs: Sequence[Job], *, target: Console, label: str | None = None) -> list[Job]:
    """Poll the jobs until every one has finished, showing their progress; return their final state.

    On a terminal each job has a live bar, labelled `label` or else with the job's id.
    """
    latest = {job["id"]: job for job in jobs}
    failing_since: dict[str, float] = {}
    with ExitStack() as stack:
        show: Callable[[Job], None]
        if is_live(target):
            show = stack.enter_context(_LiveBars(target, label)).show
        else:
            show = _PlainLines(target).show
        for job in latest.values():
            show(job)
        while not all(is_finished(job) for job in latest.values()):
            time.sleep(POLL_SECONDS)
            for job_id, job in list(latest.items()):
                if is_finished(job):
                    continue
                fresh = _poll(client, job_id, failing_since)
                if fresh is not None:
                    latest[job_id] = fresh
                    show(fresh)
    return list(latest.values())
