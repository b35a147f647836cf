"""docs/first-flow.md does what it says: its commands run, in order, as a reader runs them.

The page's ``sh`` blocks are run line by line in one shell (a trailing ``# exits N`` says
the exit code the line must end with, else 0); a block after ``<!-- write: PATH -->`` is
written to PATH, one after ``<!-- append: PATH -->`` appended to it. Here flowyard is the
checkout (the two install lines are left out); tests/test_packaging.py runs the same page
against the wheel, installed in a fresh virtual environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

DOC = ROOT / "docs" / "first-flow.md"
_FENCE = re.compile(r"^```(\w*)")
_MARKER = re.compile(r"<!-- (write|append): (\S+) -->")
_EXITS = re.compile(r"\s+#\s*exits (\d+)\s*$")
INSTALL_LINES = ("python3 -m venv", "pip install flowyard")


def doc_steps(text: str) -> list[tuple[str, str, str | int]]:
    """``("run", command, exit code)``, ``("write" | "append", path, text)`` in page order."""
    steps: list[tuple[str, str, str | int]] = []
    lines = text.splitlines()
    pending = None
    i = 0
    while i < len(lines):
        marker = _MARKER.fullmatch(lines[i].strip())
        fence = _FENCE.match(lines[i])
        if marker:
            pending = marker.groups()
        elif fence:
            body = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if pending is not None:
                steps.append((pending[0], pending[1], "\n".join(body) + "\n"))
                pending = None
            elif fence.group(1) == "sh":
                for line in body:
                    if line.strip() and not line.lstrip().startswith("#"):
                        code = _EXITS.search(line)
                        command = _EXITS.sub("", line).strip()
                        steps.append(("run", command, int(code.group(1)) if code else 0))
        i += 1
    return steps


def shell_script(steps: list, replace: dict[str, str]) -> tuple[str, list[str]]:
    """One bash script running the steps; ``replace`` maps a command's start to what runs
    instead ("" leaves it out). Returns the script and each step's description."""
    out = ["set -u"]
    described = []
    for kind, what, extra in steps:
        n = len(described) + 1
        if kind == "run":
            for start, instead in replace.items():
                if what.startswith(start):
                    what = instead
            if not what:
                continue
            described.append(what)
            out.append(
                f"{{ {what} ; }} </dev/null; rc=$?; "
                f'if [ "$rc" -ne {extra} ]; then echo "step {n} exited $rc" >&2; exit 100; fi'
            )
        else:
            described.append(f"{kind} {what}")
            redirect = ">" if kind == "write" else ">>"
            out.append(f"cat {redirect} '{what}' <<'FLOWYARD_DOC_EOF'\n{extra}FLOWYARD_DOC_EOF")
    return "\n".join(out) + "\n", described


def run_doc(workdir: Path, env: dict[str, str], replace: dict[str, str]):
    script, described = shell_script(doc_steps(DOC.read_text()), replace)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    failed = re.search(r"step (\d+) exited (\d+)", done.stderr)
    where = f"; step: {described[int(failed.group(1)) - 1]}" if failed else ""
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}{where}"
    return done


def test_the_page_has_commands_files_and_an_expected_failure():
    steps = doc_steps(DOC.read_text())
    commands = [what for kind, what, _ in steps if kind == "run"]
    assert commands[:4] == [
        "python3 -m venv .venv && . .venv/bin/activate",
        "pip install flowyard",
        "flowyard init shop-sync",
        "cd shop-sync",
    ]
    assert ("run", "flowyard test", 1) in steps
    assert [kind for kind, _, _ in steps if kind != "run"] == ["write", "append"]


def test_every_command_of_the_page_works_from_a_checkout(tmp_path):
    shim = tmp_path / "bin" / "flowyard"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cli "$@"\n')
    shim.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLOWYARD_")},
        "PATH": f"{shim.parent}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
    }
    work = tmp_path / "work"
    work.mkdir()
    done = run_doc(work, env, {start: "" for start in INSTALL_LINES})
    project = work / "shop-sync"
    assert "title: Logo Tee - Black / M" in (project / "flow.test.yaml").read_text()
    assert (project / "out" / "shipments.ndjson").is_file()
    assert "4 passed" in done.stdout or "1 passed" in done.stdout
