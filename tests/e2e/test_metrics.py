"""GET /metrics: every family and label is there, and the values follow the jobs a real worker runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import process_env, publishing_to, wait_job

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: Any) -> Samples:
    response = client.get("/metrics", auth=None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_no_credentials_and_name_every_family(app_client: Any) -> None:
    app_client.get("/healthz")  # HTTP series appear once a request was answered
    samples = scrape(app_client)
    names = {name for name, _ in samples}
    for name in (
        "pfsync_jobs",
        "pfsync_records_total",
        "pfsync_records_waiting",
        "pfsync_oldest_waiting_work_seconds",
        "pfsync_chunk_seconds_bucket",
        "pfsync_chunk_seconds_gcount",
        "pfsync_chunk_seconds_gsum",
        "pfsync_queue_depth",
        "pfsync_webhook_deliveries",
        "pfsync_metrics_source_up",
        "pfsync_http_requests_total",
        "pfsync_http_request_duration_seconds_bucket",
    ):
        assert name in names, name
    labels = {(name, key) for name, pairs in samples for key, _ in pairs}
    assert {("pfsync_jobs", "type"), ("pfsync_jobs", "status"), ("pfsync_records_total", "outcome")} <= labels
    assert {("pfsync_jobs", "dry_run"), ("pfsync_records_total", "dry_run")} <= labels
    assert {("pfsync_queue_depth", "state"), ("pfsync_chunk_seconds_bucket", "le")} <= labels
    assert {("pfsync_http_requests_total", key) for key in ("method", "route", "status")} <= labels
    for status in ("queued", "running", "completed", "cancelled", "failed"):
        for dry_run in ("false", "true"):
            assert ("pfsync_jobs", (("dry_run", dry_run), ("status", status), ("type", "customers"))) in samples
    for state in ("waiting", "unacked"):
        assert ("pfsync_queue_depth", (("state", state),)) in samples
    assert value(samples, "pfsync_metrics_source_up", source="database") == 1
    assert value(samples, "pfsync_metrics_source_up", source="broker") == 1


def test_openmetrics_is_served_to_scrapers_that_ask_for_it(app_client: Any) -> None:
    response = app_client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "# TYPE pfsync_chunk_seconds gaugehistogram" in response.text
    assert response.text.endswith("# EOF\n")


@pytest.mark.usefixtures("worker")
def test_values_move_after_a_job(client: Any) -> None:
    before = scrape(client)
    records = [{"external_id": f"m{i}", "name": f"Metric {i}"} for i in range(5)] + [{"name": ""}]
    response = client.post("/sync/businesses/batch", json={"businesses": records})
    assert response.status_code == 202
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "completed"
    client.get(f"/jobs/{job['id']}")
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Other tests' jobs may finish meanwhile, so the counters move by at least this job's share.
    assert delta("pfsync_records_total", outcome="created", dry_run="false") >= 5
    assert delta("pfsync_records_total", outcome="failed", dry_run="false") >= 1
    assert delta("pfsync_jobs", type="businesses", status="completed", dry_run="false") >= 1
    # A gauge over the chunks of the trailing PFSYNC_METRICS_WINDOW_SECONDS: other tests' chunks leave it as this
    # job's enters, so it need not grow; this job's chunk is in it.
    assert value(after, "pfsync_chunk_seconds_gcount") >= 1
    assert value(after, "pfsync_chunk_seconds_gsum") > 0
    buckets = [v for (name, labels), v in after.items() if name == "pfsync_chunk_seconds_bucket"]
    assert max(buckets) == value(after, "pfsync_chunk_seconds_gcount")
    route = {"method": "GET", "route": "/jobs/{job_id}", "status": "200"}
    assert delta("pfsync_http_requests_total", **route) >= 2
    batch_route = {"method": "POST", "route": "/sync/businesses/batch", "status": "202"}
    assert delta("pfsync_http_requests_total", **batch_route) == 1
    assert delta("pfsync_http_request_duration_seconds_count", method="POST", route="/sync/businesses/batch") == 1


def test_waiting_work_shows_in_queue_depth_and_oldest_age(client: Any, idle_queue: str) -> None:
    with publishing_to(idle_queue):
        response = client.post("/sync/businesses/batch", json={"businesses": [{"external_id": "w", "name": "W"}]})
        assert response.status_code == 202
        time.sleep(1.1)
        samples = scrape(client)
        assert value(samples, "pfsync_queue_depth", state="waiting") == 1
    assert value(samples, "pfsync_oldest_waiting_work_seconds") >= 1.0
    assert value(samples, "pfsync_records_waiting") >= 1
    assert client.post(f"/jobs/{response.json()['id']}/cancel").status_code == 200


def test_http_metrics_add_up_across_api_processes(tmp_path: Path) -> None:
    """Two API processes answer requests; a scrape in a third sums them through PROMETHEUS_MULTIPROC_DIR."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from api.app import app\n"
        "client = TestClient(app)\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    assert client.get('/healthz').status_code == 200\n"
    )
    env = process_env(PROMETHEUS_MULTIPROC_DIR=str(directory))
    processes = [subprocess.Popen([sys.executable, "-c", script, str(n)], env=env) for n in (3, 4)]
    assert [p.wait(60) for p in processes] == [0, 0]
    from api.metrics import scrape_registry

    families = {f.name: f for f in scrape_registry(str(directory)).collect()}
    requests = {
        tuple(sorted(s.labels.items())): s.value
        for s in families["pfsync_http_requests"].samples
        if s.name == "pfsync_http_requests_total"
    }
    assert requests[(("method", "GET"), ("route", "/healthz"), ("status", "200"))] == 7
    assert "pfsync_jobs" in families
