"""The production processes: `pfsync api`, `pfsync worker`, `pfsync scheduler` and `pfsync migrate`.

Each is configured from the environment (core.config). With `DATABASE_URL` unset they join the embedded PostgreSQL
of the data folder, which stays up while any process holds it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from typing import Any

from cli.output import MIGRATION_LOGGER, QUIET_LOGGERS, configure_logging, console
from core.config import settings
from core.db import database_url, dispose_engine, get_engine
from core.migrate import current_revision, upgrade
from core.ops.broker import broker_url

log = logging.getLogger(__name__)

PLAIN_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def pin_database_url() -> str:
    """Resolve the database once and export it, so child processes use the same one without asking pgserver.

    A process that joins the embedded PostgreSQL registers with it until it exits; pool processes forked or spawned
    by uvicorn and Celery would each register too, and a forked one never unregisters (it skips `atexit`).
    """
    url = database_url()
    os.environ["DATABASE_URL"] = url
    return url


def uvicorn_log_config() -> dict[str, Any]:
    """The logging setup for uvicorn and each of its worker processes (which start from scratch)."""
    formatter: dict[str, Any] = {"()": "core.logs.JsonFormatter"} if settings.log_json else {"format": PLAIN_LOG_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"routine_migration": {"()": "cli.output.RoutineMigrationFilter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": settings.log_level.upper()},
        "loggers": {
            # The application writes its own access line (pfsync.access), with the request id and partner.
            "uvicorn.access": {"level": "WARNING"},
            **{name: {"level": "WARNING"} for name in QUIET_LOGGERS},
            # /readyz reads the schema revision through a new migration context each time (cli.output).
            MIGRATION_LOGGER: {"filters": ["routine_migration"]},
        },
    }


MAX_DEFAULT_API_WORKERS = 4


def default_api_workers() -> int:
    """`pfsync api` processes unless `--workers` says otherwise: one per CPU this process may use, at most 4.

    One process serves one request's Python at a time (the GIL); on two cores a second one raised single-record
    syncs from about 500 to 650 a second (docs/performance.md).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_API_WORKERS))


def share_http_metrics() -> None:
    """Several API processes: keep their HTTP metrics in files of one directory, so /metrics sums them all
    (docs/operations.md). Unless `PROMETHEUS_MULTIPROC_DIR` names one already, a fresh directory is made (no stale
    values of an earlier run) and removed on exit."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = tempfile.mkdtemp(prefix="pfsync-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def run_api(*, host: str, port: int, workers: int | None = None) -> int:
    """Serve the HTTP API with uvicorn until SIGINT or SIGTERM."""
    import uvicorn

    configure_logging()
    pin_database_url()
    workers = workers or default_api_workers()
    if workers > 1:
        share_http_metrics()
    uvicorn.run(
        "api.app:app",
        host=host,
        port=port,
        workers=workers,
        log_config=uvicorn_log_config(),
        access_log=False,
        server_header=False,
    )
    return 0


def lower_priority(niceness: int) -> None:
    """Run this process, and the pool processes it forks, `niceness` steps below the API's CPU priority."""
    if niceness and hasattr(os, "nice"):
        try:
            os.nice(niceness)
        except OSError as exc:  # not allowed here: run at the normal priority
            log.warning("cannot lower the worker's CPU priority: %s", exc)


def run_worker(*, concurrency: int | None) -> int:
    """Run a Celery worker on the service's queue, task events on, until SIGTERM (warm shutdown)."""
    from workers.app import celery_app, configure_broker

    configure_logging()
    broker_url()  # NotConfigured, named by the command line, before anything starts
    pin_database_url()
    configure_broker()
    argv = ["worker", "--queues", settings.queue_name, "--events", "--loglevel", settings.log_level.upper()]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    lower_priority(settings.worker_nice)
    code = celery_app.start(argv)
    return int(code or 0)


def run_scheduler() -> int:
    """Run the scheduler (lease sweeper and purges) until SIGINT or SIGTERM."""
    # Imported here: the scheduler pulls in the worker side (Celery), which no other command needs.
    from workers import scheduler

    configure_logging()
    broker_url()  # NotConfigured, named by the command line, before anything starts
    pin_database_url()
    scheduler.main()
    return 0


def migrate_database() -> str | None:
    """Bring the schema to the newest migration; return the revision the database is now at."""
    engine = get_engine()
    try:
        upgrade(engine)
        with engine.connect() as conn:
            return current_revision(conn)
    finally:
        engine.dispose()
        dispose_engine()


def run_migrate() -> int:
    """`pfsync migrate`: migrate and print the revision."""
    configure_logging()
    revision = migrate_database()
    console.print(f"Database at revision [bold]{revision}[/] (the latest).")
    return 0
