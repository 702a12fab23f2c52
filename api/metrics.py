"""HTTP request metrics, and the /metrics document that joins them to the job and queue metrics.

Request counts and latencies are observed by the process that answers the request. When one API runs as several
processes (`uvicorn --workers N`, gunicorn), set `PROMETHEUS_MULTIPROC_DIR` to an empty directory that all of
them share, before they start: prometheus-client then keeps each process's values in files there, and a scrape
answered by any process sums them all. Unset, the values live in the process's registry.

Job and queue metrics (core.ops.metrics) are read from PostgreSQL and Redis at scrape time, so they are the same
whichever process answers and need no such directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from core.ops.metrics import JobMetricsCollector

disable_created_metrics()  # type: ignore[no-untyped-call]

# A route's template (`/jobs/{job_id}`), never its concrete path, so the label stays bounded; requests that
# matched no route share `unmatched`.
HTTP_REQUESTS = Counter(
    "pfsync_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "pfsync_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts), by method and route template.",
    ["method", "route"],
    # Batches are answered after every record is stored, and `Prefer: wait=N` can hold a request for 60 s.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
RATE_LIMIT_UNAVAILABLE = Counter(
    "pfsync_rate_limit_unavailable",
    "Requests admitted without being counted against their partner's budget, because Redis could not be reached.",
)
_job_metrics = JobMetricsCollector()


def observe_request(*, method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


class _Everything:
    """A collector exposing another registry's metrics (this process's, in single-process mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def scrape_registry(multiproc_dir: str | None = None) -> CollectorRegistry:
    """A registry holding every metric of this scrape: the HTTP ones (of all processes in multiprocess mode)
    and the job and queue ones."""
    directory = multiproc_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry = CollectorRegistry()
    if directory:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Everything(REGISTRY))
    registry.register(_job_metrics)
    return registry


def render(accept: str | None) -> tuple[bytes, str]:
    """The /metrics body and its content type: Prometheus text, or OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(scrape_registry()), content_type
