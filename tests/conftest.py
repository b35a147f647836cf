"""Shared test helpers: a flow written to disk, the CLI in a real subprocess, a live target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.target import Target

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def target(tmp_path):
    """A fault-injecting HTTP target on 127.0.0.1, stopped after the test."""
    with Target(state_dir=tmp_path / "target") as t:
        yield t


def write_flow(directory: Path, text: str, name: str = "flow.yaml") -> Path:
    """Write a flow file whose mapping search path includes the shipped mappings."""
    body = textwrap.dedent(text).strip() + "\n"
    if "mappings:" not in body:
        body += f"mappings: [{MAPPINGS}]\n"
    path = directory / name
    path.write_text(body, encoding="utf-8")
    return path


def write_ndjson(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_ndjson(path: Path) -> list:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def flowyard(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess and return its completed process (text mode)."""
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

    For arguments, help and what a command prints: no interpreter start per call. What
    only a real process shows (the exit code a shell gets from ``main()``, a signal, a
    crash, a state file fault turned into exit 4) is for :func:`flowyard`. An exception
    the command does not handle is raised here, with its traceback, as a failed test."""
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


def shop_order(n: int, **extra) -> dict:
    """A small web-shop order (not the full Shopify resource) for engine tests."""
    return {
        "id": 5_000_000_000_000_000 + n,
        "name": f"#{1000 + n}",
        "total": f"{n}.50",
        "pickup": n % 3 == 0,
        **extra,
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The code checks (tests/test_checks.py) first: a lint or type error stops ``-x`` at once."""
    items.sort(key=lambda item: item.path.name != "test_checks.py")  # stable: the rest keep order
