"""SQL for the operational read-outs: the counts and ages the /metrics scrape reports.

Each function runs one statement on a connection the caller opened; the caller owns the (read-only) transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, text

from core.records.rules import OUTCOMES


def ping(conn: Connection) -> None:
    """A round trip to the database."""
    conn.execute(text("SELECT 1"))


def begin_read_only(conn: Connection, *, statement_timeout_ms: int) -> None:
    """Make the current transaction read-only, each statement in it bounded by `statement_timeout_ms`."""
    conn.execute(text("SET TRANSACTION READ ONLY"))
    conn.execute(text(f"SET LOCAL statement_timeout = {statement_timeout_ms}"))


def job_counts(conn: Connection) -> Sequence[Row[*tuple[Any, ...]]]:
    """Per job type, status and dry run or not: the number of jobs, then the sum of each record outcome counter,
    in OUTCOMES order."""
    sums = ", ".join(f"sum({name})" for name in OUTCOMES)
    return conn.execute(
        text(f"SELECT type, status, dry_run, count(*), {sums} FROM sync_jobs GROUP BY type, status, dry_run")
    ).all()


def purged_record_counts(conn: Connection) -> Sequence[Row[str, bool, int]]:
    """Per outcome and dry run or not, the records of jobs already purged."""
    return conn.execute(text("SELECT outcome, dry_run, records FROM purged_record_counts")).all()


def records_waiting(conn: Connection) -> int:
    """Records of unfinished jobs not yet processed."""
    return int(
        conn.execute(
            text("SELECT coalesce(sum(total - processed), 0) FROM sync_jobs WHERE finished_at IS NULL")
        ).scalar_one()
    )


def oldest_waiting_age(conn: Connection) -> float | None:
    """Seconds since the acceptance of the oldest job with a released chunk not yet processed; None when none."""
    age = conn.execute(
        text(
            "SELECT extract(epoch FROM now() - min(j.created_at)) FROM job_chunks c "
            "JOIN sync_jobs j ON j.id = c.job_id WHERE c.state = 'queued' AND c.processed_at IS NULL"
        )
    ).scalar_one()
    return None if age is None else float(age)


def _chunk_histogram_sql(buckets_seconds: Sequence[float]) -> str:
    buckets = ", ".join(f"count(*) FILTER (WHERE duration_ms <= {round(le * 1000)})" for le in buckets_seconds)
    return (
        f"SELECT {buckets}, count(*), coalesce(sum(duration_ms), 0) FROM job_chunks "
        "WHERE duration_ms IS NOT NULL AND processed_at > now() - make_interval(secs => :window)"
    )


def chunk_histogram(
    conn: Connection, *, buckets_seconds: Sequence[float], window_seconds: float
) -> Row[*tuple[Any, ...]]:
    """Cumulative chunk counts per bucket, the count of all and the sum of their durations in ms, over the
    chunks processed in the last `window_seconds`."""
    return conn.execute(text(_chunk_histogram_sql(buckets_seconds)), {"window": window_seconds}).one()


def delivery_counts(conn: Connection) -> Sequence[Row[str, int]]:
    """Per status, the number of webhook deliveries."""
    return conn.execute(text("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")).all()


def records_by_interval(conn: Connection, *, window_seconds: int, bucket_seconds: int) -> Sequence[Row[Any]]:
    """Records that got an outcome in the last `window_seconds`, per interval of `bucket_seconds` (numbered from 0,
    the oldest, counted back from now) and outcome: (bucket, then each outcome in OUTCOMES order). Reads the chunks
    processed in the window through ix_job_chunks_processed_at, never their results."""
    sums = ", ".join(f"coalesce(sum((outcome_counts ->> '{name}')::bigint), 0)" for name in OUTCOMES)
    last = window_seconds // bucket_seconds - 1
    return conn.execute(
        text(
            f"SELECT least({last}, greatest(0, floor(extract(epoch FROM processed_at - "
            f"  (now() - make_interval(secs => :window))) / :bucket)))::int AS bucket, {sums} "
            "FROM job_chunks WHERE processed_at > now() - make_interval(secs => :window) "
            "AND outcome_counts IS NOT NULL GROUP BY 1 ORDER BY 1"
        ),
        {"window": window_seconds, "bucket": bucket_seconds},
    ).all()
