"""`pfsync`: parse the command line and run one command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy.exc import OperationalError

from cli.output import CommandError, err_console
from cli.partners import partner_name

Command = Callable[[argparse.Namespace], int]


def port_number(value: str) -> int:
    """argparse type for a TCP port."""
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is 1 to 65535")
    return port


def positive_int(value: str) -> int:
    """argparse type for a count of processes."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


# Each command imports its module when it runs, so `pfsync --help` or `pfsync partner create` do not pay for
# uvicorn and Celery.
def _dev(args: argparse.Namespace) -> int:
    from cli.dev import run_dev

    return run_dev(host=args.host, port=args.port, concurrency=args.concurrency)


def _api(args: argparse.Namespace) -> int:
    from cli.serve import run_api

    return run_api(host=args.host, port=args.port, workers=args.workers)


def _worker(args: argparse.Namespace) -> int:
    from cli.serve import run_worker

    return run_worker(concurrency=args.concurrency)


def _scheduler(_args: argparse.Namespace) -> int:
    from cli.serve import run_scheduler

    return run_scheduler()


def _migrate(_args: argparse.Namespace) -> int:
    from cli.serve import run_migrate

    return run_migrate()


def _partner_create(args: argparse.Namespace) -> int:
    from cli.partners import run_partner_create

    return run_partner_create(name=args.name, as_json=args.json)


def _package_version() -> str:
    try:
        return version("pocketflows-sync")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="pfsync",
        description="Pocketflows Sync: the service's processes and tools. Configured from the environment "
        "(DATABASE_URL, REDIS_URL, PFSYNC_*) and a .env file; with DATABASE_URL unset, commands use the "
        "embedded PostgreSQL in the data folder (.pfsync/).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev",
        help="run the API, a worker and the scheduler in the foreground",
        description="Run the API, a Celery worker and the scheduler in the foreground. With DATABASE_URL / "
        "REDIS_URL unset, start an embedded PostgreSQL and Redis whose data stay in the data folder "
        "(.pfsync/), and migrate the schema. Ctrl-C stops everything.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="address the API listens on (default: %(default)s)")
    dev.add_argument("--port", type=port_number, default=8000, help="API port (default: %(default)s)")
    dev.add_argument(
        "--concurrency", type=positive_int, default=2, metavar="N", help="worker processes (default: %(default)s)"
    )
    dev.set_defaults(run=_dev)

    api = commands.add_parser("api", help="serve the HTTP API (uvicorn)", description="Serve the HTTP API.")
    api.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    api.add_argument("--port", type=port_number, default=8000, help="port (default: %(default)s)")
    api.add_argument(
        "--workers", type=positive_int, default=1, metavar="N", help="uvicorn processes (default: %(default)s)"
    )
    api.set_defaults(run=_api)

    worker = commands.add_parser(
        "worker",
        help="run a Celery worker",
        description="Run a Celery worker on the service's queue (PFSYNC_QUEUE_NAME), task events on. "
        "SIGTERM finishes the running chunks, then exits.",
    )
    worker.add_argument("--concurrency", type=positive_int, metavar="N", help="pool processes (default: one per CPU)")
    worker.set_defaults(run=_worker)

    scheduler = commands.add_parser(
        "scheduler",
        help="run the scheduler (lease sweeper, purges)",
        description="Republish work whose lease ran out and purge expired jobs and idempotency keys. "
        "Run one per deployment.",
    )
    scheduler.set_defaults(run=_scheduler)

    migrate = commands.add_parser(
        "migrate", help="migrate the database schema", description="Migrate the schema to the latest revision."
    )
    migrate.set_defaults(run=_migrate)

    partner = commands.add_parser("partner", help="manage partners", description="Manage partners.")
    partner_commands = partner.add_subparsers(dest="partner_command", required=True, metavar="COMMAND")
    create = partner_commands.add_parser(
        "create",
        help="create a partner and an API key",
        description="Create a partner and an API key; print the key id and its secret (shown only this once).",
    )
    create.add_argument("name", type=partner_name, metavar="NAME", help="the partner's name")
    create.add_argument(
        "--json", action="store_true", help='print {"partner_id", "key_id", "secret"} as JSON on stdout'
    )
    create.set_defaults(run=_partner_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pfsync` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    command: Command = args.run
    try:
        return command(args)
    except CommandError as exc:
        err_console.print(f"[red]error:[/] {exc}")
    except OperationalError as exc:
        err_console.print(f"[red]error:[/] cannot reach the database: {str(exc.orig or exc).strip()}")
    except KeyboardInterrupt:
        return 130
    return 1
