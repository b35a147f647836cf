"""The command line from a test: in this process (``invoke``), or as a real process
(``flowyard``) where only a process shows what is tested."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.files import ROOT


def flowyard(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess and return its completed process (text mode).

    For what only a real process shows: the exit code a shell gets from ``main()``, a
    signal, a crash, a state file fault turned into exit 4, a whole story as cron runs it."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("FLOWYARD_STATE", None) if env is None or "FLOWYARD_STATE" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)],
        cwd=cwd or ROOT,
        env={**full_env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class CliResult:
    """What an in-process CLI run gave: the names of subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def invoke(
    *args: str, cwd: Path | None = None, env: dict | None = None, input: str | None = None
) -> CliResult:
    """Run the CLI in this process: typer's CliRunner against ``cli.app``, in ``cwd``.

    For arguments, help and what a command prints: no interpreter start per call (a
    subprocess costs ~0.75 s). An exception the command does not handle is raised here,
    with its traceback, as a failed test; what ``main()`` makes of one is for
    :func:`flowyard`."""
    from typer.testing import CliRunner

    import cli as cli_module

    environment = {"FLOWYARD_STATE": None, **(env or {})}  # as flowyard(): no outside state
    here = Path.cwd()
    os.chdir(cwd or ROOT)
    try:
        result = CliRunner().invoke(
            cli_module.app,
            [str(a) for a in args],
            env=environment,
            input=input,
            catch_exceptions=False,
        )
    finally:
        os.chdir(here)
    return CliResult(result.exit_code, result.stdout, result.stderr)
