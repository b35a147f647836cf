"""Imports run one way: the CLI uses the public API, the run path calls down only, the
store sits below the run path, and connectors know nothing of the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import engine
from tests.conftest import ROOT

RUN_PATH_BELOW_RUNNER = [
    "engine/executor.py",
    "engine/context.py",
    "engine/work.py",
    "engine/progress.py",
    "engine/lanes.py",
    "engine/lease.py",
    "engine/idempotency.py",
    "engine/outcomes.py",
    "engine/codec.py",
]
STORE = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "engine" / "store").glob("*.py"))


def imports(path: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import in a file, nested ones included."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def test_the_cli_uses_the_engine_public_api_only():
    for module, names in imports("cli.py"):
        if module.startswith("engine"):
            assert module == "engine", f"cli.py imports {module}: use `from engine import`"
            assert set(names) <= set(engine.__all__), names


def test_the_run_path_below_the_runner_never_calls_back_up():
    for path in RUN_PATH_BELOW_RUNNER + STORE:
        found = {module for module, _ in imports(path)}
        assert not found & {"engine.runner", "engine.api", "engine"}, (path, found)


def test_the_store_depends_on_nothing_of_the_run_path():
    allowed = ("engine.store", "engine.codec", "engine.errors", "engine.outcomes")
    for path in STORE:
        for module, _ in imports(path):
            if module.startswith("engine"):
                assert module.startswith(allowed), (path, module)


def test_connectors_never_import_the_engine():
    for path in sorted(Path(ROOT / "connectors").rglob("*.py")):
        for module, _ in imports(str(path.relative_to(ROOT))):
            assert not module.startswith("engine"), (path, module)
