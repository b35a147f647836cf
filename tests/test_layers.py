"""Imports run one way: the CLI uses the public API, the run path calls down only, the
load path too (builders return what they built to the loader, never import it), the store
sits below the run path, and connectors know nothing of the engine."""

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
# the loader and the builders of a flow's parts (docs/architecture.md, the load path)
LOADER = "engine/loader.py"
LOAD_PATH_BUILDERS = [
    "engine/load_connections.py",
    "engine/load_steps.py",
    "engine/load_templates.py",
    "engine/load_governance.py",
    "engine/load_findings.py",
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


def engine_imports() -> dict[str, set[str]]:
    """Each engine module (a file path) and the engine modules it imports (file paths)."""
    files = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts): str(p.relative_to(ROOT))
        for p in (ROOT / "engine").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        found = set()
        for imported, names in imports(path):
            candidates = [imported, *(f"{imported}.{name}" for name in names)]
            found |= {files[c] for c in candidates if c in files and c != module}
        graph[path] = found
    return graph


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


def test_load_time_builders_never_import_the_loader():
    for path in LOAD_PATH_BUILDERS:
        found = {module for module, _ in imports(path)}
        assert "engine.loader" not in found, (path, "takes what it needs, returns Built")


def test_only_the_loader_knows_its_private_class():
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for module, names in imports(str(path.relative_to(ROOT))):
            assert not (module == "engine.loader" and "_Loader" in names), path


def test_the_load_path_has_no_import_circle():
    graph = engine_imports()
    for start in [LOADER, *LOAD_PATH_BUILDERS]:
        seen, todo = set(), list(graph[start])
        while todo:
            path = todo.pop()
            assert path != start, f"{start} imports itself through {sorted(seen)}"
            if path not in seen:
                seen.add(path)
                todo += graph[path]
