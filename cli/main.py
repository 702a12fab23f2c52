"""`pfsync`: parse the command line and run one command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from rich.markup import escape
from sqlalchemy.exc import OperationalError

from cli.operators import operator_username
from cli.output import CommandError, err_console
from cli.partners import partner_name
from core.config import NotConfigured, normalise_database_url, settings
from core.jobs.status import JobStatus

Command = Callable[[argparse.Namespace], int]
PUSH_FORMATS = ("json", "ndjson", "csv")
MAX_IDEMPOTENCY_KEY = 255
NEW_KEY_JSON_HELP = 'print {"partner_id", "key_id", "secret"} as JSON on stdout'


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


def list_limit(value: str) -> int:
    """argparse type for how many items to list: 1 to 1000."""
    number = int(value)
    if not 1 <= number <= 1000:
        raise argparse.ArgumentTypeError("must be 1 to 1000")
    return number


def non_negative(value: str) -> int:
    """argparse type for a count that may be 0."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 0 <= number <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1000000000, not {number}")
    return number


def idempotency_key(value: str) -> str:
    """argparse type for an Idempotency-Key: 1 to 255 characters."""
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY:
        raise argparse.ArgumentTypeError(f"an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return value


def _client_options(parser: argparse.ArgumentParser) -> None:
    """`--url`, `--key` and `--secret` of the commands that call the API (cli.client reads the environment)."""
    group = parser.add_argument_group("service and credentials")
    group.add_argument("--url", help="the service's base URL (default: $PFSYNC_URL, else http://127.0.0.1:8000)")
    group.add_argument("--key", metavar="KEY_ID", help="API key id (default: $PFSYNC_KEY)")
    group.add_argument("--secret", help="API key secret (default: $PFSYNC_SECRET)")


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


def _partner_list(args: argparse.Namespace) -> int:
    from cli.partners import run_partner_list

    return run_partner_list(as_json=args.json)


def _partner_budget(args: argparse.Namespace) -> int:
    from cli.partners import run_partner_budget

    return run_partner_budget(
        partner_id=args.partner_id,
        per_second=args.per_second,
        burst=args.burst,
        reset=args.default,
        as_json=args.json,
    )


def _key_create(args: argparse.Namespace) -> int:
    from cli.partners import run_key_create

    return run_key_create(partner_id=args.partner_id, as_json=args.json)


def _key_list(args: argparse.Namespace) -> int:
    from cli.partners import run_key_list

    return run_key_list(partner_id=args.partner_id, as_json=args.json)


def _key_revoke(args: argparse.Namespace) -> int:
    from cli.partners import run_key_revoke

    return run_key_revoke(key_id=args.key_id)


def _operator_create(args: argparse.Namespace) -> int:
    from cli.operators import run_operator_create

    return run_operator_create(username=args.username, role=args.role, as_json=args.json)


def _push(args: argparse.Namespace) -> int:
    from cli.push import run_push

    return run_push(args)


def _jobs(args: argparse.Namespace) -> int:
    from cli.jobs import run_jobs

    return run_jobs(args)


def _status(args: argparse.Namespace) -> int:
    from cli.status import run_status

    return run_status(as_json=args.json, limit=args.limit)


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
        "--workers", type=positive_int, metavar="N", help="uvicorn processes (default: one per CPU, at most 4)"
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
    create.add_argument("--json", action="store_true", help=NEW_KEY_JSON_HELP)
    create.set_defaults(run=_partner_create)
    listing = partner_commands.add_parser("list", help="list partners", description="Every partner, oldest first.")
    listing.add_argument("--json", action="store_true", help="print a JSON array of {id, name, created_at}")
    listing.set_defaults(run=_partner_list)
    budget = partner_commands.add_parser(
        "budget",
        help="show or set a partner's request budget",
        description="Show the partner's request budget (requests a second sustained, and the burst), or give it a "
        "budget of its own with --per-second (and --burst; default: the same ratio to the rate as the service's "
        "default), or with --default the service's default again (PFSYNC_RATE_LIMIT_PER_SECOND and "
        "PFSYNC_RATE_LIMIT_BURST). --per-second 0 lifts every limit from the partner. Every API process applies "
        "the change within 1 s.",
    )
    budget.add_argument("partner_id", metavar="PARTNER_ID")
    budget.add_argument("--per-second", type=non_negative, metavar="N", help="requests a second, sustained")
    budget.add_argument("--burst", type=non_negative, metavar="N", help="requests at once after an idle spell")
    budget.add_argument("--default", action="store_true", help="back to the service's default budget")
    budget.add_argument(
        "--json",
        action="store_true",
        help="print {partner_id, per_second, burst, window_seconds, own} as JSON",
    )
    budget.set_defaults(run=_partner_budget)

    key = commands.add_parser("key", help="manage API keys", description="Create, list and revoke API keys.")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="COMMAND")
    key_create = key_commands.add_parser(
        "create",
        help="another live key for a partner",
        description="Create another live API key for the partner (rotate: create, switch, revoke the old one); "
        "print the key id and its secret, shown only this once.",
    )
    key_create.add_argument("partner_id", metavar="PARTNER_ID")
    key_create.add_argument("--json", action="store_true", help=NEW_KEY_JSON_HELP)
    key_create.set_defaults(run=_key_create)
    key_list = key_commands.add_parser(
        "list", help="a partner's keys (never a secret)", description="The partner's API keys, never a secret."
    )
    key_list.add_argument("partner_id", metavar="PARTNER_ID")
    key_list.add_argument(
        "--json", action="store_true", help="print a JSON array of {id, created_at, last_used_at, revoked_at}"
    )
    key_list.set_defaults(run=_key_list)
    key_revoke = key_commands.add_parser(
        "revoke",
        help="revoke a key",
        description="Revoke the API key: once this returns no write made with it is applied, and within 1 s every "
        "request with it answers 401, on every API process.",
    )
    key_revoke.add_argument("key_id", metavar="KEY_ID")
    key_revoke.set_defaults(run=_key_revoke)

    operator = commands.add_parser(
        "operator", help="manage console operators", description="Manage the operators of the console (/console/)."
    )
    operator_commands = operator.add_subparsers(dest="operator_command", required=True, metavar="COMMAND")
    operator_create = operator_commands.add_parser(
        "create",
        help="create an operator of the console",
        description="Create an operator account for the console with a generated password, printed this once. "
        "A viewer reads; an admin may also cancel jobs and revoke keys.",
    )
    operator_create.add_argument("username", type=operator_username, metavar="USERNAME")
    operator_create.add_argument(
        "--role", choices=("admin", "viewer"), default="viewer", help="what the operator may do (default: %(default)s)"
    )
    operator_create.add_argument(
        "--json", action="store_true", help='print {"username", "password", "role"} as JSON on stdout'
    )
    operator_create.set_defaults(run=_operator_create)

    _add_client_commands(commands)
    return parser


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`push` and `jobs` call the API with an API key; `status` reads the database and the broker."""
    push = commands.add_parser(
        "push",
        help="upload a JSON, NDJSON or CSV file as a batch and follow its job",
        description="Upload FILE as a batch (JSON, NDJSON or CSV, streamed from disk), show the upload and the "
        "processing, print the counts and write the failed results to FILE.failed.ndjson (or FILE.failed.csv). "
        "--dry-run: nothing is written; the counts say what the batch would do, and the records that would fail go "
        "to FILE.dry-run.failed.ndjson. Exit status: 0 every record succeeded (would succeed), 1 some failed "
        "(would fail) or were cancelled, 2 usage error, 3 refused by the service or service unreachable.",
    )
    push.add_argument("file", metavar="FILE", help="the records: .json, .ndjson/.jsonl or .csv")
    kind = push.add_mutually_exclusive_group(required=True)
    kind.add_argument("--businesses", action="store_true", help="FILE holds businesses")
    kind.add_argument("--customers", metavar="BUSINESS_ID", help="FILE holds customers of this business")
    push.add_argument("--format", choices=PUSH_FORMATS, help="the file's format (default: from its extension)")
    push.add_argument(
        "--idempotency-key", type=idempotency_key, metavar="KEY", help="send it as Idempotency-Key (safe retries)"
    )
    push.add_argument(
        "--no-wait", action="store_true", help="exit once the batch is accepted (0), without following the job"
    )
    push.add_argument(
        "--dry-run",
        action="store_true",
        help="see what the batch would do, writing nothing: the would-be counts, and the would-be failures in "
        "FILE.dry-run.failed.ndjson",
    )
    push.add_argument(
        "--results-format",
        choices=("ndjson", "csv"),
        default="ndjson",
        help="the format of the failed results written next to FILE (default: %(default)s)",
    )
    _client_options(push)
    push.set_defaults(run=_push)

    jobs = commands.add_parser(
        "jobs",
        help="list recent jobs, or show one (--watch: live progress)",
        description="Without JOB_ID, the partner's recent jobs, newest first; with it, the job's details and "
        "counts. --watch shows live progress until the job (or every unfinished listed job) finishes.",
    )
    jobs.add_argument("job_id", nargs="?", metavar="JOB_ID", help="the job to show")
    jobs.add_argument("--status", choices=[status.value for status in JobStatus], help="only jobs in this status")
    jobs.add_argument("--type", choices=("businesses", "customers"), help="only jobs of this type")
    jobs.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only dry runs (--dry-run) or only real jobs (--no-dry-run); both by default",
    )
    jobs.add_argument(
        "--limit", type=list_limit, default=20, metavar="N", help="jobs to list, 1-1000 (default: %(default)s)"
    )
    output = jobs.add_mutually_exclusive_group()
    output.add_argument("--watch", action="store_true", help="follow unfinished jobs with live progress bars")
    output.add_argument("--json", action="store_true", help="print the API's JSON (the job, or the list) on stdout")
    _client_options(jobs)
    jobs.set_defaults(run=_jobs)

    status = commands.add_parser(
        "status",
        help="queue depth, live workers and unfinished jobs (operators)",
        description="Read the database and the broker directly (DATABASE_URL / REDIS_URL, or the folder's "
        "embedded servers): messages waiting and unacknowledged in the queue, the workers that answer, and the "
        "unfinished jobs of every partner with their progress. Exit status 1 when a source does not answer.",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object on stdout, for scripts")
    status.add_argument(
        "--limit", type=list_limit, default=50, metavar="N", help="unfinished jobs to list (default: %(default)s)"
    )
    status.set_defaults(run=_status)


def use_running_embedded_servers() -> None:
    """With DATABASE_URL or REDIS_URL unset, use the folder's embedded server that `pfsync dev` runs, if it does.
    Only `pfsync dev` starts one: a production process never starts a database or a broker of its own."""
    if settings.database_url and settings.redis_url:
        return
    from cli.embedded import join_running_servers

    database, broker = join_running_servers(settings.data_dir)
    if not settings.database_url and database:
        settings.database_url = normalise_database_url(database)
    if not settings.redis_url and broker:
        settings.redis_url = broker


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pfsync` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    command: Command = args.run
    try:
        if command not in (_dev, _push, _jobs):  # dev starts its own; push and jobs only call the API
            use_running_embedded_servers()
        return command(args)
    except NotConfigured as exc:
        err_console.print(
            f"[red]error:[/] {escape(str(exc))}, and no `pfsync dev` runs embedded servers in "
            f"{escape(str(settings.data_dir.resolve()))}: set DATABASE_URL and REDIS_URL (see .env.example), "
            "or start `pfsync dev` in this folder."
        )
    except CommandError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return exc.exit_code
    except OperationalError as exc:
        err_console.print(f"[red]error:[/] cannot reach the database: {str(exc.orig or exc).strip()}")
    except KeyboardInterrupt:
        return 130
    return 1
