#!/usr/bin/env python3
"""Run the project from a fresh clone with nothing but Python 3.11+ (this file uses the standard library only).

    python3 run.py dev [ARGS]     # `pfsync dev ARGS`: the service, with an embedded PostgreSQL and Redis
    python3 run.py test [ARGS]    # `pytest ARGS`: the test suite
    python3 run.py install        # only bring .venv up to date

Each first makes sure `.venv` holds exactly what `requirements-dev.lock` pins (every package, with its hashes) and
this project (editable): it creates `.venv` if missing and installs again whenever the lock file or pyproject.toml
changed since the last install (their hash is kept in `.venv/pfsync-lock.sha256`). Then it runs the command from
`.venv`, passing the remaining arguments on.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements-dev.lock"
PYPROJECT = ROOT / "pyproject.toml"
STAMP_NAME = "pfsync-lock.sha256"
COMMANDS = {"dev": ["pfsync", "dev"], "test": ["pytest"], "install": []}
USAGE = "usage: python3 run.py {dev|test|install} [ARGS...]"


def bin_dir(env: Path) -> Path:
    """Where a virtualenv keeps its executables."""
    return env / ("Scripts" if os.name == "nt" else "bin")


def fingerprint(*files: Path) -> str:
    """One hash of the files that decide what `.venv` must hold."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def is_current(env: Path, wanted: str) -> bool:
    """Whether `env` exists and was last installed from what `wanted` fingerprints."""
    stamp = env / STAMP_NAME
    python = bin_dir(env) / ("python.exe" if os.name == "nt" else "python")
    return python.exists() and stamp.exists() and stamp.read_text().strip() == wanted


def install_commands(python: Path, root: Path = ROOT, lock: Path = LOCK) -> list[list[str]]:
    """Every package of the lock, verified by hash; then the project itself, editable, with no other dependency
    (its build backend, setuptools, is in the lock too, so nothing unpinned is installed)."""
    return [
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--require-hashes", "-r", str(lock)],
        [
            str(python),
            *("-m", "pip", "install", "--disable-pip-version-check"),
            *("--no-deps", "--no-build-isolation", "--editable", str(root)),
        ],
    ]


def ensure_venv(env: Path = VENV) -> Path:
    """`.venv` up to date with the lock file; returns its directory of executables."""
    wanted = fingerprint(LOCK, PYPROJECT)
    if is_current(env, wanted):
        return bin_dir(env)
    python = bin_dir(env) / ("python.exe" if os.name == "nt" else "python")
    if not python.exists():
        print(f"run.py: creating {env}", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True).create(env)
    print(f"run.py: installing {LOCK.name} into {env}", file=sys.stderr, flush=True)
    (env / STAMP_NAME).unlink(missing_ok=True)  # a failed install must be retried next time
    for command in install_commands(python):
        subprocess.run(command, check=True, cwd=ROOT)
    (env / STAMP_NAME).write_text(wanted + "\n")
    return bin_dir(env)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 (run by whatever python3 the machine has)
        print("run.py: Python 3.11 or newer is needed", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    name, *rest = argv
    try:
        executables = ensure_venv()
    except subprocess.CalledProcessError as exc:
        print(f"run.py: installing failed ({exc.returncode}): {' '.join(exc.cmd)}", file=sys.stderr)
        return 1
    if name == "install":
        return 0
    program, *args = COMMANDS[name]
    command = [str(executables / program), *args, *rest]
    if os.name == "nt":
        return subprocess.call(command)
    os.execv(command[0], command)  # the command's own exit status, signals straight to it (Ctrl-C)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
