"""The console's pages through a real API process and worker: what they show agrees with the partner API's own
figures, filters and paging work, downloads are the API's results, nothing is loaded from another host, and every
page answers quickly."""

from __future__ import annotations

import csv
import io
import re
import statistics
import time
from collections import Counter
from html.parser import HTMLParser
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import PartnerKey, make_partner
from tests.console.conftest import (
    Console,
    Operator,
    mixed_records,
    partner_client,
    sign_in,
    submit_businesses,
    wait_finished,
    waiting_job,
)


class _Links(HTMLParser):
    """Every URL a page names: in src, href, action, and any attribute holding one."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        for name, value in attrs:
            if value and (
                name in ("src", "href", "action", "data-live-url", "srcset", "poster", "data") or "//" in value
            ):
                self.urls.append(value)


def _urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def _counts(html: str) -> dict[str, int]:
    return {
        name: int(value.replace("\u202f", "")) for name, value in re.findall(r'data-count="(\w+)">([\d\u202f]+)<', html)
    }


def _api_ndjson(console: Console, partner: PartnerKey, job_id: str, outcome: str | None) -> bytes:
    with partner_client(console, partner) as client:
        params = {"outcome": outcome} if outcome else {}
        response = client.get(f"/jobs/{job_id}/results", params=params, headers={"Accept": "application/x-ndjson"})
    assert response.status_code == 200
    return response.content


@pytest.fixture(scope="module")
def finished_job(console: Console) -> tuple[PartnerKey, dict[str, Any]]:
    """A partner with a finished job of 40 businesses, some of which failed in every way."""
    partner = make_partner("pages partner")
    job = submit_businesses(console, partner, mixed_records(40, "pg"))
    return partner, wait_finished(console, partner, job["id"])


def test_a_jobs_page_shows_the_apis_figures_and_its_downloads_are_the_apis_results(
    console: Console, viewer: Operator, finished_job: tuple[PartnerKey, dict[str, Any]]
) -> None:
    partner, job = finished_job
    with sign_in(console, viewer) as session:
        page = session.get(f"/console/jobs/{job['id']}")
        assert page.status_code == 200
        assert _counts(page.text) == job["counts"]
        assert job["counts"]["failed"] > 0
        assert partner.key_id in page.text  # the key that submitted it
        assert "pages partner" in page.text

        failed = [orjson.loads(line) for line in _api_ndjson(console, partner, job["id"], "failed").splitlines()]
        by_code = Counter(error["code"] for result in failed for error in result["errors"])
        shown = dict(re.findall(r'data-error-code="(\w+)"><td><code>\w+</code></td><td class="num">(\d+)<', page.text))
        assert {code: int(n) for code, n in shown.items()} == dict(by_code)
        assert [int(i) for i in re.findall(r'<tr data-index="(\d+)">', page.text)] == [r["index"] for r in failed]

        for outcome in ("failed", None):
            query = "?outcome=failed" if outcome else ""
            download = session.get(f"/console/jobs/{job['id']}/results.ndjson{query}")
            assert download.status_code == 200
            assert download.headers["content-type"] == "application/x-ndjson"
            assert download.headers["content-disposition"].startswith("attachment;")
            assert download.content == _api_ndjson(console, partner, job["id"], outcome)

            as_csv = session.get(f"/console/jobs/{job['id']}/results.csv{query}")
            assert as_csv.status_code == 200
            assert as_csv.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(as_csv.text)))
            expected = [orjson.loads(line) for line in _api_ndjson(console, partner, job["id"], outcome).splitlines()]
            assert [int(row["index"]) for row in rows] == [r["index"] for r in expected]
            for row, result in zip(rows, expected, strict=True):
                assert row["outcome"] == result["outcome"]
                assert row["id"] == (result["id"] or "")
                assert row["external_id"] == (result["external_id"] or "")
                assert row["error_codes"] == ";".join(e["code"] for e in result["errors"])

        chunks = re.findall(r'<tr data-chunk="(\d+)">', page.text)
        assert chunks
        assert chunks == [str(n) for n in range(len(chunks))]
        live = session.get(f"/console/live/jobs/{job['id']}")
        assert live.status_code == 200
        assert _counts(live.text) == job["counts"]
        assert "<html" not in live.text  # a fragment, swapped into the page


def test_the_overview_shows_the_queue_workers_chart_and_jobs_by_status(
    console: Console, viewer: Operator, finished_job: tuple[PartnerKey, dict[str, Any]]
) -> None:
    _, job = finished_job
    with sign_in(console, viewer) as session:
        page = session.get("/console/")
        assert page.status_code == 200
        for figure in ("queue-waiting", "queue-unacked", "oldest-waiting", "records-waiting"):
            assert f'data-figure="{figure}"' in page.text
        assert "<svg" in page.text
        assert "Records per second" in page.text
        assert re.search(r'data-outcome="created"[^>]*>.*created: [1-9]', page.text)
        assert job["id"] in page.text  # among the latest jobs
        completed = re.search(r'data-jobs-count="completed">([\d\u202f]+)<', page.text)
        assert completed is not None
        assert int(completed[1].replace("\u202f", "")) >= 1

        def worker_listed() -> bool:
            live = session.get("/console/live/overview").text
            return "console-worker" in live and "No worker answered" not in live

        deadline = time.monotonic() + 20
        while not worker_listed():
            assert time.monotonic() < deadline, "the worker never showed on the overview"
            time.sleep(0.5)


def test_jobs_are_listed_newest_first_filtered_found_by_id_and_paged(console: Console, viewer: Operator) -> None:
    partner = make_partner("filtered partner")
    other = make_partner("other filtered partner")
    done = [wait_finished(console, partner, submit_businesses(console, partner, [{"name": f"D{i}"}])["id"])["id"]
            for i in range(3)]  # fmt: skip
    queued = waiting_job(partner)
    theirs = waiting_job(other)
    with sign_in(console, viewer) as session:
        everything = session.get("/console/jobs")
        assert everything.status_code == 200
        listed = re.findall(r'<tr data-job-id="(job_\w+)"', everything.text)
        assert listed[:2] == [theirs, queued]
        assert listed.index(done[2]) < listed.index(done[1]) < listed.index(done[0])

        mine = re.findall(
            r'<tr data-job-id="(job_\w+)"', session.get(f"/console/jobs?partner={partner.partner_id}").text
        )
        assert mine == [queued, *reversed(done)]
        queued_only = session.get(f"/console/jobs?status=queued&partner={partner.partner_id}&type=businesses").text
        assert re.findall(r'<tr data-job-id="(job_\w+)"', queued_only) == [queued]
        assert 'data-status="completed"' not in session.get("/console/jobs?status=queued").text
        assert "No jobs." in session.get(f"/console/jobs?type=customers&partner={partner.partner_id}").text
        # The empty fields of a submitted filter form mean "any".
        assert session.get("/console/jobs?status=&type=&partner=").status_code == 200

        found = session.get(f"/console/jobs?id={done[1]}")
        assert found.status_code == 303
        assert found.headers["location"] == f"/console/jobs/{done[1]}"
        missing = session.get("/console/jobs?id=job_nothing")
        assert missing.status_code == 404
        assert "No job job_nothing" in missing.text
        for bad in ("status=lost", "type=people", "partner=x'--", "after=1"):
            assert session.get(f"/console/jobs?{bad}").status_code == 400

        # Keyset pages, 50 at a time: the older page follows on from the first without repeating it.
        many = make_partner("partner with many jobs")
        jobs = [waiting_job(many, count=1) for _ in range(53)]

        def page(query: str) -> tuple[list[str], str]:
            text = session.get("/console/jobs" + query).text
            return re.findall(r'data-job-id="(job_\w+)"', text), text

        first, text = page(f"?partner={many.partner_id}")
        assert first == list(reversed(jobs))[:50]
        assert 'rel="prev"' not in text
        older = re.search(r'href="/console/jobs(\?[^"]+)" rel="next"', text)
        assert older is not None
        second, text = page(older[1].replace("&amp;", "&"))
        assert second == list(reversed(jobs))[50:]
        assert 'rel="next"' not in text
        newer = re.search(r'href="/console/jobs(\?[^"]+)" rel="prev"', text)
        assert newer is not None
        assert page(newer[1].replace("&amp;", "&"))[0] == first


def test_partners_show_their_jobs_records_and_keys(console: Console, viewer: Operator) -> None:
    partner = make_partner("partner with figures")
    job = wait_finished(console, partner, submit_businesses(console, partner, mixed_records(10, "pp"))["id"])
    with sign_in(console, viewer) as session:
        listing = session.get("/console/partners")
        assert listing.status_code == 200
        assert f'data-partner-id="{partner.partner_id}"' in listing.text or 'rel="next"' in listing.text
        page = session.get(f"/console/partners/{partner.partner_id}")
        assert page.status_code == 200
        counts = _counts(page.text)
        assert counts["total"] == job["counts"]["total"]
        assert counts["failed"] == job["counts"]["failed"]
        assert job["id"] in page.text
        key_row = re.search(rf'<tr id="{partner.key_id}".*?</tr>', page.text, re.S)
        assert key_row is not None
        assert "never" not in key_row[0].split("data-last-used")[1].split("</td>")[0]  # it was used: last_used_at
        assert session.get("/console/partners/ptn_nothing").status_code == 404


def test_no_page_loads_anything_from_another_host(
    console: Console, admin: Operator, finished_job: tuple[PartnerKey, dict[str, Any]]
) -> None:
    partner, job = finished_job
    with sign_in(console, admin) as session:
        pages = [
            "/console/",
            "/console/jobs",
            f"/console/jobs/{job['id']}",
            "/console/partners",
            f"/console/partners/{partner.partner_id}",
            "/console/live/overview",
            "/console/live/jobs",
            f"/console/live/jobs/{job['id']}",
            "/console/jobs/job_nothing",
        ]
        assets: set[str] = set()
        for path in pages:
            response = session.get(path)
            assert response.status_code in (200, 404), path
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "script-src 'self'" in csp
            for url in _urls(response.text):
                assert url.startswith(("/", "data:", "#")), (path, url)
                assert not url.startswith("//"), (path, url)
                if url.startswith("/console/static/"):
                    assets.add(url)
            assert "http://" not in response.text, path
            assert "https://" not in response.text, path
        login = httpx.get(console.url + "/console/login").text
        assert all(u.startswith(("/", "data:", "#")) and not u.startswith("//") for u in _urls(login))
        assert assets == {"/console/static/console.css", "/console/static/console.js"}
        for asset in assets:
            content = session.get(asset)
            assert content.status_code == 200
            for outside in ("http://", "https://", "url(", "@import"):
                assert outside not in content.text, (asset, outside)


def test_every_page_answers_quickly(console: Console, viewer: Operator, finished_job: tuple[PartnerKey, Any]) -> None:
    """A smoke test of page times on the suite's small data; `make console-bench` measures them with a million
    results and ten thousand jobs (docs/performance.md)."""
    partner, job = finished_job
    with sign_in(console, viewer) as session:
        for path in (
            "/console/",
            "/console/live/overview",
            "/console/jobs",
            "/console/jobs?status=completed",
            f"/console/jobs/{job['id']}",
            "/console/partners",
            f"/console/partners/{partner.partner_id}",
        ):
            session.get(path)  # warm
            times = []
            for _ in range(3):
                started = time.perf_counter()
                assert session.get(path).status_code == 200
                times.append(time.perf_counter() - started)
            assert statistics.median(times) < 1.0, (path, times)


def test_what_partners_send_is_shown_as_text_never_as_markup(console: Console, viewer: Operator) -> None:
    partner = make_partner('<script>alert("name")</script>')
    job = submit_businesses(console, partner, [{"external_id": "<img src=x onerror=alert(1)>", "colour": "<b>"}])
    wait_finished(console, partner, job["id"])
    with sign_in(console, viewer) as session:
        pages = (
            "/console/partners",
            "/console/jobs",
            f"/console/partners/{partner.partner_id}",
            f"/console/jobs/{job['id']}",
        )
        for path in pages:
            text = session.get(path).text
            assert "<script>alert" not in text, path
            assert "<img src=x" not in text, path
        escaped = "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;"
        assert escaped in session.get(f"/console/partners/{partner.partner_id}").text
        assert "&lt;img src=x onerror=alert(1)&gt;" in session.get(f"/console/jobs/{job['id']}").text


def test_a_dry_run_is_labelled_as_one_in_the_list_and_on_its_page(console: Console, viewer: Operator) -> None:
    partner = make_partner("previewing partner")
    with partner_client(console, partner) as client:
        accepted = client.post("/sync/businesses/batch?dry_run=true", json={"businesses": [{"name": "Would be"}]})
    assert accepted.status_code == 202, accepted.text
    dry = wait_finished(console, partner, accepted.json()["id"])
    assert dry["dry_run"] is True
    real = wait_finished(console, partner, submit_businesses(console, partner, [{"name": "Is"}])["id"])
    with sign_in(console, viewer) as session:
        listing = session.get(f"/console/jobs?partner={partner.partner_id}").text
        assert f'data-job-id="{dry["id"]}"' in listing
        rows = dict(re.findall(r'<tr data-job-id="(job_\w+)"[^>]*data-dry-run="(\w+)"', listing))
        assert rows == {dry["id"]: "true", real["id"]: "false"}
        assert "dry run: nothing was written" in session.get(f"/console/jobs/{dry['id']}").text
        assert "dry run" not in session.get(f"/console/jobs/{real['id']}").text.lower()
