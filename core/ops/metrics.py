"""Job and queue metrics, computed at scrape time from PostgreSQL and Redis, the sources of truth.

Nothing here lives in a process's memory, so the numbers are the same whichever API process serves /metrics,
however many workers there are and wherever they run. Each scrape costs a handful of indexed or aggregate
queries and three Redis commands; a source that does not answer is reported by `pfsync_metrics_source_up`
instead of failing the scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.config import settings
from core.db import get_engine
from core.jobs.status import JobStatus
from core.ops import repository
from core.ops.broker import broker_url
from core.records.rules import OUTCOMES

log = logging.getLogger(__name__)

JOB_TYPES = ("businesses", "customers")
JOB_STATUSES: tuple[str, ...] = tuple(status.value for status in JobStatus)
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
# Upper bounds, in seconds, of the chunk processing time buckets (a chunk is PFSYNC_CHUNK_SIZE records).
CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# kombu's Redis transport keeps messages sent with a priority in sibling lists: `<queue>\x06\x16<priority>`.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
UNACKED_KEY = "unacked"
_STATEMENT_TIMEOUT_MS = 5000


# The `dry_run` label: a dry run's jobs and records (SPEC §9) are counted apart from those that wrote something.
DRY_RUN_LABELS = {False: "false", True: "true"}


@dataclass(slots=True)
class DatabaseSnapshot:
    """What PostgreSQL says at one instant."""

    # (type, status, dry run) -> jobs
    jobs: dict[tuple[str, str, bool], int] = field(default_factory=dict)
    # (outcome, dry run) -> records
    records: dict[tuple[str, bool], int] = field(default_factory=dict)
    records_waiting: int = 0
    oldest_waiting_seconds: float = 0.0
    # Cumulative counts per bucket of CHUNK_BUCKETS, then the count of every chunk (+Inf), and the sum in seconds.
    chunk_buckets: list[int] = field(default_factory=list)
    chunk_seconds_sum: float = 0.0
    deliveries: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    waiting: int
    unacked: int


def read_database() -> DatabaseSnapshot:
    """Counts of jobs and records, the waiting work and recent chunk times, in one read-only transaction."""
    snapshot = DatabaseSnapshot()
    with get_engine().connect() as conn, conn.begin():
        repository.begin_read_only(conn, statement_timeout_ms=_STATEMENT_TIMEOUT_MS)
        # Records are counted from the jobs' own counters (moved in the transaction that wrote the records) plus
        # those of jobs already purged, which the purge folds into purged_record_counts in the same statement.
        records = dict.fromkeys(((name, dry_run) for name in OUTCOMES for dry_run in DRY_RUN_LABELS), 0)
        for row in repository.job_counts(conn):
            kind, status, dry_run = row[0], row[1], bool(row[2])
            snapshot.jobs[(kind, status, dry_run)] = int(row[3])
            for name, value in zip(OUTCOMES, row[4:], strict=True):
                records[(name, dry_run)] += int(value or 0)
        for outcome, dry_run, count in repository.purged_record_counts(conn):
            records[(outcome, bool(dry_run))] = records.get((outcome, bool(dry_run)), 0) + int(count)
        snapshot.records = records
        snapshot.records_waiting = repository.records_waiting(conn)
        # Released chunks not yet processed; their age runs from the job's acceptance (there is no release time).
        oldest = repository.oldest_waiting_age(conn)
        snapshot.oldest_waiting_seconds = max(0.0, float(oldest or 0))
        row = repository.chunk_histogram(
            conn, buckets_seconds=CHUNK_BUCKETS, window_seconds=settings.metrics_window_seconds
        )
        snapshot.chunk_buckets = [int(v) for v in row[:-1]]
        snapshot.chunk_seconds_sum = int(row[-1]) / 1000
        snapshot.deliveries = {status: int(count) for status, count in repository.delivery_counts(conn)}
    return snapshot


def read_broker() -> BrokerSnapshot:
    """Messages waiting in the chunk queue, and messages delivered to workers but not yet acknowledged."""
    client = redis.Redis.from_url(broker_url(), socket_connect_timeout=2, socket_timeout=2)
    try:
        pipe = client.pipeline(transaction=False)
        for suffix in _PRIORITY_SUFFIXES:
            pipe.llen(settings.queue_name + suffix)
        pipe.hlen(UNACKED_KEY)
        *lengths, unacked = pipe.execute()
    finally:
        client.close()
    return BrokerSnapshot(waiting=sum(int(n) for n in lengths), unacked=int(unacked))


class JobMetricsCollector(Collector):
    """A prometheus-client collector that reads the job and queue metrics at each scrape."""

    def describe(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | GaugeHistogramMetricFamily]:
        # Describing without collecting keeps registration from querying the database.
        return _families(None, None, {"database": 1, "broker": 1})

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | GaugeHistogramMetricFamily]:
        up = {"database": 1, "broker": 1}
        database: DatabaseSnapshot | None = None
        broker: BrokerSnapshot | None = None
        try:
            database = read_database()
        except Exception as exc:
            up["database"] = 0
            log.warning("metrics: database unavailable: %s", exc)
        try:
            broker = read_broker()
        except Exception as exc:
            up["broker"] = 0
            log.warning("metrics: broker unavailable: %s", exc)
        return _families(database, broker, up)


def _families(
    database: DatabaseSnapshot | None, broker: BrokerSnapshot | None, up: dict[str, int]
) -> list[GaugeMetricFamily | CounterMetricFamily | GaugeHistogramMetricFamily]:
    jobs = GaugeMetricFamily(
        "pfsync_jobs",
        "Jobs kept (PFSYNC_JOB_RETENTION_DAYS), by type, status and whether they are dry runs.",
        labels=["type", "status", "dry_run"],
    )
    records = CounterMetricFamily(
        "pfsync_records",
        "Records that reached an outcome (in a dry run, a would-be outcome), by outcome, since the service began.",
        labels=["outcome", "dry_run"],
    )
    waiting_records = GaugeMetricFamily("pfsync_records_waiting", "Records of unfinished jobs not yet processed.")
    oldest = GaugeMetricFamily(
        "pfsync_oldest_waiting_work_seconds",
        "Age of the oldest chunk released to the workers and not yet processed, counted from its job's acceptance; "
        "0 when none waits.",
    )
    chunk_seconds = GaugeHistogramMetricFamily(
        "pfsync_chunk_seconds",
        "Time workers took to apply a chunk, over the chunks applied in the last PFSYNC_METRICS_WINDOW_SECONDS.",
    )
    deliveries = GaugeMetricFamily(
        "pfsync_webhook_deliveries", "Webhook deliveries of the jobs kept, by status.", labels=["status"]
    )
    queue = GaugeMetricFamily(
        "pfsync_queue_depth",
        "Broker messages: waiting in the chunk queue, or delivered to a worker and not yet acknowledged.",
        labels=["state"],
    )
    source_up = GaugeMetricFamily(
        "pfsync_metrics_source_up", "Whether a source of these metrics answered this scrape.", labels=["source"]
    )
    if database is not None:
        for dry_run, label in DRY_RUN_LABELS.items():
            for kind in JOB_TYPES:
                for status in JOB_STATUSES:
                    jobs.add_metric([kind, status, label], database.jobs.get((kind, status, dry_run), 0))
            for outcome in OUTCOMES:
                records.add_metric([outcome, label], database.records.get((outcome, dry_run), 0))
        waiting_records.add_metric([], database.records_waiting)
        oldest.add_metric([], database.oldest_waiting_seconds)
        _add_chunk_histogram(chunk_seconds, database.chunk_buckets, database.chunk_seconds_sum)
        for status in DELIVERY_STATUSES:
            deliveries.add_metric([status], database.deliveries.get(status, 0))
    if broker is not None:
        queue.add_metric(["waiting"], broker.waiting)
        queue.add_metric(["unacked"], broker.unacked)
    for source, value in up.items():
        source_up.add_metric([source], value)
    return [jobs, records, waiting_records, oldest, chunk_seconds, deliveries, queue, source_up]


def _add_chunk_histogram(family: GaugeHistogramMetricFamily, counts: Sequence[int], seconds_sum: float) -> None:
    bounds = [*(str(le) for le in CHUNK_BUCKETS), "+Inf"]  # "0.01" … "60.0", as prometheus-client writes them
    family.add_metric([], list(zip(bounds, counts, strict=True)), seconds_sum)
