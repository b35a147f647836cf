"""Every shipped flow has offline tests beside it, they pass, and they take every branch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine import Engine
from engine.model import RouteStep
from engine.packaged import flow_tests_file
from tests.conftest import ROOT

FLOWS = sorted(p for p in (ROOT / "flows").glob("*.yaml") if not p.name.endswith(".test.yaml"))


@pytest.mark.parametrize("flow", FLOWS, ids=lambda p: p.stem)
def test_the_shipped_flow_passes_its_tests(flow: Path):
    tests = flow_tests_file(flow)
    assert tests.is_file(), f"{flow.name} has no {tests.name} beside it"
    report = Engine().test([tests])
    assert report.ok, report.text()


@pytest.mark.parametrize("flow", FLOWS, ids=lambda p: p.stem)
def test_the_tests_take_every_branch_of_every_route(flow: Path):
    loaded = Engine().load(flow)
    cases = yaml.safe_load(flow_tests_file(flow).read_text())["cases"]
    taken = {
        (name, what)
        for case in cases
        for entry in (case.get("expect") or {}).get("path") or []
        for name, what in entry.items()
    }
    missing = []
    for step, _, _ in loaded.walk():
        if not isinstance(step, RouteStep):
            continue
        for i, branch in enumerate(step.branches):
            label = "otherwise" if branch.condition is None else f"branch {i}"
            if (step.name, label) not in taken:
                missing.append(f"{step.name}: {label}")
    assert not missing, f"no case of {flow.name} takes {missing}"
