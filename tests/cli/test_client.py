"""`pfsync push`, `pfsync jobs` and `pfsync status` against a running service.

The service is `pfsync api` and `pfsync worker` as separate processes on the test database and queue (no
scheduler: a job whose chunks were never published stays unfinished, for `status` to show). One test runs the
commands in a `pfsync dev` folder on embedded servers, the way a person first meets them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.cli.test_cli import PFSYNC, free_port, run_pfsync, start_dev, stop_dev, wait_ready
from tests.conftest import PartnerKey, make_partner


@dataclass(frozen=True)
class Service:
    url: str
    log_dir: Path
    api_pid: int
    worker_pid: int


def _start(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [PFSYNC, *args],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the test database, broker and queue (tests/conftest.py)
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`pfsync api` on a free port and a `pfsync worker`, until the module's tests are done."""
    folder = tmp_path_factory.mktemp("service")
    port = free_port()
    api = _start(["api", "--host", "127.0.0.1", "--port", str(port)], folder / "api.log", folder)
    worker = _start(["worker", "--concurrency", "2"], folder / "worker.log", folder)
    try:
        wait_ready(api, f"http://127.0.0.1:{port}", folder / "api.log")
        yield Service(f"http://127.0.0.1:{port}", folder, api.pid, worker.pid)
    finally:
        _stop(worker)
        _stop(api)


@pytest.fixture
def partner() -> PartnerKey:
    return make_partner("cli partner")


def client_env(service: Service, partner: PartnerKey, **extra: str) -> dict[str, str]:
    """The client commands' environment: where the service is and the partner's key."""
    return {
        **os.environ,
        "PFSYNC_URL": service.url,
        "PFSYNC_KEY": partner.key_id,
        "PFSYNC_SECRET": partner.secret,
        **extra,
    }


def create_business(service: Service, partner: PartnerKey) -> str:
    answer = httpx.post(
        f"{service.url}/sync/businesses", json={"external_id": "shop", "name": "Shop"}, auth=partner.auth, timeout=30
    )
    assert answer.status_code == 200, answer.text
    business_id: str = answer.json()["id"]
    return business_id


def failed_file(path: Path) -> list[dict[str, Any]]:
    target = path.with_name(path.name + ".failed.ndjson")
    return [json.loads(line) for line in target.read_text().splitlines()]


def job_id_in(output: str) -> str:
    return next(word for word in output.replace(":", " ").split() if word.startswith("job_"))


def test_push_json_with_bad_records_exits_1_and_writes_the_failed_ones(
    service: Service, partner: PartnerKey, tmp_path: Path
) -> None:
    path = tmp_path / "businesses.json"
    records: list[object] = [
        {"external_id": "b-0", "name": "Zero"},
        {"external_id": "b-1"},  # no name
        {"external_id": "b-2", "name": "Two"},
        {"external_id": "b-3", "name": "Three", "colour": "red"},  # unknown field
        {"external_id": "b-4", "name": "Four"},
        42,  # not an object
    ]
    path.write_text(json.dumps({"businesses": records}))

    result = run_pfsync("push", str(path), "--businesses", env=client_env(service, partner), cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "Uploading businesses.json: 100%" in out
    assert "Processing job_" in out
    assert "6 records: created 3, failed 3." in out
    assert "3 failed records written to" in out
    failed = failed_file(path)
    assert [r["index"] for r in failed] == [1, 3, 5]
    assert {r["outcome"] for r in failed} == {"failed"}
    assert [r["errors"][0]["code"] for r in failed] == ["required", "unknown_field", "invalid_record"]


def test_push_ndjson_customers_with_bad_lines(service: Service, partner: PartnerKey, tmp_path: Path) -> None:
    business = create_business(service, partner)
    path = tmp_path / "customers.ndjson"
    path.write_text(
        '{"external_id": "c-0", "email_address": "ada@example.com"}\n'
        "\n"  # blank lines are skipped: indices count records
        '{"external_id": "c-1", "email_address": "not-an-address"}\n'
        "{not json\n"
        '{"external_id": "c-3", "full_name": "Grace"}\n'
    )

    result = run_pfsync("push", str(path), "--customers", business, env=client_env(service, partner))

    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 records: created 2, failed 2." in result.stdout
    failed = failed_file(path)
    assert [(r["index"], r["errors"][0]["code"]) for r in failed] == [
        (1, "invalid_email"),
        (2, "malformed_record"),
    ]


def test_push_csv_builds_records_from_the_header_and_writes_the_failures(
    service: Service, partner: PartnerKey, tmp_path: Path
) -> None:
    business = create_business(service, partner)
    path = tmp_path / "customers.csv"
    path.write_text(
        "external_id,email_address,full_name,metadata,metadata.tier\n"
        'c-0,ada@example.com,Ada,"{""source"": ""crm""}",gold\n'
        "c-1,bad-address,,,\n"
        "c-2,,,,silver\n"
        "c-3,grace@example.com,Grace,[1],\n"  # metadata must be an object
    )

    result = run_pfsync("push", str(path), "--customers", business, env=client_env(service, partner))

    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 records: created 2, failed 2." in result.stdout
    failed = failed_file(path)
    assert [(r["index"], r["errors"][0]["path"]) for r in failed] == [
        (1, "email_address"),
        (3, "metadata"),
    ]
    stored = httpx.get(f"{service.url}/businesses/{business}/customers", auth=partner.auth, timeout=30).json()
    by_external_id = {c["external_id"]: c for c in stored["data"]}
    assert by_external_id["c-0"]["metadata"] == {"source": "crm", "tier": "gold"}
    assert by_external_id["c-0"]["full_name"] == "Ada"
    # Empty cells are left out, so under replace semantics they end up null.
    assert by_external_id["c-2"]["email_address"] is None
    assert by_external_id["c-2"]["metadata"] == {"tier": "silver"}


def test_a_clean_push_exits_0_and_leaves_no_failed_file(service: Service, partner: PartnerKey, tmp_path: Path) -> None:
    path = tmp_path / "clean.json"
    path.write_text(json.dumps([{"external_id": f"ok-{i}", "name": f"Shop {i}"} for i in range(50)]))
    stale = tmp_path / "clean.json.failed.ndjson"
    stale.write_text('{"index": 0}\n')  # left by an earlier push of the same file

    result = run_pfsync(
        "push",
        str(path),
        "--businesses",
        "--url",
        service.url,
        "--key",
        partner.key_id,
        "--secret",
        partner.secret,
        env={k: v for k, v in os.environ.items() if not k.startswith("PFSYNC_") or k == "PFSYNC_QUEUE_NAME"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "50 records: created 50." in result.stdout
    assert not stale.exists()

    again = run_pfsync("push", str(path), "--businesses", env=client_env(service, partner))
    # `unchanged` is a success too.
    assert again.returncode == 0, again.stdout + again.stderr
    assert "50 records: unchanged 50." in again.stdout


def test_a_refused_batch_exits_3_with_the_problem(service: Service, partner: PartnerKey, tmp_path: Path) -> None:
    path = tmp_path / "customers.json"
    path.write_text('{"customers": [{"external_id": "c-0"}]}')

    result = run_pfsync("push", str(path), "--customers", "biz_nonexistent", env=client_env(service, partner))

    assert result.returncode == 3
    assert "404 not_found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "customers.json.failed.ndjson").exists()

    envelope = run_pfsync("push", str(path), "--businesses", env=client_env(service, partner))
    assert envelope.returncode == 3
    assert "invalid_envelope" in envelope.stderr


def test_push_usage_errors_exit_2_and_an_unreachable_service_exits_3(
    service: Service, partner: PartnerKey, tmp_path: Path
) -> None:
    path = tmp_path / "b.json"
    path.write_text('[{"external_id": "b", "name": "B"}]')
    env = client_env(service, partner)

    assert run_pfsync("push", str(path), env=env).returncode == 2  # neither --businesses nor --customers
    assert run_pfsync("push", str(tmp_path / "missing.json"), "--businesses", env=env).returncode == 2
    no_key = run_pfsync("push", str(path), "--businesses", env={**env, "PFSYNC_KEY": ""}, cwd=tmp_path)
    assert no_key.returncode == 2
    assert "PFSYNC_KEY" in no_key.stderr

    down = run_pfsync("push", str(path), "--businesses", env={**env, "PFSYNC_URL": f"http://127.0.0.1:{free_port()}"})
    assert down.returncode == 3
    assert "cannot reach the service" in down.stderr


def test_push_no_wait_then_jobs_lists_shows_and_watches_the_job(
    service: Service, partner: PartnerKey, tmp_path: Path
) -> None:
    path = tmp_path / "b.ndjson"
    path.write_text("".join(json.dumps({"external_id": f"w-{i}", "name": "W"}) + "\n" for i in range(20)) + "[]\n")
    env = client_env(service, partner)

    pushed = run_pfsync("push", str(path), "--businesses", "--no-wait", "--idempotency-key", "k-1", env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    job_id = job_id_in(pushed.stdout.split("Accepted job", 1)[1])

    watched = run_pfsync("jobs", job_id, "--watch", env=env)
    assert watched.returncode == 0, watched.stderr
    assert "completed" in watched.stdout

    shown = run_pfsync("jobs", job_id, env=env)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line.split()[-1] for line in shown.stdout.splitlines() if "│" in line}
    assert rows["created"] == "20"
    assert rows["failed"] == "1"
    assert rows["total"] == "21"

    listed = run_pfsync("jobs", env=env)
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout
    assert "21/21" in listed.stdout

    as_json = json.loads(run_pfsync("jobs", "--json", "--status", "completed", env=env).stdout)
    assert job_id in [job["id"] for job in as_json["data"]]
    assert json.loads(run_pfsync("jobs", job_id, "--json", env=env).stdout)["counts"]["failed"] == 1

    # The same Idempotency-Key replays the first answer: the same job, not a second one.
    replayed = run_pfsync("push", str(path), "--businesses", "--idempotency-key", "k-1", env=env)
    assert replayed.returncode == 1
    assert job_id in replayed.stdout
    assert "replay" in replayed.stdout

    unknown = run_pfsync("jobs", "job_01NOPE", env=env)
    assert unknown.returncode == 3
    assert "not_found" in unknown.stderr


def test_push_draws_live_bars_on_a_terminal(service: Service, partner: PartnerKey, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps([{"external_id": f"t-{i}", "name": "T"} for i in range(10)]))
    env = client_env(service, partner, TTY_COMPATIBLE="1", TTY_INTERACTIVE="1", COLUMNS="100")

    result = run_pfsync("push", str(path), "--businesses", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "━" in result.stdout  # a bar
    assert "10/10" in result.stdout
    assert "Uploading b.json: " not in result.stdout  # not the plain lines


@pytest.mark.usefixtures("service")  # its worker is the live one
def test_status_shows_the_queue_the_workers_and_unfinished_jobs(partner: PartnerKey) -> None:
    from core.db import session_scope
    from core.jobs.processing import cancel_job
    from core.jobs.service import accept_batch

    # A job whose chunks were never published (and no scheduler republishes them): it stays unfinished.
    with session_scope() as session:
        accepted = accept_batch(
            session,
            partner_id=partner.partner_id,
            kind="businesses",
            business_id=None,
            elements=[{"external_id": f"s-{i}", "name": "S"} for i in range(3)],
        )
        job_id = accepted.job.id
    try:
        shown = run_pfsync("status", env=dict(os.environ))
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert f"queue    {os.environ['PFSYNC_QUEUE_NAME']}:" in shown.stdout
        assert "workers  " in shown.stdout
        assert "workers  none" not in shown.stdout
        assert job_id in shown.stdout
        assert "0/3 (0%)" in shown.stdout
        assert "cli partner" in shown.stdout

        result = run_pfsync("status", "--json", env=dict(os.environ))
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["queue"]["name"] == os.environ["PFSYNC_QUEUE_NAME"]
        assert isinstance(status["queue"]["waiting"], int)
        assert isinstance(status["queue"]["unacknowledged"], int)
        assert any(os.environ["PFSYNC_QUEUE_NAME"] in (w["queues"] or []) for w in status["workers"])
        job = next(j for j in status["jobs"] if j["id"] == job_id)
        assert (job["processed"], job["total"], job["partner_id"]) == (0, 3, partner.partner_id)
        assert job["age_seconds"] >= 0
        assert status["errors"] == {}
    finally:
        with session_scope() as session:
            cancel_job(session, partner_id=partner.partner_id, job_id=job_id)


def test_status_reports_an_unreachable_broker_and_exits_1() -> None:
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}

    result = run_pfsync("status", "--json", env=env)

    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert status["queue"] is None
    assert "cannot reach the broker" in status["errors"]["broker"]
    assert isinstance(status["unfinished_jobs"], int)


def test_push_jobs_and_status_in_a_dev_folder(tmp_path: Path) -> None:
    # DATABASE_URL and REDIS_URL unset: every command of the folder uses the embedded servers of `pfsync dev`.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PFSYNC_DATA_DIR")}
    port = free_port()
    dev = start_dev(tmp_path, env, port)
    try:
        wait_ready(dev, f"http://127.0.0.1:{port}", tmp_path / "dev.log")
        created = run_pfsync("partner", "create", "Dev", "--json", env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)
        client = {
            **env,
            "PFSYNC_URL": f"http://127.0.0.1:{port}",
            "PFSYNC_KEY": key["key_id"],
            "PFSYNC_SECRET": key["secret"],
        }
        path = tmp_path / "businesses.csv"
        path.write_text("external_id,name,metadata.city\nb-1,One,Oslo\nb-2,,Rome\nb-3,Three,\n")

        pushed = run_pfsync("push", "businesses.csv", "--businesses", env=client, cwd=tmp_path)

        assert pushed.returncode == 1, pushed.stdout + pushed.stderr
        assert "3 records: created 2, failed 1." in pushed.stdout
        assert [r["index"] for r in failed_file(path)] == [1]
        assert job_id_in(pushed.stdout) in run_pfsync("jobs", env=client, cwd=tmp_path).stdout

        status = run_pfsync("status", "--json", env=env, cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        document = json.loads(status.stdout)
        assert document["workers"], document
        assert document["queue"]["name"] == env.get("PFSYNC_QUEUE_NAME", "pfsync")
        assert document["unfinished_jobs"] == 0
    finally:
        stop_dev(dev)


def test_the_worker_and_its_pool_run_below_the_apis_cpu_priority(service: Service) -> None:
    """A batch being processed yields the CPU to interactive requests (PFSYNC_WORKER_NICE, default 10)."""
    own = os.nice(0)
    worker = psutil.Process(service.worker_pid)
    pool = worker.children(recursive=True)
    assert pool, "the worker forked its pool processes"
    assert {p.nice() for p in [worker, *pool]} == {own + 10}
    api = psutil.Process(service.api_pid)
    assert {p.nice() for p in [api, *api.children(recursive=True)]} == {own}
