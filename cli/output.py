"""Where the command line writes: people read stdout/stderr through rich, scripts read plain JSON."""

from __future__ import annotations

import logging

from rich.console import Console

from core import logs
from core.config import settings

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# Loggers that narrate routine steps at INFO (pgserver: every pg_ctl call; alembic: plugin set-up in each process).
QUIET_LOGGERS = ("pgserver", "alembic.runtime.plugins")


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1, no traceback."""


def configure_logging() -> None:
    """Logs of a server process: `PFSYNC_LOG_LEVEL`, JSON lines unless `PFSYNC_LOG_JSON=false`."""
    logs.configure(settings.log_level, settings.log_json)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
