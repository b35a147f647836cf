"""The Tryton tests skip without trytond only outside CI: in CI a missing ERP fails them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.flows import ROOT

CONFTEST = """
import sys
sys.modules["trytond"] = None  # as if the tryton extra were not installed
"""

TEST = """
import pytest
pytest_plugins = ["tests.support.tryton"]

@pytest.mark.tryton
def test_needs_the_erp(tryton):
    pass
"""


def run_without_trytond(tmp_path, **env):
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_erp.py").write_text(textwrap.dedent(TEST))
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "FLOWYARD_REQUIRE_TRYTON")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={**environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "outcome"),
    [
        ({}, "1 skipped"),
        ({"CI": "false"}, "1 skipped"),
        ({"CI": "true"}, "1 error"),
        ({"FLOWYARD_REQUIRE_TRYTON": "1"}, "1 error"),
    ],
)
def test_a_missing_trytond_skips_outside_ci_and_fails_in_ci(tmp_path, env, outcome):
    done = run_without_trytond(tmp_path, **env)
    assert outcome in done.stdout, done.stdout + done.stderr
    assert "trytond is not installed" in done.stdout
