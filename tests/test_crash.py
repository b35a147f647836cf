"""kill -9 at random moments, then run again, as cron would: nothing is lost and nothing is
applied twice by a target that honours Idempotency-Key; a target that ignores it applies at
most the requests in flight at each kill twice.

Each scenario starts ``flowyard run`` (the real CLI) against a target in its own process,
which applies each request and fsyncs its log before it answers, and SIGKILLs the CLI at
seeded random moments (most while sends are in flight, some at any moment from start) at
least ``KILLS`` times in a row, re-running it each time, until a run completes. Then it
reads what the target applied.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_flow, write_ndjson
from tests.support.target import APPLIED_FILE, read_applied, spawn_target, stop_target

KILLS = 20
RECORDS = 500  # enough for KILLS kills even when each run starts fast (bytecode cached)
CONCURRENCY = 4
LATENCY_MS = 20

FLOW = """
flow: crash_{source}
concurrency: {concurrency}
connections:
  shop: {{connector: sqlite, path: shop.db}}
  erp:
    connector: http
    base_url: "{{{{ vars.url }}}}"
    timeout: 5
    retry: {{attempts: 8, backoff: 0.05, max_backoff: 0.2}}
source: {source_spec}
steps:
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{{{ record.id }}}}"
      body: {{id: "{{{{ record.id }}}}", total: "{{{{ record.total }}}}"}}
"""

SOURCES = {
    # read whole on every run: the idempotency keys alone keep records from going twice
    "file": "{connector: file, path: orders.ndjson}",
    # read from the cursor on: the cursor must never pass a record that is not final
    "sqlite": "{connection: shop, table: orders, cursor: id}",
}


@dataclass
class Crashes:
    """What happened over the kills: how many, how many runs, and when each kill came."""

    kills: int = 0
    runs: int = 0
    in_flight_kills: int = 0  # kills that came while the target was applying this run's sends
    codes: list[int] = field(default_factory=list)


def make_flow(directory: Path, source: str) -> Path:
    orders = [{"id": i, "total": f"{i}.95"} for i in range(1, RECORDS + 1)]
    write_ndjson(directory / "orders.ndjson", orders)
    db = sqlite3.connect(directory / "shop.db")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT)")
    db.executemany("INSERT INTO orders VALUES (:id, :total)", orders)
    db.commit()
    db.close()
    text = FLOW.format(source=source, concurrency=CONCURRENCY, source_spec=SOURCES[source])
    return write_flow(directory, text)


def applied_count(target_dir: Path) -> int:
    try:
        with open(target_dir / APPLIED_FILE, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def crash_until_done(flow: Path, state: Path, url: str, target_dir: Path, seed: int) -> Crashes:
    """Run the flow, SIGKILL it at random moments KILLS times, then let a run finish."""
    rng = random.Random(seed)
    crashes = Crashes()
    command = [sys.executable, "-m", "cli", "run", str(flow), "--state", str(state)]
    command += ["--var", f"url={url}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWYARD_LEASE_TTL": "60"}
    while True:
        assert crashes.runs < 3 * KILLS, f"the records ran out before the kills did: {crashes}"
        before = applied_count(target_dir)
        proc = subprocess.Popen(
            command, cwd=flow.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        crashes.runs += 1
        if crashes.kills < KILLS:
            if crashes.kills % 3 == 2:  # any moment: starting, reading, sending, committing
                deadline = time.monotonic() + rng.uniform(0.05, 0.8)
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.002)
            else:  # while sends are in flight: after the target applied 1 to 3 of this run's
                wanted = before + rng.randint(1, 3)
                deadline = time.monotonic() + 10
                while applied_count(target_dir) < wanted and proc.poll() is None:
                    assert time.monotonic() < deadline, "the run made no progress"
                    time.sleep(0.001)
                time.sleep(rng.uniform(0, LATENCY_MS / 1000))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                crashes.kills += 1
                crashes.in_flight_kills += applied_count(target_dir) > before
                proc.stdout.close()
                continue
        out, _ = proc.communicate(timeout=60)
        crashes.codes.append(proc.returncode)
        assert proc.returncode == 0, out.decode()
        if crashes.kills >= KILLS:
            return crashes


def crash_scenario(tmp_path: Path, source: str, **target_options) -> tuple[Crashes, Counter]:
    """Crash a flow reading ``source`` KILLS times; what the target applied, per record."""
    target_dir = tmp_path / "target"
    proc, url = spawn_target(target_dir, latency_ms=LATENCY_MS, **target_options)
    try:
        flow = make_flow(tmp_path, source)
        crashes = crash_until_done(flow, tmp_path / "state.db", url, target_dir, seed=4)
    finally:
        stop_target(proc)
    assert crashes.kills >= KILLS and crashes.in_flight_kills >= KILLS // 2, crashes
    return crashes, Counter(int(a["body"]["id"]) for a in read_applied(target_dir))


@pytest.mark.slow  # twenty kill -9 and restarts: ~11 s
def test_kill_9_at_random_moments_then_run_again_delivers_every_record_once(tmp_path):
    # a file source is read whole on every run: the idempotency keys alone keep records
    # from going twice, and the target answers a repeated key with its stored response
    crashes, applied = crash_scenario(tmp_path, "file")
    assert sorted(applied) == list(range(1, RECORDS + 1))  # every record
    assert set(applied.values()) == {1}, crashes  # none twice


@pytest.mark.slow  # twenty kill -9 and restarts: ~11 s
def test_a_target_ignoring_the_key_gets_at_most_the_requests_in_flight_at_each_kill_twice(
    tmp_path,
):
    # read from a cursor: the cursor must never pass a record that is not final
    crashes, applied = crash_scenario(tmp_path, "sqlite", ignore_idempotency_key=True)
    assert sorted(applied) == list(range(1, RECORDS + 1))  # every record, none lost
    duplicates = sum(applied.values()) - len(applied)
    # docs/semantics.md: at most the requests in flight at a kill, at most one per lane
    assert duplicates <= crashes.kills * CONCURRENCY, (duplicates, crashes)
    print(f"{duplicates} duplicates after {crashes.kills} kills, concurrency {CONCURRENCY}")
