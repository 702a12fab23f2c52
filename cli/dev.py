"""`pfsync dev`: the API, a worker and the scheduler in one foreground command.

With `DATABASE_URL` / `REDIS_URL` unset they run on an embedded PostgreSQL and Redis whose data live in the data
folder (`.pfsync/`), kept between runs. Ctrl-C or SIGTERM stops everything; so does the death of any process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from cli.embedded import EmbeddedRedis, ensure_postgres, stop_postgres
from cli.output import CommandError, configure_logging, console, err_console
from cli.serve import migrate_database
from core.config import normalise_database_url, settings

STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.2
_PR_SET_PDEATHSIG = 1

Handler = Callable[[int, FrameType | None], object] | int | None


class StopSignals:
    """SIGINT and SIGTERM ask for a clean stop; a second one while stopping skips the grace period."""

    def __init__(self) -> None:
        self.requested = False
        self.hurry = False
        self._previous: dict[int, Handler] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        # Only flags: the main loop polls them (taking a lock here could deadlock the thread it interrupted).
        self.hurry = self.requested
        self.requested = True


@dataclass(frozen=True)
class Child:
    """One supervised process, leader of its own process group."""

    name: str
    process: subprocess.Popen[bytes]

    def exit_status(self) -> str | None:
        """How the process ended ("exit code 1", "killed by SIGKILL"), or None while it runs.

        The process is left unreaped, so its pid, and the process group named after it, cannot be reused
        before `reap` has killed whatever is left in that group.
        """
        if self.process.returncode is not None:
            return _describe(self.process.returncode)
        if not hasattr(os, "waitid"):  # macOS: no peeking, so reap at once (and leave the group alone)
            code = self.process.poll()
            return None if code is None else _describe(code)
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return _describe(self.process.wait())
        if info is None:
            return None
        if info.si_code == os.CLD_EXITED:
            return f"exit code {info.si_status}"
        return f"killed by {_signal_name(info.si_status)}"

    def reap(self) -> None:
        """Kill what is left of the process group (a Celery worker's pool processes, say), then reap the leader."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _describe(returncode: int) -> str:
    return f"killed by {_signal_name(-returncode)}" if returncode < 0 else f"exit code {returncode}"


def _exit_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook giving a child SIGTERM if `dev` itself dies, even by SIGKILL (Linux only).

    Children lead their own process groups, so a terminal's Ctrl-C reaches only `dev`, which stops them in order;
    this hook keeps them from outliving a `dev` that had no chance to.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the hook only calls it
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # `dev` died before the hook ran
            os._exit(1)

    return hook


def start_child(name: str, args: list[str], env: dict[str, str]) -> Child:
    """Start `pfsync ARGS` (as `python -m cli`) in its own process group."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        process_group=0,
        preexec_fn=_exit_with_parent(),  # safe here: dev starts its children from its only thread
    )
    return Child(name, process)


def stop_children(children: list[Child], signals: StopSignals) -> None:
    """SIGTERM to each running child, up to STOP_GRACE_SECONDS to finish, then SIGKILL for what is left."""
    for child in children:
        if child.exit_status() is None:
            child.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and not signals.hurry:
        if all(child.exit_status() is not None for child in children):
            break
        time.sleep(0.1)
    for child in children:
        if child.exit_status() is None:
            err_console.print(f"[yellow]{child.name} is still running: killing it[/]")
        child.reap()


def check_port_free(host: str, port: int) -> None:
    """Fail before starting anything when the API could not listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another `pfsync dev` running? "
            "Choose another --port."
        ) from None


def _client_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def api_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_client_host(host), port), timeout=0.2):
            return True
    except OSError:
        return False


def api_url(host: str, port: int) -> str:
    client = _client_host(host)
    return f"http://[{client}]:{port}" if ":" in client else f"http://{client}:{port}"


def redact(url: str) -> str:
    """The URL without its password, for the banner."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


@dataclass(frozen=True)
class Stack:
    """What `dev` runs on, for the banner."""

    url: str
    embedded_postgres: bool
    embedded_redis: bool

    def banner(self) -> Panel:
        data_dir = settings.data_dir.resolve()
        table = Table.grid(padding=(0, 2))
        table.add_row("API", f"[bold]{self.url}[/]  (OpenAPI: {self.url}/docs)")
        if self.embedded_postgres or self.embedded_redis:
            table.add_row("Data", f"{escape(str(data_dir))}  (kept between runs)")
        database = "embedded PostgreSQL" if self.embedded_postgres else redact(settings.database_url or "")
        broker = "embedded Redis" if self.embedded_redis else redact(settings.redis_url or "")
        table.add_row("Database", escape(database))
        table.add_row("Broker", escape(broker))
        hint = "pfsync partner create NAME"
        if self.embedded_postgres:
            hint += "  (in this folder, DATABASE_URL unset)"
        table.add_row("Partner", hint)
        table.add_row("", "Ctrl-C stops everything.")
        return Panel(table, title="pfsync dev", title_align="left", expand=False)


def supervise(children: list[Child], signals: StopSignals, *, stack: Stack, host: str, port: int) -> int:
    """Watch the children until a stop is asked (0) or one of them ends (1); show the banner once the API answers."""
    announced = False
    while not signals.requested:
        for child in children:
            status = child.exit_status()
            if status is not None:
                err_console.print(f"[red]{child.name} stopped ({status}): stopping everything[/]")
                return 1
        if not announced and api_answers(host, port):
            console.print(stack.banner())
            announced = True
        time.sleep(POLL_SECONDS)
    console.print("Stopping…")
    return 0


def run_dev(*, host: str, port: int, concurrency: int) -> int:
    """Run the whole service in the foreground until Ctrl-C, SIGTERM or the death of one of its processes."""
    signals = StopSignals()
    embedded_postgres = not settings.database_url
    redis: EmbeddedRedis | None = None
    children: list[Child] = []
    try:
        signals.install()
        env = dict(os.environ)
        configure_logging()
        check_port_free(host, port)
        try:
            if embedded_postgres:
                console.print(f"Starting the embedded PostgreSQL in {escape(str(settings.data_dir / 'postgres'))}…")
                settings.database_url = normalise_database_url(ensure_postgres(settings.data_dir))
            if not settings.redis_url:
                redis = EmbeddedRedis(settings.data_dir)
                settings.redis_url = redis.start()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            raise CommandError(f"could not start the embedded servers: {exc}") from exc
        assert settings.database_url is not None
        assert settings.redis_url is not None
        env["DATABASE_URL"] = settings.database_url
        env["REDIS_URL"] = settings.redis_url
        revision = migrate_database()
        console.print(f"Database at revision {revision}.")
        if signals.requested:
            return 0
        worker = ["worker", "--concurrency", str(concurrency)]
        children.append(start_child("api", ["api", "--host", host, "--port", str(port)], env))
        children.append(start_child("worker", worker, env))
        children.append(start_child("scheduler", ["scheduler"], env))
        stack = Stack(api_url(host, port), embedded_postgres, redis is not None)
        return supervise(children, signals, stack=stack, host=host, port=port)
    finally:
        stop_children(children, signals)
        if redis is not None:
            redis.stop()
        if embedded_postgres:
            stop_postgres(settings.data_dir)
        signals.restore()
        if children:
            console.print("Stopped.")
