"""A lane process sends a record's result back to the run only once the outcome of its
send is committed (engine/lane_processes.py), and the run commits its groups without
waiting for the lane processes. So a lane process killed at any moment must never leave
the state calling a record done (its trace, the cursor past it) while its send's key is
not: a later run would skip the record as done, with its key in flight or unknown.

Each run is the real CLI against a target in its own process; a lane process is SIGKILLed
while sends are in flight, with every record committed at once by the run and each lane's
next in-flight mark a rate lookup away (sending results back before their outcomes are
committed fails this within a few kills); the state is checked after each kill, and after
the last run every record was applied once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_flow
from tests.support.target import RemoteTarget, read_applied, spawn_target, stop_target
from tests.test_crash import (
    LATENCY_MS,
    RECORDS,
    applied_count,
    lane_processes,
    lane_processes_expected,
    make_orders,
)

KILLS = 6

# each record looks a rate up before its send: a lane's next mark (which would commit the
# outcome of its last send) comes a lookup later, while the run commits every record at once
FLOW = """
flow: settle
concurrency: 4
group: {records: 1, seconds: 0.01}
connections:
  shop: {connector: sqlite, path: shop.db}
  erp:
    connector: http
    base_url: "{{ vars.url }}"
    timeout: 5
    retry: {attempts: 8, backoff: 0.05, max_backoff: 0.2}
source: {connection: shop, table: orders, cursor: id}
steps:
  - name: rate
    enrich: {connection: erp, method: GET, path: /rates, save_as: rate}
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{ record.id }}"
      body: {id: "{{ record.id }}", total: "{{ record.total }}", rate: "{{ record.rate.eur }}"}
"""


def check_state(state: Path) -> tuple[int, int]:
    """Every record the state holds done has its key done, and so has every record the
    cursor passed; returns how many records are done, and where the cursor is."""
    with closing(sqlite3.connect(state, timeout=5)) as db:
        traced = {
            int(k) for (k,) in db.execute("SELECT record_key FROM traces WHERE outcome = 'done'")
        }
        keys = {
            int(k.split(":", 1)[1])
            for (k,) in db.execute("SELECT key FROM keys WHERE state = 'done'")
        }
        row = db.execute("SELECT position FROM cursors").fetchone()
    cursor = int(json.loads(row[0])) if row else 0
    assert traced <= keys, sorted(traced - keys)
    assert set(range(1, cursor + 1)) <= keys, sorted(set(range(1, cursor + 1)) - keys)
    return len(traced), cursor


@pytest.mark.slow  # six runs, each with a lane process killed: ~10 s
def test_a_lane_process_killed_never_leaves_a_record_done_whose_key_is_not(tmp_path):
    if not lane_processes_expected():
        pytest.skip("lane processes need Linux and two cores")
    target_dir = tmp_path / "target"
    proc, url = spawn_target(target_dir, latency_ms=LATENCY_MS)
    RemoteTarget(url).set_get("/rates", {"eur": "1.08"})
    rng = random.Random(7)
    make_orders(tmp_path)
    flow = write_flow(tmp_path, FLOW)
    state = tmp_path / "state.db"
    command = [sys.executable, "-m", "cli", "run", str(flow), "--state", str(state)]
    command += ["--var", f"url={url}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    committed_while_sending = 0
    try:
        for kill in range(KILLS + 1):
            run = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
            )
            if kill == KILLS:
                out, _ = run.communicate(timeout=120)
                assert run.returncode == 0, out
                break
            before = applied_count(target_dir)
            deadline = time.monotonic() + 20
            while applied_count(target_dir) < before + rng.randint(10, 40):
                assert run.poll() is None and time.monotonic() < deadline, run.poll()
                time.sleep(0.001)
            lanes = lane_processes(run.pid)
            assert lanes, "the run has no lane processes"
            os.kill(rng.choice(lanes), signal.SIGKILL)
            out, _ = run.communicate(timeout=60)
            assert run.returncode == 3, out
            done, _ = check_state(state)
            committed_while_sending += done > 0
    finally:
        stop_target(proc)
    assert committed_while_sending >= KILLS // 2  # the runs committed groups before the kills
    check_state(state)
    applied = Counter(int(a["body"]["id"]) for a in read_applied(target_dir))
    assert sorted(applied) == list(range(1, RECORDS + 1))  # every record
    assert set(applied.values()) == {1}  # none twice: repeated with the same key
