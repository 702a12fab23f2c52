"""Operators of the console in the domain, on the real database: accounts with a role and a generated password
stored only as a hash, sign-in with a per-username throttle, sessions that end at sign-out or when they expire."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.config import settings
from core.errors import DomainError
from core.operators import passwords
from core.operators.service import (
    Sessions,
    SignedIn,
    SignInRefused,
    create_operator,
    csrf_matches,
    hash_token,
    session_for_token,
    sign_in,
    sign_out,
)


def _within(session: Session) -> Sessions:
    """Every transaction of a sign-in in the test's own (rolled back at the end)."""
    return lambda: nullcontext(session)


def _signed_in(session: Session, username: str, password: str) -> SignedIn:
    result = sign_in(_within(session), username=username, password=password)
    assert isinstance(result, SignedIn), result
    return result


def test_an_operator_gets_a_generated_password_stored_only_as_a_hash(session: Session) -> None:
    created = create_operator(session, username="ada")
    assert created.role == "viewer"  # the default: reads only
    assert len(created.password) >= 20
    stored = session.execute(text("SELECT password_hash, role FROM operators WHERE username = 'ada'")).one()
    assert created.password not in stored.password_hash
    assert stored.password_hash.startswith("scrypt$n=16384,r=8,p=5$")
    assert stored.role == "viewer"
    assert create_operator(session, username="grace", role="admin").role == "admin"


@pytest.mark.parametrize(
    ("username", "role", "code"),
    [("", "viewer", "invalid_username"), ("has space", "viewer", "invalid_username"), ("x" * 65, "viewer",
     "invalid_username"), ("nul\x00", "viewer", "invalid_username"), ("ok", "root", "invalid_role")],
)  # fmt: skip
def test_usernames_and_roles_are_checked(session: Session, username: str, role: str, code: str) -> None:
    with pytest.raises(DomainError) as refused:
        create_operator(session, username=username, role=role)
    assert refused.value.code == code


def test_a_username_is_taken_once(session: Session) -> None:
    create_operator(session, username="twice")
    with pytest.raises(DomainError) as refused:
        create_operator(session, username="twice", role="admin")
    assert (refused.value.code, refused.value.status) == ("operator_exists", 409)


def test_signing_in_opens_a_session_kept_only_by_the_hash_of_its_token(session: Session) -> None:
    created = create_operator(session, username="signs-in", role="admin")
    signed = _signed_in(session, "signs-in", created.password)
    assert signed.session.username == "signs-in"
    assert signed.session.is_admin
    stored = session.execute(
        text("SELECT s.id FROM operator_sessions s JOIN operators o ON o.id = s.operator_id WHERE o.username = :u"),
        {"u": "signs-in"},
    ).scalar_one()
    assert stored == hash_token(signed.token) != signed.token
    found = session_for_token(session, token=signed.token)
    assert found is not None
    assert found.csrf_token == signed.session.csrf_token
    assert csrf_matches(found, signed.session.csrf_token)
    assert not csrf_matches(found, None)
    assert not csrf_matches(found, "forged")
    assert session_for_token(session, token="not-a-token") is None
    assert session_for_token(session, token="x" * 1000) is None


def test_signing_out_ends_the_session_at_once(session: Session) -> None:
    created = create_operator(session, username="leaves")
    signed = _signed_in(session, "leaves", created.password)
    assert sign_out(session, session_id=signed.session.session_id)
    assert session_for_token(session, token=signed.token) is None
    assert not sign_out(session, session_id=signed.session.session_id)


def test_an_expired_session_opens_nothing(session: Session) -> None:
    created = create_operator(session, username="expires")
    signed = _signed_in(session, "expires", created.password)
    session.execute(
        text("UPDATE operator_sessions SET expires_at = now() - interval '1 second' WHERE id = :s"),
        {"s": signed.session.session_id},
    )
    assert session_for_token(session, token=signed.token) is None


def test_wrong_credentials_are_refused_alike(session: Session) -> None:
    created = create_operator(session, username="careful")
    assert sign_in(_within(session), username="careful", password=created.password + "x") == SignInRefused(locked=False)
    assert sign_in(_within(session), username="nobody", password=created.password) == SignInRefused(locked=False)
    assert sign_in(_within(session), username="", password="") == SignInRefused(locked=False)


def test_too_many_failures_in_a_row_lock_the_username_for_a_while(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "console_login_max_failures", 3)
    monkeypatch.setattr(settings, "console_login_lockout_seconds", 60)
    created = create_operator(session, username="guessed")
    other = create_operator(session, username="bystander")
    for _ in range(3):
        assert sign_in(_within(session), username="guessed", password="guess") == SignInRefused(locked=False)
    refused = sign_in(
        lambda: nullcontext(session), username="guessed", password=created.password
    )  # even the right password
    assert isinstance(refused, SignInRefused)
    assert refused.locked
    assert 1 <= refused.retry_after <= 60
    _signed_in(session, "bystander", other.password)  # per username: another is not locked
    # Once the lockout has passed, the right password works and the count starts again.
    session.execute(
        text("UPDATE operators SET last_failed_login_at = now() - interval '61 seconds' WHERE username = 'guessed'")
    )
    _signed_in(session, "guessed", created.password)
    assert session.execute(text("SELECT failed_logins FROM operators WHERE username = 'guessed'")).scalar_one() == 0


def test_a_password_hash_verifies_only_its_password() -> None:
    stored = passwords.hash_password("correct horse")
    assert passwords.verify_password("correct horse", stored)
    assert not passwords.verify_password("correct horse!", stored)
    assert stored != passwords.hash_password("correct horse")  # salted
    for malformed in ("", "scrypt$", "md5$n=1,r=1,p=1$AA$AA", "scrypt$n=x$AA$AA"):
        assert not passwords.verify_password("correct horse", malformed)
