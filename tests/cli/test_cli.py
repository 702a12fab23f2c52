"""The `pfsync` command line, run the way a person runs it: the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DATABASE_URL

PFSYNC = shutil.which("pfsync", path=str(Path(sys.executable).parent)) or "pfsync"


def run_pfsync(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PFSYNC, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def configured_env() -> dict[str, str]:
    """This run's environment: the test database and broker."""
    return {**os.environ, "DATABASE_URL": DATABASE_URL}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            pending.append(child)
    return found


def running(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"pfsync dev exited early:\n{log.read_text()[-4000:]}"
        try:
            if (
                httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
                and httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"pfsync dev not ready in {timeout} s:\n{log.read_text()[-4000:]}")


def stop_dev(dev: subprocess.Popen[bytes]) -> None:
    if dev.poll() is None:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()


def start_dev(folder: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """`pfsync dev` in `folder`, its output in `folder/dev.log`."""
    with (folder / "dev.log").open("wb") as output:
        return subprocess.Popen(
            [PFSYNC, "dev", "--port", str(port), "--concurrency", "1"],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_partner_create_json_prints_a_key_that_authenticates() -> None:
    from core.db import session_scope
    from core.partners.service import authenticate

    result = run_pfsync("partner", "create", "Acme Salons", "--json", env=configured_env())

    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"partner_id", "key_id", "secret"}
    assert created["partner_id"].startswith("ptn_")
    assert created["key_id"].startswith("key_")
    with session_scope() as session:
        caller = authenticate(session, key_id=created["key_id"], secret=created["secret"])
        assert caller is not None
        assert caller.partner_id == created["partner_id"]
        assert authenticate(session, key_id=created["key_id"], secret=created["secret"] + "x") is None


def test_partner_create_shows_the_secret_to_a_person() -> None:
    result = run_pfsync("partner", "create", "Acme Salons", env=configured_env())

    assert result.returncode == 0, result.stderr
    assert "key_" in result.stdout
    assert "sk_" in result.stdout
    assert "only this once" in result.stdout


def test_partner_create_refuses_an_empty_name() -> None:
    result = run_pfsync("partner", "create", "  ", env=configured_env())

    assert result.returncode == 2
    assert "partner name" in result.stderr


def test_migrate_exits_zero_and_prints_the_revision() -> None:
    from core.migrate import head_revision

    result = run_pfsync("migrate", env=configured_env())

    assert result.returncode == 0, result.stderr
    assert f"revision {head_revision()}" in result.stdout


def test_unreachable_database_is_one_line_not_a_traceback() -> None:
    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"}

    result = run_pfsync("partner", "create", "Acme", env=env)

    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command", [("migrate",), ("api", "--port", "1"), ("worker",), ("scheduler",), ("partner", "create", "X")]
)
def test_without_settings_a_production_command_starts_no_server_and_names_what_is_missing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PFSYNC_DATA_DIR")}

    result = run_pfsync(*command, env=env, cwd=tmp_path)

    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr or "REDIS_URL" in result.stderr, result.stderr
    assert "pfsync dev" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".pfsync" / "postgres").exists()  # no embedded database was made here


def test_dev_runs_the_service_on_embedded_servers_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    # A fresh folder with DATABASE_URL and REDIS_URL unset: dev starts an embedded PostgreSQL and Redis there.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PFSYNC_DATA_DIR")}
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dev.log"
    dev = start_dev(tmp_path, env, port)
    try:
        wait_ready(dev, base_url, log)
        assert (tmp_path / ".pfsync" / "postgres" / "PG_VERSION").exists()

        # Another command in the same folder, DATABASE_URL unset, finds the same embedded database.
        created = run_pfsync("partner", "create", "Dev Partner", "--json", env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)
        with httpx.Client(base_url=base_url, auth=(key["key_id"], key["secret"]), timeout=30) as client:
            synced = client.post("/sync/businesses", json={"external_id": "biz-1", "name": "Corner Bakery"})
            assert synced.status_code == 200, synced.text
            assert synced.headers["Sync-Outcome"] == "created"
            assert client.get(f"/businesses/{synced.json()['id']}").json()["name"] == "Corner Bakery"
            # A batch goes through the broker to the worker: the whole stack is wired up.
            batch = client.post(
                "/sync/businesses/batch",
                json={"businesses": [{"external_id": "biz-2", "name": "Flower Shop"}]},
                headers={"Prefer": "wait=30"},
            )
            assert batch.status_code == 200, batch.text
            assert batch.json()["job"]["status"] == "completed"

        processes = descendants(dev.pid)
        commands = " | ".join(processes.values())
        for name in ("cli api", "cli worker", "cli scheduler", "redis-server"):
            assert name in commands

        started = time.monotonic()
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=30) == 0, log.read_text()[-4000:]
        assert time.monotonic() - started < 20
        assert [pid for pid in processes if running(pid)] == []
        # Each process stopped on SIGTERM; none had to be killed.
        assert "is still running: killing it" not in log.read_text()
        # The embedded PostgreSQL stopped with its last user; its data stay for the next run.
        assert not (tmp_path / ".pfsync" / "postgres" / "postmaster.pid").exists()
        assert (tmp_path / ".pfsync" / "postgres" / "PG_VERSION").exists()
        assert not (tmp_path / ".pfsync" / "redis" / "port").exists()
    finally:
        stop_dev(dev)


def test_dev_stops_everything_and_fails_when_a_process_dies(tmp_path: Path) -> None:
    env = configured_env()
    port = free_port()
    log = tmp_path / "dev.log"
    dev = start_dev(tmp_path, env, port)
    try:
        wait_ready(dev, f"http://127.0.0.1:{port}", log)
        processes = descendants(dev.pid)
        scheduler = next(pid for pid, command in processes.items() if "cli scheduler" in command)

        os.kill(scheduler, signal.SIGKILL)

        assert dev.wait(timeout=30) == 1
        assert [pid for pid in processes if running(pid)] == []
        assert "scheduler stopped (killed by SIGKILL)" in log.read_text()
        # With DATABASE_URL and REDIS_URL set, nothing embedded was started.
        assert not (tmp_path / ".pfsync").exists()
    finally:
        stop_dev(dev)


def test_dev_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_pfsync("dev", "--port", str(port), env=configured_env(), cwd=tmp_path)

    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / ".pfsync").exists()
