"""`pfsync status`: for operators, the queue, the live workers and the unfinished jobs, read at the sources.

It reads PostgreSQL and the broker directly (DATABASE_URL / REDIS_URL, or the folder's embedded servers), not the
API, so it works while the API is down and shows every partner's jobs. A source that does not answer is reported
and the others are still shown; the exit status is then 1.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from rich.markup import escape
from rich.table import Table

from cli.output import console, err_console, print_table
from cli.progress import duration
from core.config import settings

if TYPE_CHECKING:
    from workers.inspect import WorkerState

INSPECT_TIMEOUT = 1.0


@dataclass(frozen=True)
class QueueState:
    name: str
    waiting: int  # messages in the queue
    unacknowledged: int  # delivered to a worker, not yet acknowledged (kombu's `unacked` hash)


@dataclass(frozen=True)
class JobState:
    id: str
    partner_id: str
    partner_name: str
    type: str
    business_id: str | None
    dry_run: bool
    status: str
    processed: int
    total: int
    failed: int
    created_at: str
    started_at: str | None
    age_seconds: float


@dataclass
class Status:
    """What each source said; a source that failed is None, with its error in `errors`."""

    queue: QueueState | None = None
    workers: list[WorkerState] | None = None
    jobs: list[JobState] | None = None
    unfinished_jobs: int | None = None
    errors: dict[str, str] | None = None


def read_queue() -> QueueState:
    """The service's queue in the broker: the same numbers /metrics reports."""
    from core.ops.metrics import read_broker

    broker = read_broker()
    return QueueState(settings.queue_name, broker.waiting, broker.unacked)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_unfinished_jobs(limit: int) -> tuple[list[JobState], int]:
    """The oldest unfinished jobs of every partner (up to `limit`), and how many there are in all."""
    from core.db import session_scope
    from core.jobs.service import unfinished_jobs

    with session_scope() as session:
        rows, count, now = unfinished_jobs(session, limit=limit)
    jobs = [
        JobState(
            id=job.id,
            partner_id=job.partner_id,
            partner_name=name,
            type=job.type,
            business_id=job.business_id,
            dry_run=job.dry_run,
            status=job.status,
            processed=job.processed,
            total=job.total,
            failed=job.failed,
            created_at=_utc(job.created_at),
            started_at=_utc(job.started_at) if job.started_at else None,
            age_seconds=round((now - job.created_at).total_seconds(), 3),
        )
        for job, name in rows
    ]
    return jobs, count


def read_status(limit: int) -> Status:
    """Ask each source; note what failed instead of stopping there."""
    from redis import RedisError
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    status = Status(errors={})
    assert status.errors is not None
    try:
        status.queue = read_queue()
    except (RedisError, OSError, RuntimeError) as exc:
        status.errors["broker"] = f"cannot reach the broker: {exc}"
    if status.queue is not None:  # a broadcast to a broker that is down would retry forever
        from workers.inspect import live_workers

        status.workers = live_workers(INSPECT_TIMEOUT)
    try:
        status.jobs, status.unfinished_jobs = read_unfinished_jobs(limit)
    except (OperationalError, OSError, RuntimeError) as exc:
        reason = getattr(exc, "orig", None) or exc
        status.errors["database"] = f"cannot reach the database: {str(reason).strip()}"
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        status.errors["database"] = f"cannot read the jobs ({reason}); is the schema migrated? (`pfsync migrate`)"
    return status


def _workers_line(workers: list[WorkerState]) -> str:
    if not workers:
        return f"[red]none[/] (no worker answered within {INSPECT_TIMEOUT:g} s)"
    described = []
    for worker in workers:
        facts = []
        if worker.concurrency is not None:
            facts.append(f"{worker.concurrency} processes")
        if worker.tasks_done is not None:
            facts.append(f"{worker.tasks_done} tasks done")
        if worker.queues is not None:
            facts.append("queues " + ", ".join(worker.queues))
        if worker.running:
            facts.append("running " + ", ".join(f"{c.job_id} chunk {c.chunk_no}" for c in worker.running))
        described.append(escape(worker.name) + (f" ({'; '.join(facts)})" if facts else ""))
    line = f"{len(workers)} live: " + "; ".join(described)
    if all(worker.queues is not None and settings.queue_name not in worker.queues for worker in workers):
        line += f"\n[yellow]none of them consumes the queue {escape(settings.queue_name)}[/]"
    return line


def _jobs_table(jobs: list[JobState]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("job", no_wrap=True)
    table.add_column("partner")
    table.add_column("type")
    table.add_column("status")
    table.add_column("processed", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    for job in jobs:
        percent = 100 * job.processed // job.total if job.total else 100
        table.add_row(
            job.id,
            f"{escape(job.partner_name)} ({job.partner_id})",
            f"{job.type} [magenta](dry run)[/]" if job.dry_run else job.type,
            job.status,
            f"{job.processed}/{job.total} ({percent}%)",
            str(job.failed),
            duration(job.age_seconds),
        )
    return table


def show_status(status: Status) -> None:
    """The status for a person."""
    summary = Table.grid(padding=(0, 2))
    if status.queue is not None:
        queue = status.queue
        summary.add_row(
            "queue", f"{escape(queue.name)}: {queue.waiting} waiting, {queue.unacknowledged} unacknowledged"
        )
    else:
        summary.add_row("queue", "[red]unknown[/]")
    summary.add_row("workers", _workers_line(status.workers) if status.workers is not None else "[red]unknown[/]")
    if status.unfinished_jobs is not None:
        summary.add_row("jobs", f"{status.unfinished_jobs} unfinished (queued or running)")
    else:
        summary.add_row("jobs", "[red]unknown[/]")
    print_table(console, summary)
    if status.jobs:
        console.print()
        print_table(console, _jobs_table(status.jobs))
        if status.unfinished_jobs is not None and status.unfinished_jobs > len(status.jobs):
            console.print(f"… and {status.unfinished_jobs - len(status.jobs)} more (--limit shows more).")
    for message in (status.errors or {}).values():
        err_console.print(f"[red]error:[/] {escape(message)}")


def run_status(*, as_json: bool, limit: int) -> int:
    """Print the status; exit status 1 when a source did not answer."""
    status = read_status(limit)
    if as_json:
        sys.stdout.write(orjson.dumps(asdict(status)).decode() + "\n")
    else:
        show_status(status)
    return 1 if status.errors else 0
