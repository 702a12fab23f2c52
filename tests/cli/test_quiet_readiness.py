"""/readyz reads the schema revision through a new Alembic migration context each time: the context's routine INFO
lines ("Context impl …", "Will assume …") are dropped in every server process, the lines naming a migration run
are kept."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from cli import output
from cli.output import MIGRATION_LOGGER, RoutineMigrationFilter
from cli.serve import uvicorn_log_config
from core import logs
from core.db import get_engine
from core.migrate import current_revision, head_revision


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def migration_logger() -> Iterator[tuple[logging.Logger, _Collect]]:
    """alembic's migration logger at INFO with a handler of its own, as it was afterwards."""
    logger = logging.getLogger(MIGRATION_LOGGER)
    level, filters = logger.level, list(logger.filters)
    collect = _Collect()
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    try:
        yield logger, collect
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
        logger.filters[:] = filters


def test_the_revision_check_logs_nothing_once_quieted(
    migration_logger: tuple[logging.Logger, _Collect], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, collect = migration_logger
    monkeypatch.setattr(logs, "configure", lambda *_args: None)  # keep the suite's own handlers
    logger.filters[:] = []
    with get_engine().connect() as conn:
        assert current_revision(conn) == head_revision()
    assert any(m.startswith("Context impl") for m in collect.messages), "alembic no longer logs this: drop the filter"

    collect.messages.clear()
    output.configure_logging()
    with get_engine().connect() as conn:
        for _ in range(3):
            assert current_revision(conn) == head_revision()
    assert collect.messages == []


def test_migration_runs_and_warnings_still_log(migration_logger: tuple[logging.Logger, _Collect]) -> None:
    logger, collect = migration_logger
    logger.filters[:] = [RoutineMigrationFilter()]
    logger.info("Running %s", "upgrade a -> b, a step")
    logger.warning("Will assume something odd")
    assert collect.messages == ["Running upgrade a -> b, a step", "Will assume something odd"]


def test_uvicorn_processes_install_the_filter() -> None:
    config = uvicorn_log_config()
    (name,) = config["loggers"][MIGRATION_LOGGER]["filters"]
    factory = config["filters"][name]["()"]
    module, _, attribute = factory.rpartition(".")
    assert getattr(__import__(module, fromlist=[attribute]), attribute) is RoutineMigrationFilter
