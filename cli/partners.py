"""`pfsync partner create`: a partner and its first API key."""

from __future__ import annotations

import argparse
import sys

import orjson
from rich.markup import escape
from rich.table import Table

from cli.output import console
from core.db import session_scope
from core.partners.service import create_partner

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
    if as_json:
        document = {"partner_id": key.partner_id, "key_id": key.key_id, "secret": key.secret}
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        return 0
    table = Table.grid(padding=(0, 2))
    table.add_row("partner", key.partner_id)
    table.add_row("key id", f"[bold]{key.key_id}[/]")
    table.add_row("secret", f"[bold]{key.secret}[/]")
    console.print(f"Created partner [bold]{escape(name)}[/].")
    console.print(table)
    console.print(
        "The secret is shown only this once (the service stores only its hash): keep it now.\n"
        "Authenticate with HTTP Basic: username = key id, password = secret."
    )
    return 0
