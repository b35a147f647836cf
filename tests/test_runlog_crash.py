"""A run killed with SIGKILL keeps its run log up to the records its state committed: the
log is handed to the system with every progress commit (and when the run starts)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

from tests.conftest import ROOT, write_flow, write_ndjson


def test_the_run_log_survives_a_kill_up_to_the_last_committed_record(tmp_path, target):
    target.configure(latency_ms=15)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(400)])
    flow = write_flow(
        tmp_path,
        """
        flow: killed
        connections:
          erp: {connector: http, base_url: "{{ vars.url }}"}
        source: {connector: file, path: orders.ndjson}
        steps:
          - send: {connection: erp, path: /orders, body: "{{ record }}"}
        """,
    )
    state = tmp_path / "state.db"
    run = subprocess.Popen(
        [sys.executable, "-m", "cli", "run", str(flow), "--state", str(state)]
        + ["--var", f"url={target.url}"],
        cwd=tmp_path,
        # at the debug level, every record has its line (by default, only those that need
        # a person do: docs/cli.md)
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "FLOWYARD_LOG_LEVEL": "debug"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    committed = 0
    deadline = time.monotonic() + 30
    try:
        while committed == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            if state.exists():
                try:
                    with closing(sqlite3.connect(state, timeout=1)) as conn:
                        committed = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
                except sqlite3.OperationalError:
                    pass  # the tables are not there yet
        time.sleep(0.3)  # well inside the next group
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert committed, "the run committed nothing within 30 s"
    with closing(sqlite3.connect(state)) as conn:
        traced = {r[0] for r in conn.execute("SELECT record_key FROM traces")}
    [log] = list((tmp_path / "runs").glob("*.jsonl"))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["event"] == "run_started"
    logged = {e["record_key"] for e in lines if e["event"] == "record"}
    assert traced <= logged, sorted(traced - logged)[:5]
    assert len(traced) < 400  # it was killed mid-run
