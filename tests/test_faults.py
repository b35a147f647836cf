"""Fault injection against a real HTTP target: circuit breakers open and close without
burning records into the dead-letter queue, rate limits hold across concurrent sends, a
429 slows the whole connection, ``on_error: stop`` stops, and the exit codes mean what
the docs say."""

from __future__ import annotations

import json
import sqlite3

import pytest

from engine import Engine
from tests.conftest import flowyard, write_flow, write_ndjson

FLOW = """
flow: orders_sync
concurrency: {concurrency}
connections:
  shop: {{connector: sqlite, path: shop.db}}
  erp:
    connector: http
    base_url: "{{{{ vars.url }}}}"
    timeout: 2
    retry: {{attempts: {attempts}, backoff: 0.01, max_backoff: 0.02}}
{extra}
source: {{connection: shop, table: orders, cursor: id}}
steps:
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{{{ record.id }}}}"
      body: "{{{{ record }}}}"
"""


def shop_flow(directory, n=10, concurrency=1, attempts=5, erp="", top=""):
    """A flow from a SQLite table read by cursor to the target; ``erp`` adds connection keys."""
    extra = "\n".join(f"    {line}" for line in erp.strip().splitlines())
    flow = write_flow(
        directory,
        top + FLOW.format(concurrency=concurrency, attempts=attempts, extra=extra),
    )
    db = sqlite3.connect(directory / "shop.db")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT)")
    db.executemany("INSERT INTO orders VALUES (?, ?)", [(i, f"{i}.50") for i in range(1, n + 1)])
    db.commit()
    db.close()
    return flow


@pytest.fixture(params=["threads", "processes"])
def lanes(request, monkeypatch):
    """Lanes as threads, then in two worker processes: the connection's breaker, rate
    limit and Retry-After pause must hold across them either way."""
    monkeypatch.setenv("FLOWYARD_LANE_PROCESSES", "0" if request.param == "threads" else "2")
    return request.param


def applied_ids(target):
    return sorted(a["body"]["id"] for a in target.applied)


def state_of(eng):
    store = eng.store()
    try:
        cursor = store.cursor("orders_sync")
        return (cursor.position if cursor else None), store.dead_letters()
    finally:
        store.close()


# -- circuit breaker ---------------------------------------------------------------------------
@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_open_circuit_parks_records_for_the_next_run_instead_of_dead_lettering_them(
    tmp_path, target, concurrency, lanes
):
    flow = shop_flow(
        tmp_path,
        concurrency=concurrency,
        erp="circuit_breaker: {failures: 3, cooldown: 30}",
    )
    eng = Engine(state=tmp_path / "state.db")
    target.script([{"delay": 0}, {"delay": 0}, {"status": 503, "times": 100}])  # then down
    first = eng.run(flow, vars={"url": target.url})
    assert first.exit_code == 3 and first.status == "stopped"
    assert "circuit breaker open after 3 consecutive transient failures" in first.message
    assert first.counts["dead_lettered"] == 0 and first.counts["parked"] >= 1
    cursor, letters = state_of(eng)
    assert letters == []
    # the cursor stays before the first parked record: after the records done before it
    done = set(applied_ids(target))
    prefix = next(i for i in range(1, 12) if i not in done) - 1
    assert (cursor or 0) == prefix and (concurrency > 1 or prefix == 2)
    failed = [r for r in target.requests if r["outcome"] == "status_503"]
    # the records were not burned through their 5 attempts: 3 failures in a row opened the
    # circuit. With lanes, the 2 successes may come between the first failures, and calls
    # already under way when it opened still land.
    assert len(failed) <= (3 if concurrency == 1 else 3 + 2 + (concurrency - 1))

    target.clear_script()  # the target is back
    second = eng.run(flow, vars={"url": target.url})
    assert second.exit_code == 0 and second.counts["dead_lettered"] == 0
    assert applied_ids(target) == list(range(1, 11))  # every record, each once
    assert state_of(eng) == (10, [])


def test_an_open_circuit_exits_3_from_the_cli_with_a_clear_message(tmp_path, target):
    flow = shop_flow(tmp_path, erp="circuit_breaker: {failures: 2, cooldown: 30}")
    target.script([{"status": 503, "times": 100}])
    result = flowyard(
        "run", flow, "--state", tmp_path / "state.db", "--var", f"url={target.url}", cwd=tmp_path
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "circuit breaker open" in result.stdout and "parked 1" in result.stdout


def test_with_on_open_wait_the_run_waits_for_the_target_and_probes_once_per_cool_down(
    tmp_path, target
):
    # 2 attempts per record: without the wait the first record would be dead-lettered
    flow = shop_flow(
        tmp_path,
        n=5,
        attempts=2,
        erp="circuit_breaker: {failures: 2, cooldown: 0.3, on_open: wait}",
    )
    target.script([{"status": 503, "times": 4}])
    result = Engine(state=tmp_path / "state.db").run(flow, vars={"url": target.url})
    assert result.exit_code == 0 and result.counts["done"] == 5, result
    assert applied_ids(target) == [1, 2, 3, 4, 5]
    times = [r["time"] for r in target.requests]
    # two failures opened it; each later request (a probe, failed twice, then the one
    # that closed it) came a cool-down after the one before
    assert [round(b - a, 1) >= 0.3 for a, b in zip(times[1:4], times[2:5], strict=True)] == [
        True
    ] * 3
    assert times[5] - times[4] < 0.3  # closed again: the rest went at once


def test_with_on_open_wait_concurrent_lanes_wait_and_nothing_is_lost(tmp_path, target, lanes):
    flow = shop_flow(
        tmp_path,
        n=20,
        concurrency=4,
        attempts=2,
        erp="circuit_breaker: {failures: 2, cooldown: 0.2, on_open: wait}",
    )
    target.script([{"status": 503, "times": 8}])
    result = Engine(state=tmp_path / "state.db").run(flow, vars={"url": target.url})
    assert result.exit_code == 0 and result.counts["done"] == 20, result
    assert applied_ids(target) == list(range(1, 21))


# -- rate limits -------------------------------------------------------------------------------
def test_a_rate_limit_holds_across_concurrent_sends(tmp_path, target, lanes):
    flow = shop_flow(tmp_path, n=30, concurrency=8, erp="rate_limit: 20/s")
    target.configure(latency_ms=5)
    result = Engine(state=tmp_path / "state.db").run(flow, vars={"url": target.url})
    assert result.counts["done"] == 30
    times = sorted(r["time"] for r in target.requests)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 20, busiest  # at most the limit in any second at the target
    assert result.duration_s >= 29 / 20 - 0.1


def test_a_429_with_retry_after_pauses_every_send_on_the_connection(tmp_path, target, lanes):
    flow = shop_flow(tmp_path, n=20, concurrency=4)
    target.configure(latency_ms=10)
    target.script([{"delay": 0}, {"delay": 0}, {"status": 429, "retry_after": 1}])
    result = Engine(state=tmp_path / "state.db").run(flow, vars={"url": target.url})
    assert result.counts["done"] == 20 and applied_ids(target) == list(range(1, 21))
    requests = target.requests
    [limited] = [r["time"] for r in requests if r["outcome"] == "status_429"]
    # sends already under way may land just after it; none starts while paused
    during = [r["time"] - limited for r in requests if 0.1 < r["time"] - limited < 0.9]
    assert during == []
    assert any(r["time"] - limited >= 0.9 for r in requests)


# -- on_error: stop ----------------------------------------------------------------------------
@pytest.mark.parametrize("concurrency", [1, 4])
def test_on_error_stop_ends_the_run_at_the_first_failure_and_the_next_run_goes_on(
    tmp_path, target, concurrency, lanes
):
    flow = shop_flow(tmp_path, n=12, concurrency=concurrency, top="on_error: stop\n")
    target.configure(latency_ms=5)
    target.script([{"delay": 0}, {"status": 400, "body": {"error": "unknown customer"}}])
    eng = Engine(state=tmp_path / "state.db")
    first = eng.run(flow, vars={"url": target.url})
    assert first.exit_code == 1 and first.status == "stopped"
    assert "on_error: stop" in first.message
    assert first.counts["dead_lettered"] == 1
    assert first.counts["read"] < 12  # it stopped taking records
    cursor, [letter] = state_of(eng)
    assert "unknown customer" in letter.message
    if concurrency == 1:  # the refused record is final: the cursor passed it
        assert (cursor, letter.record_key) == (2, "2")

    second = eng.run(flow, vars={"url": target.url})
    assert second.exit_code == 0
    cursor, letters = state_of(eng)
    parked = [int(d.record_key) for d in letters]
    # every record arrived once or waits in the dead-letter queue, never both. With lanes,
    # records before the refused one may not have been taken before the stop: the next run
    # read it again, the target took it this time, and its dead letter was closed
    assert sorted(applied_ids(target) + parked) == list(range(1, 13))
    assert cursor == 12 and (concurrency > 1 or parked == [2])


# -- exit codes ----------------------------------------------------------------------------------
def test_exit_codes_for_an_unreadable_source_and_a_missing_environment_variable(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: files
        connections:
          out: {connector: file}
        source: {connector: file, path: missing.ndjson}
        steps:
          - name: out
            send: {connection: out, path: out.ndjson, record: "{{ record }}"}
        """,
    )
    unreadable = flowyard("run", flow, "--state", tmp_path / "s.db", cwd=tmp_path)
    assert unreadable.returncode == 3
    assert "could not be read" in unreadable.stdout and "missing.ndjson" in unreadable.stdout

    write_ndjson(tmp_path / "missing.ndjson", [{"id": 1}])
    flow.write_text(
        flow.read_text().replace(
            "{connector: file}", '{connector: file, base_dir: "${env:OUT_DIR}"}'
        )
    )
    result = flowyard(
        "run",
        flow,
        "--state",
        tmp_path / "s.db",
        "--output",
        "json",
        cwd=tmp_path,
        env={"OUT_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["done"] == 1
    missing = flowyard("run", flow, "--state", tmp_path / "s.db", cwd=tmp_path)
    assert missing.returncode == 2 and "OUT_DIR" in missing.stdout + missing.stderr
    assert "Traceback" not in missing.stdout + missing.stderr


def test_a_source_that_cannot_be_reached_exits_3(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: pull
        connections:
          shop: {connector: http, base_url: "http://127.0.0.1:9", timeout: 1}
          out: {connector: file}
        source: {connection: shop, path: /orders}
        steps:
          - name: out
            send: {connection: out, path: out.ndjson, record: "{{ record }}"}
        """,
    )
    result = Engine(state=tmp_path / "s.db").run(flow)
    assert (result.exit_code, result.status) == (3, "failed")
    assert "source 'shop' could not be read" in result.message


def test_a_dead_lettered_record_that_a_later_run_delivers_is_no_longer_open(tmp_path, target):
    flow = shop_flow(tmp_path, n=3)
    flow.write_text(
        flow.read_text().replace(
            "{connection: shop, table: orders, cursor: id}", "{connection: shop, table: orders}"
        )
    )  # no cursor: every run reads every row, like a file source
    target.script([{"delay": 0}, {"status": 400, "body": {"error": "customer on hold"}}])
    eng = Engine(state=tmp_path / "state.db")
    first = eng.run(flow, vars={"url": target.url})
    assert first.exit_code == 1 and [d.record_key for d in state_of(eng)[1]] == ["2"]
    # the hold was lifted: the refused request is sent again, and its dead letter closed
    second = eng.run(flow, vars={"url": target.url})
    assert (second.counts["done"], second.counts["skipped"]) == (1, 2)
    assert applied_ids(target) == [1, 2, 3] and state_of(eng)[1] == []
    store = eng.store()
    [letter] = store.dead_letters(status=None)
    store.close()
    assert (letter.status, letter.replay_run) == ("resolved", second.run_id)
