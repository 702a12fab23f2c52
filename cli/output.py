"""Where the command line writes: people read stdout/stderr through rich, scripts read plain JSON."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.table import Table

from core import logs
from core.config import settings

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# Loggers that narrate routine steps at INFO (pgserver: every pg_ctl call; alembic: plugin set-up in each process).
QUIET_LOGGERS = ("pgserver", "alembic.runtime.plugins")
# Alembic's migration context announces itself at INFO each time one is made ("Context impl PostgresqlImpl.",
# "Will assume transactional DDL."): two lines on every /readyz, which reads the schema revision. Those lines are
# dropped; the ones naming each migration run ("Running upgrade a -> b") are kept.
MIGRATION_LOGGER = "alembic.runtime.migration"
ROUTINE_MIGRATION_MESSAGES = ("Context impl ", "Will assume ", "Generating static SQL")


class RoutineMigrationFilter(logging.Filter):
    """Drops the migration context's routine INFO lines, keeps everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno <= logging.INFO
            and isinstance(record.msg, str)
            and record.msg.startswith(ROUTINE_MIGRATION_MESSAGES)
        )


def quiet_routine_migration_logs() -> None:
    """Install `RoutineMigrationFilter` on alembic's migration logger (once)."""
    logger = logging.getLogger(MIGRATION_LOGGER)
    if not any(isinstance(f, RoutineMigrationFilter) for f in logger.filters):
        logger.addFilter(RoutineMigrationFilter())


# Columns a table may use when printed into a pipe or a file: enough for a row of ids on one line.
PIPE_WIDTH = 240


class CommandError(Exception):
    """A failure the user can act on: printed as one line, no traceback, exit status `exit_code`."""

    exit_code = 1


class UsageError(CommandError):
    """The command cannot run as given (a missing file, no credentials): exit status 2, like argparse's errors."""

    exit_code = 2


class ServiceError(CommandError):
    """The service refused the request (a 4xx or 5xx problem) or could not be reached: exit status 3.

    `retryable` marks what may pass on its own (unreachable, 5xx), so a command following a job can keep trying.
    """

    exit_code = 3

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def on_a_tty(target: Console) -> bool:
    """Whether the console writes to a terminal (rather than a pipe or a file)."""
    isatty = getattr(target.file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


def is_live(target: Console) -> bool:
    """Whether to draw live displays (bars redrawn in place): only on a real terminal.

    rich takes FORCE_COLOR, which CI systems set for colours, to mean a terminal; a bar redrawn into a log file
    is noise there, so a pipe gets plain lines whatever that says. TTY_INTERACTIVE=1 (or 0) forces the choice.
    """
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    return target.is_interactive and on_a_tty(target)


def print_table(target: Console, table: Table) -> None:
    """Print a table; into a pipe or a file, wide enough that ids never wrap (rich assumes 80 columns there)."""
    if on_a_tty(target):
        target.print(table)
        return
    width = target.width
    target.width = max(width, PIPE_WIDTH)  # print(width=...) cannot widen past the console's own width
    try:
        target.print(table)
    finally:
        target.width = width


def configure_logging() -> None:
    """Logs of a server process: `PFSYNC_LOG_LEVEL`, JSON lines unless `PFSYNC_LOG_JSON=false`."""
    logs.configure(settings.log_level, settings.log_json)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_routine_migration_logs()
