"""Worker processes sharing a flow's work through one PostgreSQL state: every record applied
once at a target that honours ``Idempotency-Key`` while workers are SIGKILLed at random
moments and restarted, one key's records in order across workers, a file state refused.

Each test starts real ``flowyard worker`` processes (the CLI in subprocesses) against a
PostgreSQL server the tests start (tests/support/postgres.py) and a target in its own
process that fsyncs each request it applies before it answers (tests/support/target.py).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, invoke, write_flow
from tests.support.target import APPLIED_FILE, read_applied, spawn_target, stop_target

FLOW = """
flow: orders_shared
concurrency: {concurrency}
connections:
  shop: {{connector: sqlite, path: shop.db}}
  erp:
    connector: http
    base_url: "{{{{ vars.url }}}}"
    timeout: 5
    retry: {{attempts: 8, backoff: 0.05, max_backoff: 0.2}}
source: {{connection: shop, table: orders, cursor: id}}
steps:
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{{{ record.id }}}}"
      body: {{id: "{{{{ record.id }}}}", total: "{{{{ record.total }}}}"}}
"""


def make_shop(directory: Path, records: int) -> None:
    db = sqlite3.connect(directory / "shop.db")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT)")
    db.executemany(
        "INSERT INTO orders VALUES (?, ?)", [(i, f"{i}.95") for i in range(1, records + 1)]
    )
    db.commit()
    db.close()


def applied_count(target_dir: Path) -> int:
    try:
        with open(target_dir / APPLIED_FILE, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


class Workers:
    """``flowyard worker`` processes of one flow, started, killed and waited for."""

    def __init__(self, flow: Path, dsn: str, url: str, ttl: float = 2.0):
        self.flow, self.dsn, self.url = flow, dsn, url
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWYARD_LEASE_TTL": str(ttl)}
        self.env.pop("FLOWYARD_STATE", None)
        self.live: list[subprocess.Popen[bytes]] = []
        self.done: list[tuple[int, bytes]] = []
        self.killed = 0

    def start(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "cli", "worker", str(self.flow), "--state", self.dsn]
        command += ["--var", f"url={self.url}", "--until-empty", "--poll", "0.2"]
        proc = subprocess.Popen(
            command,
            cwd=self.flow.parent,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.live.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        self.live.remove(proc)
        self.killed += 1

    def reap(self) -> None:
        for proc in [p for p in self.live if p.poll() is not None]:
            self.done.append((proc.returncode, proc.stdout.read()))
            proc.stdout.close()
            self.live.remove(proc)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.live:
            self.reap()
            if time.monotonic() > deadline:
                for proc in list(self.live):
                    self.kill(proc)
                raise AssertionError(f"workers still running after {timeout} s: {self.done}")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for proc in list(self.live):
            self.kill(proc)


def crash_workers(
    tmp_path: Path, dsn: str, *, records: int, workers: int, kills: int, seed: int, timeout: float
) -> tuple[Counter[int], Workers]:
    """Run ``workers`` workers over ``records`` orders, SIGKILL one at a seeded random moment
    ``kills`` times (each replaced at once by a new one), then let them drain the queue;
    returns what the target applied, per order, and the workers."""
    target_dir = tmp_path / "target"
    proc, url = spawn_target(target_dir, latency_ms=2)
    rng = random.Random(seed)
    make_shop(tmp_path, records)
    flow = write_flow(tmp_path, FLOW.format(concurrency=2))
    crew = Workers(flow, dsn, url)
    try:
        for _ in range(workers):
            crew.start()
        # kill at moments spread over the run: after a seeded share of the records arrived
        marks = sorted(rng.uniform(0.03, 0.9) * records for _ in range(kills))
        deadline = time.monotonic() + timeout
        for mark in marks:
            while applied_count(target_dir) < mark:
                assert time.monotonic() < deadline, "the workers made no progress"
                crew.reap()
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))  # at any moment: claiming, sending, committing
            crew.reap()
            if crew.live:
                crew.kill(rng.choice(crew.live))
                crew.start()
        crew.wait(max(1.0, deadline - time.monotonic()))
    finally:
        crew.stop_all()
        stop_target(proc)
    return Counter(int(a["body"]["id"]) for a in read_applied(target_dir)), crew


def check_state_after(dsn: str, killed: int) -> None:
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM flowyard.work").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM flowyard.workers").fetchone() == (0,)
        statuses = Counter(
            s for (s,) in conn.execute("SELECT status FROM flowyard.runs WHERE kind = 'worker'")
        )
    # every killed worker's run was found gone and marked crashed by the others
    assert statuses["crashed"] == killed and statuses["running"] == 0, statuses


def test_workers_killed_at_random_moments_leave_no_record_missing_and_none_applied_twice(
    tmp_path, postgres_state
):
    applied, crew = crash_workers(
        tmp_path, postgres_state, records=600, workers=2, kills=3, seed=7, timeout=120
    )
    assert sorted(applied) == list(range(1, 601))  # none missing
    assert set(applied.values()) == {1}  # none twice
    assert crew.killed == 3 and all(code == 0 for code, _ in crew.done), crew.done
    check_state_after(postgres_state, crew.killed)


@pytest.mark.slow  # four workers, 20,000 records, ten kills: ~2.7 min on 2 busy cores
def test_four_workers_share_twenty_thousand_records_through_ten_kills(tmp_path, postgres_state):
    applied, crew = crash_workers(
        tmp_path, postgres_state, records=20_000, workers=4, kills=10, seed=17, timeout=600
    )
    assert sorted(applied) == list(range(1, 20_001))  # none missing
    assert set(applied.values()) == {1}  # none twice
    assert crew.killed == 10 and all(code == 0 for code, _ in crew.done), crew.done
    check_state_after(postgres_state, crew.killed)


STOCK_FLOW = """
flow: stock_shared
concurrency: 2
connections:
  shop: {connector: sqlite, path: shop.db}
  erp: {connector: http, base_url: "{{ vars.url }}", retry: {attempts: 5, backoff: 0.02}}
source: {connection: shop, table: levels, cursor: n, key: "{{ record.sku }}"}
steps:
  - name: set_level
    send:
      connection: erp
      method: PUT
      path: "/stock/{{ record.sku }}"
      idempotency_key: "stock:{{ record.sku }}"
      on_change: update
      body: {sku: "{{ record.sku }}", level: "{{ record.level }}", n: "{{ record.n }}"}
"""


def test_one_keys_records_are_applied_in_source_order_across_workers(tmp_path, postgres_state):
    # each SKU's stock level is set five times, the updates interleaved with other SKUs'
    levels = [(n, f"SKU-{n % 40}", n) for n in range(1, 201)]
    db = sqlite3.connect(tmp_path / "shop.db")
    db.execute("CREATE TABLE levels (n INTEGER PRIMARY KEY, sku TEXT, level INTEGER)")
    db.executemany("INSERT INTO levels VALUES (?, ?, ?)", levels)
    db.commit()
    db.close()
    flow = write_flow(tmp_path, STOCK_FLOW)
    proc, url = spawn_target(tmp_path / "target", latency_ms=3)
    crew = Workers(flow, postgres_state, url)
    try:
        for _ in range(3):
            crew.start()
        crew.wait(90)
    finally:
        crew.stop_all()
        stop_target(proc)
    assert all(code == 0 for code, _ in crew.done), crew.done
    by_sku: dict[str, list[int]] = defaultdict(list)
    for a in read_applied(tmp_path / "target"):
        by_sku[a["body"]["sku"]].append(int(a["body"]["n"]))
    assert len(by_sku) == 40
    for sku, seen in by_sku.items():
        assert seen == sorted(seen) and len(seen) == 5, (sku, seen)  # in order, each once


def test_a_worker_needs_a_shared_state(tmp_path):
    flow = write_flow(tmp_path, FLOW.format(concurrency=1))
    done = invoke("worker", flow, "--state", tmp_path / "state.db", "--var", "url=http://x")
    assert done.returncode == 2
    assert "workers share a flow's work through a PostgreSQL state" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.yaml"]  # nothing made
