"""The two-command set-up: run.py installs `.venv` from the committed lock files, which pin (with hashes) every
dependency pyproject.toml declares; CI and the Dockerfile install from the same locks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import run
from tests.conftest import ROOT

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.MULTILINE)


def _pins(lock: Path) -> dict[str, str]:
    return {_normal(name): version for name, version in _PIN.findall(lock.read_text())}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _normal(match.group(0))


@pytest.fixture(scope="module")
def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        document: dict[str, object] = tomllib.load(file)["project"]
    return document


def test_the_runtime_lock_pins_every_runtime_dependency(project: dict[str, object]) -> None:
    pins = _pins(ROOT / "requirements.lock")
    declared = {_requirement_name(r) for r in project["dependencies"]}  # type: ignore[attr-defined]
    assert declared - set(pins) == set(), "regenerate the lock files (README, Development)"
    assert "pytest" not in pins


def test_the_dev_lock_adds_the_dev_tools_and_agrees_with_the_runtime_lock(project: dict[str, object]) -> None:
    runtime = _pins(ROOT / "requirements.lock")
    dev = _pins(ROOT / "requirements-dev.lock")
    extras = project["optional-dependencies"]["dev"]  # type: ignore[index]
    declared = {_requirement_name(r) for r in extras} | {_requirement_name(r) for r in project["dependencies"]}  # type: ignore[attr-defined]
    assert declared - set(dev) == set(), "regenerate the lock files (README, Development)"
    assert {name: dev.get(name) for name in runtime} == runtime


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_pin_carries_hashes(lock: str) -> None:
    text = (ROOT / lock).read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[1] if text.startswith("#") else text)
    for block in blocks:
        if "==" in block.split("\n", 1)[0]:
            assert "--hash=sha256:" in block, block.split("\n", 1)[0]
    assert "file://" not in text, "the lock names this machine's package folders"
    assert "--find-links" not in text, "the lock names this machine's package folders"


def test_run_installs_from_the_dev_lock_with_hashes(tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python"
    first, second = run.install_commands(python, root=ROOT, lock=run.LOCK)
    assert run.LOCK == ROOT / "requirements-dev.lock"
    assert first[:4] == [str(python), "-m", "pip", "install"]
    assert "--require-hashes" in first
    assert first[-2:] == ["-r", str(run.LOCK)]
    assert {"--no-deps", "--no-build-isolation", "--editable"} <= set(second)


def test_run_reinstalls_when_the_lock_changes(tmp_path: Path) -> None:
    lock = tmp_path / "requirements-dev.lock"
    lock.write_text("a==1\n")
    env = tmp_path / ".venv"
    run.bin_dir(env).mkdir(parents=True)
    (run.bin_dir(env) / "python").write_text("")
    before = run.fingerprint(lock)
    assert not run.is_current(env, before), "no stamp yet"
    (env / run.STAMP_NAME).write_text(before + "\n")
    assert run.is_current(env, before)
    lock.write_text("a==2\n")
    assert not run.is_current(env, run.fingerprint(lock))


def test_run_names_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.COMMANDS["dev"] == ["pfsync", "dev"]
    assert run.COMMANDS["test"] == ["pytest"]
    assert run.main(["nonsense"]) == 2
    assert "usage" in capsys.readouterr().err


def test_ci_and_the_image_install_from_the_locks() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "run.py install" in ci
    assert "run.py test" in ci  # the README's test command
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile


def test_the_readme_quick_start_is_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick_start.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    assert [c for c in commands if c] == ["python3 run.py dev", "python3 run.py test"]
