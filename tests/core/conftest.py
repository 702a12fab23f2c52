"""Fixtures for tests of the domain code against the real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from core.db import new_session


@pytest.fixture
def session() -> Iterator[Session]:
    """A session whose work (statistics included: ANALYZE is transactional) is rolled back at the end."""
    session = new_session()
    try:
        yield session
    finally:
        session.rollback()
        session.close()
