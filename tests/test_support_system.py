"""tests/support/system.py: a program a test needs is found on PATH or in the folders a
test names, and a test that cannot have it is skipped with the command that installs it.

(Installing is not exercised here: it changes the machine. It runs where a test asks for
a missing program as root with apt-get, as the browser test does on a clean CI machine.)
"""

from __future__ import annotations

import stat

import pytest

from tests.support.system import find_program, program


def _executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_program_on_path_is_found_and_nothing_is_installed(tmp_path, monkeypatch):
    tool = _executable(tmp_path / "bin" / "report-viewer")
    monkeypatch.setenv("PATH", str(tool.parent))
    assert program("browser-x", "report-viewer", package="never-installed") == str(tool)


def test_folders_to_search_are_tried_newest_version_first(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for version in ("9", "16", "15"):
        _executable(tmp_path / "pg" / version / "bin" / "pg_ctl")
    found = find_program(["pg_ctl"], search=[str(tmp_path / "pg" / "*" / "bin")])
    assert found == str(tmp_path / "pg" / "16" / "bin" / "pg_ctl")
    assert find_program(["initdb"], search=[str(tmp_path / "pg" / "*" / "bin")]) is None


def test_a_missing_program_that_cannot_be_installed_skips_with_the_command(tmp_path, monkeypatch):
    # no apt-get on this PATH: nothing may be installed, whoever runs the test
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("CI", "true")  # a skip, not a failure: nothing was tried
    with pytest.raises(pytest.skip.Exception) as skipped:
        program("chromium", "chromium-browser", package="chromium")
    assert str(skipped.value) == (
        "chromium is not installed (apt-get install -y chromium as root installs it)"
    )
