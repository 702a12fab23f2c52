"""Request budgets through real API processes and a real Redis (SPEC §8): one budget per partner shared by every
process, 429 `rate_limited` with `Retry-After`, the RateLimit fields on every authenticated answer, partners
unaffected by each other, an operator's per-partner budget, and failing open when Redis is unreachable."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import DATABASE_URL, assert_problem, make_partner
from tests.e2e.conftest import PFSYNC, api_process, free_port, wait_for

PER_SECOND, BURST = 20, 40
BUDGET = {"PFSYNC_RATE_LIMIT_PER_SECOND": str(PER_SECOND), "PFSYNC_RATE_LIMIT_BURST": str(BURST)}
POLICY = f'"partner";q={BURST};w={BURST // PER_SECOND}'
RATELIMIT = re.compile(r'^"partner";r=(\d+);t=(\d+)$')


@pytest.fixture(scope="module")
def two_apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two API processes on the same database and Redis, each partner's budget 20/s with bursts of 40."""
    log_dir = tmp_path_factory.mktemp("budgets")
    started = [api_process(log_dir, f"budget-api-{n}", "--workers", "1", **BUDGET) for n in range(2)]
    yield [url for _, url in started]
    for process, _ in started:
        process.stop()


def pfsync(*args: str) -> subprocess.CompletedProcess[str]:
    """A `pfsync` command on the test database, with the budget the API processes have as its default."""
    env = {**os.environ, "DATABASE_URL": DATABASE_URL, **BUDGET}
    return subprocess.run([*PFSYNC, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def _remaining(response: httpx.Response) -> int:
    match = RATELIMIT.match(response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return int(match.group(1))


def _burst(urls: list[str], auth: tuple[str, str], count: int) -> list[httpx.Response]:
    """`count` reads at once, spread over the API processes."""
    clients = [httpx.Client(base_url=url, auth=auth, timeout=30) for url in urls]
    try:
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda n: clients[n % len(clients)].get("/jobs?limit=1"), range(count)))
    finally:
        for client in clients:
            client.close()


def test_one_budget_is_shared_by_every_process_and_a_spent_one_answers_429(two_apis: list[str]) -> None:
    partner = make_partner("bursting")
    answers = _burst(two_apis, partner.auth, BURST + 20)
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    # The burst takes well under a second, so nothing has left the 2 s window yet.
    assert len(ok) == BURST, [r.status_code for r in answers]
    assert len(refused) == 20
    for response in refused:
        assert_problem(response, 429, "rate_limited")
        assert 1 <= int(response.headers["retry-after"]) <= BURST // PER_SECOND
        assert response.headers["ratelimit-policy"] == POLICY
        assert _remaining(response) == 0
    # Counted down across both processes (what is left is read just after the request is counted, so requests
    # counted at the same moment may see the same figure).
    left = [_remaining(r) for r in ok]
    assert all(0 <= n < BURST for n in left)
    assert min(left) == 0

    time.sleep(int(refused[0].headers["retry-after"]) + 0.1)
    again = httpx.get(two_apis[1] + "/jobs?limit=1", auth=partner.auth)
    assert again.status_code == 200, "the budget came back once Retry-After had passed"


def test_every_authenticated_answer_carries_the_fields_and_nothing_else_spends_the_budget(
    two_apis: list[str],
) -> None:
    partner = make_partner("counted")
    url = two_apis[0]
    for _ in range(30):  # failed authentications and the probes spend nothing
        assert httpx.get(url + "/jobs", auth=(partner.key_id, "sk_wrong")).status_code == 401
        assert httpx.get(url + "/healthz").status_code == 200
    refused_auth = httpx.get(url + "/jobs", auth=(partner.key_id, "sk_wrong"))
    assert "ratelimit" not in refused_auth.headers
    assert "ratelimit-policy" not in refused_auth.headers

    first = httpx.get(url + "/jobs", auth=partner.auth)
    assert first.status_code == 200
    assert first.headers["ratelimit-policy"] == POLICY
    assert _remaining(first) == BURST - 1
    # A client error is an authenticated answer too: it carries the fields and spends the budget.
    missing = httpx.get(url + "/jobs/job_nothing", auth=partner.auth)
    assert missing.status_code == 404
    assert missing.headers["ratelimit-policy"] == POLICY
    assert _remaining(missing) == BURST - 2
    write = httpx.post(url + "/sync/businesses", auth=partner.auth, json={"external_id": "b-1", "name": "B"})
    assert write.status_code in (200, 201), write.text
    assert _remaining(write) == BURST - 3


def test_a_partner_over_its_budget_does_not_slow_another(two_apis: list[str]) -> None:
    noisy, quiet = make_partner("noisy"), make_partner("quiet")
    stop = threading.Event()
    refused = 0

    def flood() -> None:
        nonlocal refused
        with httpx.Client(base_url=two_apis[0], auth=noisy.auth, timeout=30) as client:
            while not stop.is_set():
                if client.get("/jobs?limit=1").status_code == 429:
                    refused += 1

    floods = [threading.Thread(target=flood) for _ in range(8)]
    for thread in floods:
        thread.start()
    try:
        latencies = []
        with httpx.Client(base_url=two_apis[0], auth=quiet.auth, timeout=30) as client:
            for n in range(30):  # 15 a second: within the quiet partner's budget
                started = time.perf_counter()
                answer = client.post("/sync/businesses", json={"external_id": f"q-{n}", "name": "Quiet"})
                latencies.append(time.perf_counter() - started)
                assert answer.status_code in (200, 201), answer.text
                time.sleep(1 / 15)
    finally:
        stop.set()
        for thread in floods:
            thread.join()
    assert refused > 100, "the noisy partner was refused for going over its budget"
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.25, latencies


def test_a_client_that_honours_retry_after_gets_the_sustained_rate(two_apis: list[str]) -> None:
    partner = make_partner("steady")
    done = 0
    deadline = time.monotonic() + 6

    def client_loop(url: str) -> None:
        nonlocal done
        with httpx.Client(base_url=url, auth=partner.auth, timeout=30) as client:
            while time.monotonic() < deadline:
                answer = client.get("/jobs?limit=1")
                if answer.status_code == 429:
                    time.sleep(min(float(answer.headers["retry-after"]), max(0, deadline - time.monotonic())))
                else:
                    assert answer.status_code == 200
                    done += 1

    threads = [threading.Thread(target=client_loop, args=(url,)) for url in two_apis for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A burst, then 20 a second: over 6 s a moving window of 40 per 2 s admits 120 (three full windows) to 160.
    assert 3 * BURST <= done <= BURST + 6 * PER_SECOND, done


def test_an_operator_sets_one_partners_budget_and_every_process_applies_it(two_apis: list[str]) -> None:
    partner = make_partner("vip")
    shown = pfsync("partner", "budget", partner.partner_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout) == {
        "partner_id": partner.partner_id,
        "per_second": PER_SECOND,
        "burst": BURST,
        "window_seconds": 2,
        "own": False,
    }
    set_ = pfsync("partner", "budget", partner.partner_id, "--per-second", "5", "--burst", "10", "--json")
    assert set_.returncode == 0, set_.stderr
    assert orjson.loads(set_.stdout)["own"] is True

    def applied_everywhere() -> bool:
        return all(
            httpx.get(url + "/jobs?limit=1", auth=partner.auth).headers.get("ratelimit-policy") == '"partner";q=10;w=2'
            for url in two_apis
        )

    wait_for(applied_everywhere, 3, 0.2, "the partner's own budget on both processes")
    answers = _burst(two_apis, partner.auth, 15)
    assert sum(r.status_code == 200 for r in answers) <= 10

    assert pfsync("partner", "budget", partner.partner_id, "--per-second", "0").returncode == 0
    time.sleep(1.2)
    unlimited = httpx.get(two_apis[0] + "/jobs?limit=1", auth=partner.auth)
    assert unlimited.status_code == 200
    assert "ratelimit-policy" not in unlimited.headers

    reset = pfsync("partner", "budget", partner.partner_id, "--default", "--json")
    assert orjson.loads(reset.stdout)["own"] is False
    wait_for(
        lambda: httpx.get(two_apis[1] + "/jobs?limit=1", auth=partner.auth).headers.get("ratelimit-policy") == POLICY,
        3,
        0.2,
        "the default budget again",
    )
    assert pfsync("partner", "budget", "ptn_nobody").returncode != 0
    assert pfsync("partner", "budget", partner.partner_id, "--burst", "5").returncode == 2


def test_with_redis_unreachable_requests_are_admitted_logged_and_counted(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    process, url = api_process(tmp_path, "budget-no-redis", "--workers", "1", REDIS_URL=dead_redis, **BUDGET)
    try:
        partner = make_partner("open")
        answers = [httpx.get(url + "/jobs?limit=1", auth=partner.auth) for _ in range(BURST + 10)]
        assert {r.status_code for r in answers} == {200}
        assert answers[0].headers["ratelimit-policy"] == POLICY
        assert "ratelimit" not in answers[0].headers  # what is left is unknown without Redis
        write = httpx.post(url + "/sync/businesses", auth=partner.auth, json={"external_id": "o-1", "name": "Open"})
        assert write.status_code in (200, 201), write.text
        metrics = httpx.get(url + "/metrics").text
        counted = re.search(r"^pfsync_rate_limit_unavailable_total (\S+)$", metrics, re.MULTILINE)
        assert counted is not None
        assert float(counted.group(1)) >= BURST + 11
        assert "request budgets unavailable" in process.log()
    finally:
        process.stop()


@pytest.mark.usefixtures("worker")
def test_the_cli_honours_429_and_retry_after(tmp_path: Path) -> None:
    partner = make_partner("cli")
    process, url = api_process(
        tmp_path, "budget-cli", "--workers", "1", PFSYNC_RATE_LIMIT_PER_SECOND="1", PFSYNC_RATE_LIMIT_BURST="1"
    )
    try:
        records = tmp_path / "businesses.ndjson"
        records.write_text("".join(f'{{"external_id": "c-{n}", "name": "C {n}"}}\n' for n in range(50)))
        env = {"PFSYNC_URL": url, "PFSYNC_KEY": partner.key_id, "PFSYNC_SECRET": partner.secret}
        pushed = subprocess.run(
            [*PFSYNC, "push", str(records), "--businesses"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert "50 records" in pushed.stdout
        # One request a second: the upload, then the job's polls, each sent again after its 429.
        assert '"status":429' in process.log().replace(" ", "")
    finally:
        process.stop()
