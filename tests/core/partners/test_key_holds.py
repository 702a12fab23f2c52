"""What holds an API key against its revocation, on the real database: a chunk being applied for one of its jobs
keeps the revocation waiting, but not the key's `last_used_at`."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core.db import new_session
from core.partners.repository import hold_key_for_job, revoke_key, touch_key
from tests.conftest import make_partner


def test_a_chunk_holding_its_key_delays_the_revocation_but_not_last_used_at() -> None:
    key_id = make_partner("held").key_id
    chunk, other = new_session(), new_session()
    try:
        assert hold_key_for_job(chunk, key_id=key_id)
        other.execute(text("SET LOCAL lock_timeout = '300ms'"))
        assert touch_key(other, key_id=key_id)  # the row is free: last_used_at is kept up to date meanwhile
        other.commit()
        other.execute(text("SET LOCAL lock_timeout = '300ms'"))
        with pytest.raises(OperationalError) as waited:
            revoke_key(other, key_id=key_id)
        assert isinstance(waited.value.orig, psycopg.errors.LockNotAvailable)
        other.rollback()
        chunk.commit()  # the chunk is done: the revocation goes through, and the next chunk finds the key revoked
        assert revoke_key(other, key_id=key_id) is not None
        other.commit()
        assert not hold_key_for_job(chunk, key_id=key_id)
    finally:
        chunk.rollback()
        chunk.close()
        other.rollback()
        other.close()
