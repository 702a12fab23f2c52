"""`pfsync operator create`: the operators who sign in to the console (SPEC §10)."""

from __future__ import annotations

import argparse
import sys

import orjson
from rich.markup import escape
from rich.table import Table

from cli.output import CommandError, console
from core.db import session_scope
from core.errors import DomainError
from core.operators.service import USERNAME_RULE, create_operator, valid_username


def operator_username(value: str) -> str:
    """argparse type for an operator's username."""
    if not valid_username(value):
        raise argparse.ArgumentTypeError(f"a username is {USERNAME_RULE}")
    return value


def run_operator_create(*, username: str, role: str, as_json: bool) -> int:
    """Create the operator with a generated password, shown this once."""
    try:
        with session_scope() as session:
            created = create_operator(session, username=username, role=role)
    except DomainError as exc:
        raise CommandError(exc.message) from exc
    if as_json:
        document = {"username": created.username, "password": created.password, "role": created.role}
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        return 0
    table = Table.grid(padding=(0, 2))
    table.add_row("username", f"[bold]{escape(created.username)}[/]")
    table.add_row("password", f"[bold]{escape(created.password)}[/]")
    table.add_row("role", created.role)
    console.print(f"Created operator [bold]{escape(created.username)}[/].")
    console.print(table)
    console.print(
        "The password is shown only this once (the service stores only a hash of it): keep it now.\n"
        "Sign in to the console at /console/ on the API's address."
    )
    return 0
