"""The Tryton tests skip without trytond only outside CI: in CI a missing ERP fails them.
The cached demo database of one checkout is not removed by a build of another."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

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


def test_a_template_build_keeps_the_templates_other_checkouts_use(tmp_path):
    # two branches sharing one FLOWYARD_TRYTON_CACHE build templates of different keys:
    # one in use stays; one unused for a day and an interrupted build go
    from tests.support.tryton import KEEP_UNUSED_S, prune_templates

    (tmp_path / "build.lock").touch()
    in_use = tmp_path / "trytond-8.2.1-aaaaaaaaaaaa-2026"
    in_use.mkdir()
    (in_use / "used").touch()
    forgotten = tmp_path / "trytond-8.2.1-bbbbbbbbbbbb-2026"
    forgotten.mkdir()
    (forgotten / "used").touch()
    long_ago = time.time() - KEEP_UNUSED_S - 60
    os.utime(forgotten / "used", (long_ago, long_ago))
    interrupted = tmp_path / "trytond-8.2.1-cccccccccccc-2026.building"
    interrupted.mkdir()

    assert prune_templates(tmp_path) == [forgotten, interrupted]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.lock", in_use.name]
