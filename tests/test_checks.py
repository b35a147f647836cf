"""The code checks, run as part of the suite: ruff (lint and format) and mypy.

They are tests, not extra lines in ``.ci/run``, so that every way of running the suite
runs them: CI (the README's test command, verbatim), ``pytest -m 'not slow'`` while
working, and a merge checked with ``pytest -q -x``. conftest.py puts them first, so a
lint or type error stops ``-x`` in seconds. Each failure shows the tool's own report.

mypy reads its settings from ``[tool.mypy]`` in pyproject.toml (the whole tree, strict)
and keeps its cache in ``.mypy_cache``: a second run takes about a second.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

CHECKS = {
    "ruff check": ["-m", "ruff", "check", "."],
    "ruff format --check": ["-m", "ruff", "format", "--check", "."],
    "mypy": ["-m", "mypy"],
}


@pytest.mark.parametrize("name", CHECKS)
def test_the_code_passes(name):
    done = subprocess.run(
        [sys.executable, *CHECKS[name]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"{name} found problems:\n{done.stdout}{done.stderr}", pytrace=False)
