"""Checking a flow imports what checking needs, nothing of running it (start-up time).

``flowyard validate`` of a shipped flow must start in under 0.5 s (docs/benchmarks.md,
start-up): the engine's names are imported on first use, the state store's rows and the
runner only by the commands that run flows, and httpx (with the command-line tools its
package imports when they are installed: click, rich, pygments) only when an HTTP or
Tryton connection sends its first request.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

CHECK_A_FLOW = """
import json, sys
from engine import Engine
problems = Engine(state="/nonexistent/flowyard.db").check(sys.argv[1])
print(json.dumps({"errors": [str(p) for p in problems if p.severity == "error"],
                  "modules": sorted(sys.modules)}))
"""
# what running a flow, serving or scaffolding needs, and checking one does not
NOT_FOR_CHECKING = (
    "httpx",
    "rich",
    "pydantic",
    "engine.runner",
    "engine.executor",
    "engine.store.sqlite",
    "engine.store.rows",
    "engine.serve.intake",
    "engine.scaffold",
    "engine.flowtest",
)


def modules_after_checking(flow: str) -> tuple[list[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", CHECK_A_FLOW, str(ROOT / flow)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    return found["errors"], set(found["modules"])


def test_checking_a_flow_with_http_and_tryton_connections_imports_no_http_client():
    errors, modules = modules_after_checking("flows/order_to_erp.yaml")
    assert errors == []
    assert "connectors.tryton" in modules and "connectors.httpkit" in modules  # were checked
    assert (
        sorted(m for m in modules if m.split(".")[0] in NOT_FOR_CHECKING or m in NOT_FOR_CHECKING)
        == []
    )


def test_importing_the_engine_imports_none_of_its_modules_until_a_name_is_used():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, engine; print([m for m in sys.modules if m.startswith('engine.')])",
        ],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_name_of_the_public_api_is_the_one_its_module_defines():
    import engine
    import engine.runner
    import engine.store.rows

    assert engine.RunResult is engine.runner.RunResult
    assert engine.Trace is engine.store.rows.Trace
    assert "RunResult" in dir(engine)


def test_the_start_up_parts_benchmark_runs(tmp_path):
    from bench import startup_parts

    flow = ROOT / "bench" / "reference_flow.yaml"
    found = startup_parts.main([str(flow), "--repeat", "1", "--json", str(tmp_path / "p")])
    parts = found[str(flow)]
    assert all(seconds >= 0 for seconds in parts.values())
    assert sum(seconds for part, seconds in parts.items() if part != "total") <= parts["total"]
    assert parts["check: Jinja2 parsing and compiling, mappings"] > 0
    assert json.loads((tmp_path / "p").read_text()) == found
