"""SQL for operators and their console sessions: `operators` and `operator_sessions`.

Statements only; the rules (hashing, the sign-in throttle, lifetimes) are in core/operators/service.py. Nothing here
commits; ORM writes flush.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select, text
from sqlalchemy.orm import Session

from core.models import Operator


def insert_operator(session: Session, *, operator_id: str, username: str, password_hash: str, role: str) -> Operator:
    """Store a new operator."""
    operator = Operator(id=operator_id, username=username, password_hash=password_hash, role=role)
    session.add(operator)
    session.flush()
    return operator


def username_taken(session: Session, *, username: str) -> bool:
    return session.scalar(select(Operator.id).where(Operator.username == username)) is not None


def list_operators(session: Session) -> list[Operator]:
    return list(session.scalars(select(Operator).order_by(Operator.username)))


def operator_for_sign_in(
    session: Session, *, username: str, max_failures: int, lockout_seconds: int
) -> Row[Any] | None:
    """(id, username, role, password_hash, locked, retry_after) of the operator; `locked` while too many failures
    in a row are recent, `retry_after` the seconds until that ends. None for an unknown username."""
    return session.execute(
        text(
            "SELECT id, username, role, password_hash, "
            "  failed_logins >= :max AND last_failed_login_at > now() - make_interval(secs => :lock) AS locked, "
            "  ceil(extract(epoch FROM last_failed_login_at + make_interval(secs => :lock) - now())) AS retry_after "
            "FROM operators WHERE username = :u"
        ),
        {"u": username, "max": max_failures, "lock": lockout_seconds},
    ).one_or_none()


def record_failed_sign_in(session: Session, *, operator_id: str) -> None:
    """One more failed sign-in in a row, now."""
    session.execute(
        text(
            "UPDATE operators SET failed_logins = least(failed_logins + 1, 32767), last_failed_login_at = now() "
            "WHERE id = :o"
        ),
        {"o": operator_id},
    )


def clear_failed_sign_ins(session: Session, *, operator_id: str) -> None:
    session.execute(
        text("UPDATE operators SET failed_logins = 0 WHERE id = :o AND failed_logins <> 0"), {"o": operator_id}
    )


def insert_session(
    session: Session, *, session_id: str, operator_id: str, csrf_token: str, lifetime_seconds: float
) -> None:
    """Store a new console session of the operator, ending `lifetime_seconds` from now."""
    session.execute(
        text(
            "INSERT INTO operator_sessions (id, operator_id, csrf_token, expires_at) "
            "VALUES (:s, :o, :c, now() + make_interval(secs => :life))"
        ),
        {"s": session_id, "o": operator_id, "c": csrf_token, "life": lifetime_seconds},
    )


def delete_expired_sessions(session: Session) -> int:
    """Forget every session past its end; how many."""
    result = session.execute(text("DELETE FROM operator_sessions WHERE expires_at <= now()"))
    return int(getattr(result, "rowcount", 0) or 0)


def live_session(session: Session, *, session_id: str) -> Row[Any] | None:
    """(operator_id, username, role, csrf_token) of a session that has not ended, or None."""
    return session.execute(
        text(
            "SELECT o.id AS operator_id, o.username, o.role, s.csrf_token FROM operator_sessions s "
            "JOIN operators o ON o.id = s.operator_id WHERE s.id = :s AND s.expires_at > now()"
        ),
        {"s": session_id},
    ).one_or_none()


def delete_session(session: Session, *, session_id: str) -> bool:
    """End a session; False if there was none."""
    result = session.execute(text("DELETE FROM operator_sessions WHERE id = :s"), {"s": session_id})
    return bool(getattr(result, "rowcount", 0))
