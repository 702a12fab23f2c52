"""Operators of the console (SPEC §10): accounts with a role, sign-in with a throttle, sessions, sign-out.

Operators are not partners: an operator's password opens no part of the partner API, and no API key opens the
console. A session is a random token in the browser's cookie; the database keeps only its SHA-256 (a stolen table
opens nothing), with the session's CSRF token and its end. Signing out deletes the row, so the cookie is dead at
once, on every API process.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.orm import Session

from core import ids
from core.config import settings
from core.errors import DomainError
from core.operators import passwords, repository


class Role(StrEnum):
    """`viewer` reads; `admin` may also act (cancel a job, revoke a key)."""

    ADMIN = "admin"
    VIEWER = "viewer"


ROLES: tuple[str, ...] = tuple(role.value for role in Role)
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
USERNAME_RULE = "1 to 64 letters, digits and . _ @ -, starting with a letter or digit"
# Longer than any token this module makes: a longer cookie is refused before it is hashed.
_MAX_TOKEN_LENGTH = 128
# Checked when the username is unknown, so that the time a sign-in takes does not tell which usernames exist.
_dummy_hash: str | None = None
# The password checks a process runs at once (`sign_in`), and the sign-ins that may wait for one (each holding a
# thread of the API's pool, never a database connection), for at most this long.
_password_checks = threading.BoundedSemaphore(settings.console_password_checks)
_waiting_sign_ins = threading.BoundedSemaphore(settings.console_password_checks + 8)
_CHECK_WAIT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class NewOperator:
    """A freshly created operator: the password is shown once and never stored."""

    username: str
    password: str
    role: str


@dataclass(frozen=True, slots=True)
class OperatorSession:
    """A live console session: who is signed in, with which role, and the token every form must carry back."""

    session_id: str
    operator_id: str
    username: str
    role: str
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A successful sign-in: the cookie's token (shown to the browser only) and the session."""

    token: str
    session: OperatorSession


@dataclass(frozen=True, slots=True)
class SignInRefused:
    """A refused sign-in: wrong credentials, a username locked out for `retry_after` seconds, or (`busy`) as many
    password checks running in this process as it allows (try again in `retry_after` seconds)."""

    locked: bool
    retry_after: int = 0
    busy: bool = False


def valid_username(username: str) -> bool:
    return USERNAME.fullmatch(username) is not None


def create_operator(session: Session, *, username: str, role: str = Role.VIEWER) -> NewOperator:
    """A new operator with a generated password (returned this once; only its hash is stored)."""
    if not valid_username(username):
        raise DomainError("invalid_username", f"A username is {USERNAME_RULE}.", 422)
    if role not in ROLES:
        raise DomainError("invalid_role", f"A role is one of {', '.join(ROLES)}.", 422)
    if repository.username_taken(session, username=username):
        raise DomainError("operator_exists", f"There is already an operator {username}.", 409)
    password = passwords.new_password()
    repository.insert_operator(
        session,
        operator_id=ids.new_id(ids.OPERATOR),
        username=username,
        password_hash=passwords.hash_password(password),
        role=role,
    )
    return NewOperator(username=username, password=password, role=role)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


Sessions = Callable[[], AbstractContextManager[Session]]


def sign_in(sessions: Sessions, *, username: str, password: str) -> SignedIn | SignInRefused:
    """Check the credentials and open a session; or refuse, counting the failure.

    After `PFSYNC_CONSOLE_LOGIN_MAX_FAILURES` failures in a row, the username is refused without a password check
    until `PFSYNC_CONSOLE_LOGIN_LOCKOUT_SECONDS` after its last failure; each failure after that locks it again,
    so guessing gets one try per lockout.

    The operator is read in one transaction of `sessions` and the outcome recorded in another: no database
    connection is held while the password is checked (a fifth of a second of scrypt), so a flood of sign-ins cannot
    take the connections partners' requests need. Only `PFSYNC_CONSOLE_PASSWORD_CHECKS` checks run at once in a
    process, and 8 more sign-ins may wait up to 3 s for their turn; any other is refused at once as `busy`, without
    a check, so a flood costs at most that many cores' worth of scrypt and a few threads.
    """
    global _dummy_hash
    row = None
    if valid_username(username) and len(password) <= 1024:
        with sessions() as session:
            row = repository.operator_for_sign_in(
                session,
                username=username,
                max_failures=settings.console_login_max_failures,
                lockout_seconds=settings.console_login_lockout_seconds,
            )
    if row is not None and row.locked:
        return SignInRefused(locked=True, retry_after=max(1, int(row.retry_after or 1)))
    # A few sign-ins may wait their turn (operators signing in together); past them, or after the wait, refused.
    if not _waiting_sign_ins.acquire(blocking=False):
        return SignInRefused(locked=False, busy=True, retry_after=1)
    try:
        if not _password_checks.acquire(timeout=_CHECK_WAIT_SECONDS):
            return SignInRefused(locked=False, busy=True, retry_after=1)
        try:
            if row is None:
                if _dummy_hash is None:
                    _dummy_hash = passwords.hash_password(secrets.token_urlsafe(18))
                passwords.verify_password(password, _dummy_hash)
                return SignInRefused(locked=False)
            matches = passwords.verify_password(password, row.password_hash)
        finally:
            _password_checks.release()
    finally:
        _waiting_sign_ins.release()
    with sessions() as session:
        if not matches:
            repository.record_failed_sign_in(session, operator_id=row.id)
            return SignInRefused(locked=False)
        repository.clear_failed_sign_ins(session, operator_id=row.id)
        repository.delete_expired_sessions(session)
        token = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(32)
        session_id = hash_token(token)
        repository.insert_session(
            session,
            session_id=session_id,
            operator_id=row.id,
            csrf_token=csrf_token,
            lifetime_seconds=settings.console_session_hours * 3600,
        )
    return SignedIn(token, OperatorSession(session_id, row.id, row.username, row.role, csrf_token))


def session_for_token(session: Session, *, token: str) -> OperatorSession | None:
    """The live session a cookie's token opens, or None (unknown, ended, signed out)."""
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    session_id = hash_token(token)
    row = repository.live_session(session, session_id=session_id)
    if row is None:
        return None
    return OperatorSession(session_id, row.operator_id, row.username, row.role, row.csrf_token)


def csrf_matches(signed_in: OperatorSession, given: str | None) -> bool:
    """Whether a form's CSRF token is the session's (compared in constant time)."""
    return given is not None and hmac.compare_digest(signed_in.csrf_token.encode(), given.encode())


def sign_out(session: Session, *, session_id: str) -> bool:
    """End a session now; False if it had ended already."""
    return repository.delete_session(session, session_id=session_id)
