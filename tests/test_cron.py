"""cron safety: one run per flow at a time through a lease that expires when its holder
dies, ``--wait-lock``, a run that lost its lease stops, and retention keeps the state
file bounded over many runs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from engine import Engine, LockHeld
from tests.conftest import ROOT, flowyard, write_flow, write_ndjson

FLOW = """
flow: orders_every_minute
connections:
  erp: {connector: http, base_url: "{{ vars.url }}", timeout: 5}
source: {connector: file, path: orders.ndjson}
steps:
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{ record.id }}"
      body: "{{ record }}"
"""


def setup(tmp_path, n=20):
    flow = write_flow(tmp_path, FLOW)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(1, n + 1)])
    return flow, tmp_path / "state.db"


def start_cli(flow, state, target, *extra, env=None):
    """``flowyard run`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "run", str(flow), "--state", str(state)]
        + ["--var", f"url={target.url}", "--output", "json", *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_requests(target, n=1, timeout=20):
    deadline = time.monotonic() + timeout
    while len(target.requests) < n:
        assert time.monotonic() < deadline, "the run sent nothing"
        time.sleep(0.01)


def applied_ids(target):
    return sorted(a["body"]["id"] for a in target.applied)


def test_an_overlapping_run_exits_3_at_once_naming_the_holder(tmp_path, target):
    flow, state = setup(tmp_path)
    target.script([{"delay": 30}])  # the first run's first send takes long
    first = start_cli(flow, state, target)
    try:
        wait_for_requests(target)
        second = flowyard("run", flow, "--state", state, "--var", f"url={target.url}", cwd=tmp_path)
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"is being run by {os.uname().nodename}:{first.pid}:" in second.stderr
        assert f"pid {first.pid}" in second.stderr and "lease expires in" in second.stderr
        assert first.poll() is None  # at once: it did not wait for the first run to end
    finally:
        first.kill()
        first.communicate()
    # the refused run left nothing behind: no run, no run log
    store = Engine(state=state).store()
    assert len(store.list_runs()) == 1
    store.close()
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_wait_lock_waits_for_the_running_one_to_finish(tmp_path, target):
    flow, state = setup(tmp_path)
    target.configure(latency_ms=50)  # about 1 s
    first = start_cli(flow, state, target)
    try:
        wait_for_requests(target)
        second = flowyard(
            "run",
            flow,
            "--state",
            state,
            "--var",
            f"url={target.url}",
            "--wait-lock",
            "30",
            "--output",
            "json",
            cwd=tmp_path,
        )
    finally:
        first.communicate(timeout=30)
    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    # it ran after the first one: every send a duplicate
    assert json.loads(second.stdout)["counts"]["skipped"] == 20
    assert applied_ids(target) == list(range(1, 21))
    store = Engine(state=state).store()
    second_run, first_run = store.list_runs()
    store.close()
    assert second_run.started_at >= first_run.ended_at


def kill_holder_mid_run(flow, state, target, ttl):
    holder = start_cli(flow, state, target, env={"FLOWYARD_LEASE_TTL": str(ttl)})
    wait_for_requests(target, 5)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=10)
    return holder.pid, time.time()


def finish_after_kill(eng, flow, target, **kw):
    result = eng.run(flow, vars={"url": target.url}, **kw)
    assert result.exit_code == 0, result
    assert applied_ids(target) == list(range(1, 21))  # each once
    store = eng.store()
    runs = store.list_runs()
    store.close()
    assert [r.status for r in runs] == ["ok", "crashed"]
    return result, runs[0]


def test_a_killed_holder_on_this_host_leaves_its_lease_to_the_next_run_at_once(tmp_path, target):
    flow, state = setup(tmp_path)
    target.configure(latency_ms=50)
    pid, _ = kill_holder_mid_run(flow, state, target, ttl=60)
    # the lease has most of its minute left, but its holder's process is gone
    result, _ = finish_after_kill(Engine(state=state), flow, target)
    log = [json.loads(line) for line in open(result.log_path, encoding="utf-8")]
    [taken] = [e for e in log if e["event"] == "lease_taken_over"]
    assert f":{pid}:" in taken["holder"]


def test_a_killed_holder_on_another_host_blocks_until_its_lease_expires(tmp_path, target):
    flow, state = setup(tmp_path)
    target.configure(latency_ms=50)
    pid, killed = kill_holder_mid_run(flow, state, target, ttl=2)
    db = sqlite3.connect(state)  # as if it had run on another machine sharing the state
    with db:
        db.execute("UPDATE leases SET host = 'till-2', holder = 'till-2:' || pid")
    db.close()
    eng = Engine(state=state, lease_ttl=2)
    with pytest.raises(LockHeld, match=f"pid {pid} on till-2"):
        eng.run(flow, vars={"url": target.url})
    _, run = finish_after_kill(eng, flow, target, wait_lock=10)
    # the lease ran out at most its TTL after the kill (the waiting run looks twice a second)
    assert 0 < run.started_at - killed < 2 + 0.5 + 0.2


def test_a_run_that_lost_its_lease_stops_rather_than_overlap(tmp_path, target):
    flow, state = setup(tmp_path, n=30)
    target.configure(latency_ms=50)
    paused = start_cli(flow, state, target, env={"FLOWYARD_LEASE_TTL": "1"})
    try:
        wait_for_requests(target, 3)
        # freeze it (a stalled VM, a stopped container) outside a store transaction
        while True:
            paused.send_signal(signal.SIGSTOP)
            probe = sqlite3.connect(state, timeout=0.05)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                break
            except sqlite3.OperationalError:  # it holds the write lock: let it go on a bit
                paused.send_signal(signal.SIGCONT)
                time.sleep(0.01)
            finally:
                probe.close()
        time.sleep(1.5)  # its lease runs out
        other = {}
        thread = threading.Thread(
            target=lambda: other.update(
                result=Engine(state=state).run(flow, vars={"url": target.url})
            )
        )
        thread.start()
        time.sleep(0.3)  # the other run has taken the lease
        paused.send_signal(signal.SIGCONT)
        out, err = paused.communicate(timeout=30)
        thread.join(30)
    finally:
        if paused.poll() is None:
            paused.send_signal(signal.SIGCONT)
            paused.kill()
            paused.communicate()
    assert paused.returncode == 3, out + err
    resumed = json.loads(out)
    assert resumed["status"] == "failed" and "lost its lease" in resumed["message"]
    assert resumed["counts"]["read"] < 30  # it stopped early
    assert other["result"].exit_code == 0
    # the target honours Idempotency-Key: whatever both sent, each record landed once
    assert applied_ids(target) == list(range(1, 31))


# -- retention ---------------------------------------------------------------------------------
def age_state(state, seconds):
    """Move every timestamp in the state file ``seconds`` into the past."""
    db = sqlite3.connect(state)
    with db:
        db.execute(
            "UPDATE runs SET started_at = started_at - ?, ended_at = ended_at - ?",
            (seconds, seconds),
        )
        db.execute("UPDATE traces SET at = at - ?", (seconds,))
        db.execute("UPDATE keys SET updated_at = updated_at - ?", (seconds,))
        db.execute("UPDATE dead_letters SET at = at - ?", (seconds,))
    db.close()


def row_counts(state):
    db = sqlite3.connect(state)
    counts = {
        table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("runs", "traces", "keys", "dead_letters")
    }
    db.close()
    return counts


RETAINED = """
flow: shop_sync
retention: 1h
connections:
  out: {connector: file}
source: {connector: file, path: orders.ndjson}
steps:
  - filter: record.qty > 0
  - name: write
    send: {connection: out, path: out.ndjson, record: "{{ record }}"}
"""


def test_a_flow_with_retention_keeps_its_state_bounded_over_many_runs(tmp_path):
    flow = write_flow(tmp_path, RETAINED)
    other = write_flow(tmp_path, RETAINED.replace("shop_sync", "other_flow"), name="other.yaml")
    state = tmp_path / "state.db"
    eng = Engine(state=state)
    # a record that fails on its first run: its dead letter stays open through every prune
    write_ndjson(tmp_path / "orders.ndjson", [{"id": "bad"}])
    assert eng.run(flow).exit_code == 1
    eng.run(other)
    sizes = []
    for day in range(6):  # six "days" of 10 cron runs, each day with new orders
        write_ndjson(
            tmp_path / "orders.ndjson", [{"id": f"{day}-{i}", "qty": 1} for i in range(20)]
        )
        for _ in range(10):
            assert eng.run(flow).exit_code == 0
        sizes.append(row_counts(state))
        age_state(state, 24 * 3600)
    # each day's runs pruned what was more than an hour old: the state holds about a day
    assert sizes[-1] == sizes[2], sizes
    assert sizes[-1]["runs"] <= 10 + 1 + 1 and sizes[-1]["keys"] <= 20 + 1
    store = eng.store()
    # the open dead letter and the other flow's data were kept
    assert [(d.flow, d.record_key) for d in store.dead_letters()] == [
        ("shop_sync", "bad"),
        ("other_flow", "bad"),
    ]
    assert [r.flow for r in store.list_runs(limit=100)].count("other_flow") == 1
    store.close()
    assert len(list((tmp_path / "runs").iterdir())) == sizes[-1]["runs"]  # logs pruned too


def test_prune_deletes_old_runs_traces_keys_and_closed_dead_letters(tmp_path):
    flow = write_flow(tmp_path, RETAINED.replace("retention: 1h\n", ""))
    state = tmp_path / "state.db"
    eng = Engine(state=state)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": 1, "qty": 1}, {"id": 2}, {"id": 3}])
    eng.run(flow)
    store = eng.store()
    store.close_dead_letter(store.dead_letters()[0].id, "replayed", "by hand")
    store.close()
    age_state(state, 40 * 24 * 3600)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": 4, "qty": 1}])
    eng.run(flow)  # a recent run
    assert row_counts(state) == {"runs": 2, "traces": 4, "keys": 2, "dead_letters": 2}

    pruned = flowyard("prune", "--older-than", "30d", "--state", state, "--output", "json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout) == {"traces": 3, "runs": 1, "dead_letters": 1, "keys": 1}
    assert row_counts(state) == {"runs": 1, "traces": 1, "keys": 1, "dead_letters": 1}
    store = eng.store()
    assert [d.record_key for d in store.dead_letters()] == ["3"]  # open: kept
    store.close()
    bad = flowyard("prune", "--older-than", "a month", "--state", state)
    assert bad.returncode == 2
