"""The shipped examples run as their READMEs say."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.conftest import ROOT


def test_embedding_example_books_each_sale_once_and_dead_letters_the_refund(tmp_path):
    state = tmp_path / "state.db"
    app = ROOT / "examples" / "embed" / "pos_app.py"
    first = subprocess.run(
        [sys.executable, str(app), str(state)], capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 1, first.stderr
    assert "'done': 2" in first.stdout and "'filtered': 1" in first.stdout
    assert "negative amount -5.00" in first.stdout
    second = subprocess.run(
        [sys.executable, str(app), str(state)], capture_output=True, text=True, timeout=60
    )
    assert "'skipped': 2" in second.stdout and "ledger calls this run: 0" in second.stdout
    assert second.stdout.count("dead letter ") == 1


def test_cron_wrapper_reports_exit_codes(tmp_path):
    work = tmp_path / "quickstart"
    shutil.copytree(
        ROOT / "examples" / "quickstart", work, ignore=shutil.ignore_patterns("out", ".flowyard")
    )
    flow = work / "flow.yaml"
    flow.write_text(flow.read_text().replace("[../../mappings]", f"[{ROOT / 'mappings'}]"))
    launcher = tmp_path / "flowyard"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cli "$@"\n')
    launcher.chmod(0o755)
    env = {
        "FLOW": str(flow),
        "FLOWYARD_STATE": str(tmp_path / "state.db"),
        "FLOWYARD": str(launcher),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
    }
    script = ROOT / "examples" / "cron" / "orders_every_5_min.sh"
    first = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"]["done"] == 10
    (work / "orders.ndjson").write_text((work / "orders.ndjson").read_text() + "{not json\n")
    second = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert second.returncode == 1
    assert "dead-lettered" in second.stderr
