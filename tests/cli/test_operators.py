"""`pfsync operator create`, run as a person runs it: an operator of the console with a generated password shown
once, a viewer unless told otherwise."""

from __future__ import annotations

import json
import uuid
from contextlib import nullcontext

from core.db import session_scope
from core.operators.service import SignedIn, sign_in
from tests.cli.test_cli import configured_env, run_pfsync


def test_operator_create_json_prints_a_password_that_signs_in() -> None:
    username = f"ops-{uuid.uuid4().hex[:8]}"
    result = run_pfsync("operator", "create", username, "--role", "admin", "--json", env=configured_env())

    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"username", "password", "role"}
    assert created["username"] == username
    assert created["role"] == "admin"
    with session_scope() as session:
        signed = sign_in(lambda: nullcontext(session), username=username, password=created["password"])
        assert isinstance(signed, SignedIn)
        assert signed.session.role == "admin"


def test_operator_create_makes_a_viewer_by_default_and_shows_the_password_to_a_person() -> None:
    username = f"ops-{uuid.uuid4().hex[:8]}"
    result = run_pfsync("operator", "create", username, env=configured_env())

    assert result.returncode == 0, result.stderr
    assert username in result.stdout
    assert "viewer" in result.stdout
    assert "only this once" in result.stdout


def test_operator_create_refuses_a_taken_username_and_a_bad_one() -> None:
    username = f"ops-{uuid.uuid4().hex[:8]}"
    assert run_pfsync("operator", "create", username, "--json", env=configured_env()).returncode == 0
    again = run_pfsync("operator", "create", username, "--json", env=configured_env())
    assert again.returncode == 1
    assert "already an operator" in again.stderr
    assert again.stdout == ""

    bad = run_pfsync("operator", "create", "has space", env=configured_env())
    assert bad.returncode == 2
    assert "username" in bad.stderr
    role = run_pfsync("operator", "create", username + "x", "--role", "root", env=configured_env())
    assert role.returncode == 2
