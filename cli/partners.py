"""`pfsync partner create|list|budget` and `pfsync key create|list|revoke`: partners and their API keys."""

from __future__ import annotations

import argparse
import sys

import orjson
from rich.markup import escape
from rich.table import Column, Table

from cli.output import CommandError, UsageError, console
from core.db import session_scope
from core.errors import DomainError
from core.partners import service
from core.partners.service import NewKey, create_partner
from core.records.service import rfc3339

MAX_NAME_LENGTH = 255


def partner_name(value: str) -> str:
    """argparse type for a partner's name: 1–255 characters, no NUL (PostgreSQL cannot store it)."""
    name = value.strip()
    if not name or len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise argparse.ArgumentTypeError(f"a partner name is 1 to {MAX_NAME_LENGTH} characters")
    return name


def run_partner_create(*, name: str, as_json: bool) -> int:
    """Create the partner and its key, and show the secret this once."""
    with session_scope() as session:
        key = create_partner(session, name=name)
    return _show_new_key(key, f"Created partner [bold]{escape(name)}[/].", as_json)


def run_key_create(*, partner_id: str, as_json: bool) -> int:
    """Another live key for the partner: rotate by creating one, switching to it, then revoking the old one."""
    try:
        with session_scope() as session:
            key = service.create_key_for(session, partner_id=partner_id)
    except DomainError as exc:
        raise CommandError(f"no partner {partner_id}") from exc
    return _show_new_key(key, f"Created a key for partner [bold]{escape(partner_id)}[/].", as_json)


def _show_new_key(key: NewKey, headline: str, as_json: bool) -> int:
    if as_json:
        document = {"partner_id": key.partner_id, "key_id": key.key_id, "secret": key.secret}
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        return 0
    table = Table.grid(padding=(0, 2))
    table.add_row("partner", key.partner_id)
    table.add_row("key id", f"[bold]{key.key_id}[/]")
    table.add_row("secret", f"[bold]{key.secret}[/]")
    console.print(headline)
    console.print(table)
    console.print(
        "The secret is shown only this once (the service stores only its hash): keep it now.\n"
        "Authenticate with HTTP Basic: username = key id, password = secret."
    )
    return 0


def run_partner_list(*, as_json: bool) -> int:
    """Every partner, oldest first."""
    with session_scope() as session:
        rows: list[dict[str, str | None]] = [
            {"id": p.id, "name": p.name, "created_at": rfc3339(p.created_at)} for p in service.list_partners(session)
        ]
    return _show_rows(rows, ("id", "name", "created_at"), as_json)


def run_key_list(*, partner_id: str, as_json: bool) -> int:
    """The partner's keys, never their secrets."""
    try:
        with session_scope() as session:
            rows = [
                {
                    "id": k.id,
                    "created_at": rfc3339(k.created_at),
                    "last_used_at": rfc3339(k.last_used_at) if k.last_used_at else None,
                    "revoked_at": rfc3339(k.revoked_at) if k.revoked_at else None,
                }
                for k in service.list_keys(session, partner_id=partner_id)
            ]
    except DomainError as exc:
        raise CommandError(f"no partner {partner_id}") from exc
    return _show_rows(rows, ("id", "created_at", "last_used_at", "revoked_at"), as_json)


def run_key_revoke(*, key_id: str) -> int:
    """Revoke the key. Once this returns, no write made with it is applied; within 1 s every request with it is
    refused, on every API process."""
    from core.jobs.processing import cancel_jobs_of_key
    from workers.publish import publish_chunks

    try:
        with session_scope() as session:
            key = service.revoke_key(session, key_id=key_id)
            revoked_at = rfc3339(key.revoked_at) if key.revoked_at else ""
            to_publish = cancel_jobs_of_key(session, key_id=key_id)
    except DomainError as exc:
        raise CommandError(f"no API key {key_id}") from exc
    publish_chunks(to_publish)  # the jobs admitted in place of those cancelled (else the sweeper publishes them)
    console.print(f"Revoked [bold]{escape(key_id)}[/] at {revoked_at}; the unfinished jobs it submitted are cancelled.")
    return 0


def run_partner_budget(
    *, partner_id: str, per_second: int | None, burst: int | None, reset: bool, as_json: bool
) -> int:
    """Show the partner's request budget, or set it (its own, or the default again)."""
    if reset and (per_second is not None or burst is not None):
        raise UsageError("--default cannot be combined with --per-second or --burst")
    if burst is not None and per_second is None:
        raise UsageError("--burst needs --per-second")
    try:
        with session_scope() as session:
            if reset or per_second is not None:
                partner = service.set_budget(session, partner_id=partner_id, per_second=per_second, burst=burst)
            else:
                partner = service.get_partner(session, partner_id=partner_id)
            budget = service.budget_for(partner)
            own = partner.rate_limit_per_second is not None
    except DomainError as exc:
        raise CommandError(f"no partner {partner_id}") from exc
    if as_json:
        document = {
            "partner_id": partner_id,
            "per_second": budget.per_second,
            "burst": budget.quota if not budget.unlimited else budget.burst,
            "window_seconds": None if budget.unlimited else budget.window_seconds,
            "own": own,
        }
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        return 0
    whose = "its own" if own else "the service's default"
    if budget.unlimited:
        console.print(f"Partner [bold]{escape(partner_id)}[/] has no request budget ({whose}): nothing is limited.")
    else:
        console.print(
            f"Partner [bold]{escape(partner_id)}[/] may send {budget.per_second} requests a second, in bursts of "
            f"up to {budget.quota} ({budget.quota} in any {budget.window_seconds} s): {whose}."
        )
    return 0


def _show_rows(rows: list[dict[str, str | None]], columns: tuple[str, ...], as_json: bool) -> int:
    if as_json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return 0
    # An id is shown whole, whatever the terminal's width (it is pasted into other commands): the others give way.
    table = Table(
        *(
            Column(c, no_wrap=True, min_width=max(len(row[c] or "") for row in rows) if rows else None)
            if c == "id" or c.endswith("_id")
            else Column(c)
            for c in columns
        )
    )
    for row in rows:
        table.add_row(*(escape(row[c] or "—") for c in columns))
    console.print(table)
    return 0
