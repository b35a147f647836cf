"""Records that need a person end in `review`, never `done`: a `review` step holds them, a
`reconcile` step holds those whose money the target did not confirm. Review items live in
the state store next to dead letters, are listed, shown and closed by a person, and close
by themselves when the same record later goes through.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from decimal import Decimal

import pytest

from engine import Engine, ReviewItem
from engine.store import SCHEMA_VERSION, SqliteStore
from tests.conftest import invoke, read_ndjson, write_flow, write_ndjson

HOLD_UNPAID = """
flow: shop_orders
connections:
  out: {connector: file}
source: {connector: file, path: orders.ndjson}
steps:
  - route:
      - when: record.financial_status != 'paid'
        steps:
          - name: not_paid
            review:
              queue: finance
              reason: "order {{ record.name }} is {{ record.financial_status }}: not charged yet"
              figures:
                total: "{{ record.total_price }}"
                financial_status: "{{ record.financial_status }}"
  - name: to_erp
    send:
      connection: out
      path: erp.ndjson
      on_change: update
      record: {order: "{{ record.name }}", total: "{{ record.total_price }}"}
"""


def order(n: int, status: str = "paid", total: str = "104.00") -> dict:
    return {
        "id": 1000 + n,
        "name": f"#{1000 + n}",
        "financial_status": status,
        "total_price": total,
    }


@pytest.fixture
def shop(tmp_path):
    flow = write_flow(tmp_path, HOLD_UNPAID)
    return flow, Engine(state=tmp_path / "state.db")


def run_file(engine, flow, records):
    write_ndjson(flow.parent / "orders.ndjson", records)
    return engine.run(flow)


def test_a_review_step_holds_the_record_for_a_person_and_the_run_exits_1(shop, tmp_path):
    flow, eng = shop
    events: list[dict] = []
    eng.listeners.append(events.append)
    result = run_file(eng, flow, [order(1), order(2, "pending"), order(3)])

    assert result.counts["done"] == 2 and result.counts["review"] == 1
    assert (result.status, result.exit_code) == ("review", 1)
    assert result.dead_letter_ids == [] and len(result.review_ids) == 1
    assert [r["order"] for r in read_ndjson(tmp_path / "erp.ndjson")] == ["#1001", "#1003"]

    [item] = eng.reviews()
    assert isinstance(item, ReviewItem) and item.id == result.review_ids[0]
    assert (item.flow, item.queue, item.record_key, item.step, item.status) == (
        "shop_orders",
        "finance",
        "1002",
        "not_paid",
        "open",
    )
    assert item.reason == "order #1002 is pending: not charged yet"
    assert item.figures == {"total": "104.00", "financial_status": "pending"}
    assert item.record == order(2, "pending") and item.run_id == result.run_id
    # not a dead letter: the dead-letter queue is empty
    with closing(eng.store()) as store:
        assert store.dead_letters() == [] and store.dead_letter(item.id) is None
        [trace] = store.trace("1002")
    assert trace.outcome == "review"
    assert trace.steps[-1][:2] == ["not_paid", "review"]
    assert trace.steps[-1][2]["reason"] == item.reason

    records = [e for e in events if e["event"] == "record"]
    assert [(e["record_key"], e["outcome"]) for e in records] == [
        ("1001", "done"),
        ("1002", "review"),
        ("1003", "done"),
    ]
    [step] = [e for e in events if e["event"] == "step" and e.get("outcome") == "review"]
    assert (step["step"], step["queue"]) == ("not_paid", "finance")


def test_a_held_order_goes_through_once_it_arrives_paid_and_its_item_closes_as_resolved(
    shop, tmp_path
):
    flow, eng = shop
    run_file(eng, flow, [order(1), order(2, "pending")])
    # the same unpaid order again: held again (not skipped as unchanged), one item refreshed
    again = run_file(eng, flow, [order(1), order(2, "pending")])
    assert again.counts["skipped"] == 1 and again.counts["review"] == 1
    [item] = eng.reviews(status=None)
    assert item.run_id == again.run_id and item.status == "open"

    paid = run_file(eng, flow, [order(1), order(2, "paid")])
    assert paid.counts["done"] == 1 and paid.counts["skipped"] == 1
    assert (paid.status, paid.exit_code) == ("ok", 0)
    [item] = eng.reviews(status=None)
    assert (item.status, item.resolved_run) == ("resolved", paid.run_id)
    assert eng.reviews() == []
    sent = read_ndjson(tmp_path / "erp.ndjson")
    assert [r["order"] for r in sent] == ["#1001", "#1002"]  # once each


def test_dead_letters_rank_above_review_items_in_the_run_status(tmp_path):
    flow = write_flow(
        tmp_path,
        HOLD_UNPAID.replace(
            "  - name: to_erp\n",
            "  - route:\n"
            "      - when: not record.name\n"
            "        steps:\n"
            "          - name: no_name\n"
            "            fail: order {{ record.id }} has no name\n"
            "  - name: to_erp\n",
        ),
    )
    eng = Engine(state=tmp_path / "state.db")
    result = run_file(eng, flow, [order(1, "pending"), {**order(2), "name": ""}])
    assert result.counts["review"] == 1 and result.counts["dead_lettered"] == 1
    assert (result.status, result.exit_code) == ("dead_lettered", 1)
    assert len(result.dead_letter_ids) == 1 and len(result.review_ids) == 1


def test_a_review_does_not_stop_a_flow_that_stops_at_its_first_failure(tmp_path):
    flow = write_flow(tmp_path, HOLD_UNPAID + "on_error: stop\n")
    eng = Engine(state=tmp_path / "state.db")
    result = run_file(eng, flow, [order(1, "pending"), order(2), order(3, "authorized")])
    assert (result.counts["review"], result.counts["done"]) == (2, 1)
    assert result.status == "review" and result.message is None


def test_a_replayed_dead_letter_that_now_needs_review_is_superseded_by_the_review_item(tmp_path):
    # first the flow refuses unpaid orders outright; then it is changed to hold them
    refusing = HOLD_UNPAID.replace(
        """            review:
              queue: finance
              reason: "order {{ record.name }} is {{ record.financial_status }}: not charged yet"
              figures:
                total: "{{ record.total_price }}"
                financial_status: "{{ record.financial_status }}"
""",
        '            fail: "order {{ record.name }} is not paid"\n',
    )
    assert refusing != HOLD_UNPAID
    flow = write_flow(tmp_path, refusing)
    eng = Engine(state=tmp_path / "state.db")
    assert run_file(eng, flow, [order(1, "pending")]).counts["dead_lettered"] == 1
    write_flow(tmp_path, HOLD_UNPAID)
    replay = eng.replay(flow)
    assert (replay.counts["review"], replay.status, replay.exit_code) == (1, "review", 1)
    with closing(eng.store()) as store:
        [letter] = store.dead_letters(status=None)
    assert (letter.status, letter.replay_run) == ("superseded", replay.run_id)
    [item] = eng.reviews()
    assert (item.record_key, item.step, item.run_id) == ("1001", "not_paid", replay.run_id)


# -- reconcile ---------------------------------------------------------------------------------
ERP_CHECK = """
flow: sales_to_erp
connections:
  erp:
    connector: http
    base_url: "{{ vars.url }}"
    timeout: 2
    retry: {attempts: 2, backoff: 0.01, max_backoff: 0.02}
source: {connector: file, path: orders.ndjson}
steps:
  - name: post_sale
    send:
      connection: erp
      method: POST
      path: /sales
      idempotency_key: "sale:{{ record.id }}"
      body: {reference: "{{ record.name }}", lines: "{{ record.lines }}"}
      save_as: created
  - name: read_sale
    enrich:
      connection: erp
      method: GET
      path: /sales
      params: {reference: "{{ record.name }}"}
      save_as: erp_sale
  - name: sale_matches_order
    reconcile:
      queue: finance
      tolerance: "0.01"
      reason: "sale {{ record.erp_sale.number }} for order {{ record.name }}"
      amounts:
        untaxed: {expected: "{{ record.subtotal }}", actual: "{{ record.erp_sale.untaxed_amount }}"}
        total: {expected: "{{ record.total }}", actual: "{{ record.erp_sale.total_amount }}"}
  - name: confirm_sale
    send:
      connection: erp
      method: POST
      path: "/sales/{{ record.created.id }}/confirm"
      body: {}
"""


def test_reconcile_lets_confirmed_money_through_and_holds_a_difference_for_review(tmp_path, target):
    flow = write_flow(tmp_path, ERP_CHECK)
    write_ndjson(
        tmp_path / "orders.ndjson",
        [
            {"id": 1, "name": "#1001", "lines": [], "subtotal": "100.00", "total": "104.00"},
            {"id": 2, "name": "#1002", "lines": [], "subtotal": "100.00", "total": "104.00"},
        ],
    )
    # the ERP's own totals, read back as JSON numbers (decoded as Decimal, never float):
    # sale 1 agrees within a cent, sale 2 applied its own tax rule
    target.set_get(
        "/sales?reference=%231001",
        {"number": "SO1", "untaxed_amount": 100.0, "total_amount": 104.005},
    )
    target.set_get(
        "/sales?reference=%231002",
        {"number": "SO2", "untaxed_amount": 100.0, "total_amount": 168.74},
    )
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(flow, vars={"url": target.url})

    assert result.counts["done"] == 1 and result.counts["review"] == 1
    assert result.exit_code == 1
    confirmed = [a["path"] for a in target.applied if a["path"].endswith("/confirm")]
    assert confirmed == ["/sales/1/confirm"]  # the held sale (id 3) is not confirmed

    [item] = eng.reviews(queue="finance")
    assert (item.record_key, item.step) == ("2", "sale_matches_order")
    assert item.reason == (
        "sale SO2 for order #1002: total: the source says 104.00, the target 168.74, "
        "a difference of 64.74 (tolerance 0.01)"
    )
    assert item.figures == {
        "untaxed": {
            "expected": "100.00",
            "actual": "100.0",
            "difference": "0.00",
            "tolerance": "0.01",
        },
        "total": {
            "expected": "104.00",
            "actual": "168.74",
            "difference": "64.74",
            "tolerance": "0.01",
        },
    }
    with closing(eng.store()) as store:
        [ok] = store.trace("1")
    [reconciled] = [s for s in ok.steps if s[0] == "sale_matches_order"]
    assert reconciled[1] == "reconciled"
    assert reconciled[2]["total"] == {
        "expected": "104.00",
        "actual": "104.005",
        "difference": "0.005",
        "tolerance": "0.01",
    }


CHECK_ONLY = """
flow: money_check
connections:
  out: {connector: file}
source: {connector: file, path: unused.ndjson}
steps:
  - name: check
    reconcile:
      amounts:
        total: {expected: "{{ record.expected }}", actual: "{{ record.actual }}"}
  - name: out
    send: {connection: out, path: "{{ vars.dir }}/out.ndjson", record: "{{ record.id }}"}
"""


@pytest.mark.parametrize(
    ("expected", "actual", "reason"),
    [
        (
            "104.00",
            None,
            "total: the source says 104.00, the target reported nothing; it cannot be checked",
        ),
        (
            "104.00",
            "",
            "total: the source says 104.00, the target reported nothing; it cannot be checked",
        ),
        (
            "104.00",
            104.0,
            "total: the source says 104.00, the target reported the float 104.0, which is not "
            "exact; it cannot be checked",
        ),
        (
            "104.00",
            "104,00",
            "total: the source says 104.00, the target reported '104,00', which is not an "
            "amount; it cannot be checked",
        ),
        (
            "104.00",
            True,
            "total: the source says 104.00, the target reported True, which is not an amount; "
            "it cannot be checked",
        ),
        (
            104.0,
            "104.00",
            "total: the source stated the float 104.0, which is not exact, the target 104.00; "
            "it cannot be checked",
        ),
        ("104", "103.99", "total: the source says 104, the target 103.99, a difference of -0.01"),
    ],
)
def test_an_amount_that_is_missing_a_float_or_not_a_number_is_a_difference(
    tmp_path, expected, actual, reason
):
    flow = write_flow(tmp_path, CHECK_ONLY)
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(
        flow,
        records=[{"id": 1, "expected": expected, "actual": actual}],
        vars={"dir": str(tmp_path)},
    )
    assert result.counts["review"] == 1, result
    assert [i.reason for i in eng.reviews()] == [reason]
    assert read_ndjson(tmp_path / "out.ndjson") == []


@pytest.mark.parametrize(
    ("expected", "actual"),
    [("104.00", "104"), (104, "104.00"), ("104.00", Decimal("104.000")), (" 104.00", 104)],
)
def test_equal_amounts_in_any_exact_form_reconcile(tmp_path, expected, actual):
    flow = write_flow(tmp_path, CHECK_ONLY)
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(
        flow,
        records=[{"id": 1, "expected": expected, "actual": actual}],
        vars={"dir": str(tmp_path)},
    )
    assert result.counts["done"] == 1 and result.exit_code == 0
    assert read_ndjson(tmp_path / "out.ndjson") == [1]


PER_LINE = """
flow: lines_check
connections:
  out: {connector: file}
source: {connector: file, path: unused.ndjson}
steps:
  - name: lines_match
    reconcile:
      tolerance: "{{ vars.tolerance }}"
      amounts: "{{ record.checks }}"
  - name: out
    send: {connection: out, path: "{{ vars.dir }}/out.ndjson", record: "{{ record.id }}"}
"""


def test_amounts_given_per_record_by_one_template_with_their_own_tolerances(tmp_path):
    flow = write_flow(tmp_path, PER_LINE)
    eng = Engine(state=tmp_path / "state.db")
    checks = [
        {"name": "line SKU-1", "expected": "10.00", "actual": "10.02", "tolerance": "0.05"},
        {"name": "line SKU-2", "expected": "5.00", "actual": "5.02"},
    ]
    run_vars = {"dir": str(tmp_path), "tolerance": "0.01"}
    result = eng.run(flow, records=[{"id": 1, "checks": checks}], vars=run_vars)
    assert result.counts["review"] == 1
    [item] = eng.reviews()
    assert item.reason == (
        "line SKU-2: the source says 5.00, the target 5.02, a difference of 0.02 (tolerance 0.01)"
    )
    assert item.figures["line SKU-1"]["tolerance"] == "0.05"
    # a mapping of name -> {expected, actual} works the same
    as_mapping = {"subtotal": {"expected": "5", "actual": "5.00"}}
    assert (
        eng.run(flow, records=[{"id": 2, "checks": as_mapping}], vars=run_vars).counts["done"] == 1
    )
    # a bad tolerance is the flow's mistake: a dead letter with the reason, not a review
    bad = eng.run(
        flow, records=[{"id": 3, "checks": as_mapping}], vars={**run_vars, "tolerance": "-1"}
    )
    assert bad.counts["dead_lettered"] == 1
    with closing(eng.store()) as store:
        [letter] = store.dead_letters()
    assert "tolerance of the step must be a decimal of 0 or more" in letter.message


# -- the state store -------------------------------------------------------------------------
# The CREATE statements of schema version 1 (main before review items), as they were.
SCHEMA_1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
    status TEXT NOT NULL, counts TEXT, exit_code INTEGER, kind TEXT, holder TEXT, message TEXT);
CREATE INDEX runs_flow ON runs (flow, started_at);
CREATE TABLE keys (
    flow TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, fingerprint TEXT NOT NULL,
    sent_key TEXT NOT NULL, step TEXT, record_key TEXT, run_id TEXT, response TEXT,
    updated_at REAL NOT NULL, PRIMARY KEY (flow, key));
CREATE TABLE cursors (flow TEXT PRIMARY KEY, position TEXT, updated_at REAL);
CREATE TABLE traces (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, flow TEXT NOT NULL, record_key TEXT,
    outcome TEXT NOT NULL, steps TEXT, error TEXT, at REAL NOT NULL);
CREATE INDEX traces_key ON traces (record_key, at);
CREATE INDEX traces_run ON traces (run_id);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY, flow TEXT NOT NULL, run_id TEXT NOT NULL, record_key TEXT,
    step TEXT, error_class TEXT, message TEXT, attempts INTEGER, record TEXT, context TEXT,
    raw TEXT, line INTEGER, at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'open',
    replay_run TEXT);
CREATE INDEX dead_letters_flow ON dead_letters (flow, status);
CREATE TABLE record_digests (
    flow TEXT NOT NULL, record_key TEXT NOT NULL, digest TEXT NOT NULL, outcome TEXT NOT NULL,
    run_id TEXT, at REAL NOT NULL, PRIMARY KEY (flow, record_key));
CREATE TABLE leases (
    flow TEXT PRIMARY KEY, holder TEXT NOT NULL, pid INTEGER, host TEXT,
    acquired_at REAL NOT NULL, expires_at REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO runs VALUES ('20261101T000000-aaaaaa', 'shop_orders', 1761955200, 1761955201,
    'dead_lettered', '{"read":1,"dead_lettered":1}', 1, 'run', 'old-host:1', NULL);
INSERT INTO dead_letters (flow, run_id, record_key, step, error_class, message, attempts,
    record, context, raw, line, at) VALUES ('shop_orders', '20261101T000000-aaaaaa', '1009',
    'to_erp', 'PermanentError', 'refused', 1,
    '{"id":1009,"name":"#1009","financial_status":"paid","total_price":"9.00"}',
    '{"meta":{"key":"1009","line":1,"position":null},"parent":null,"loop":{}}', NULL, 1,
    1761955200);
"""


def old_state(path):
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(SCHEMA_1)
    return path


def test_a_state_file_of_schema_1_is_upgraded_in_place_and_keeps_its_dead_letters(shop, tmp_path):
    flow, _ = shop
    state = old_state(tmp_path / "state.db")

    # read-only first (a dry run): the old file is read as it is, not changed
    with closing(SqliteStore(state, readonly=True)) as store:
        assert store.schema_version() == 1
        assert [d.record_key for d in store.dead_letters()] == ["1009"]
        assert store.reviews() == [] and store.review(1) is None
    dry = Engine(state=state).replay(flow, dry_run=True)
    assert [w["record_key"] for w in dry.would_send] == ["1009"]
    with closing(sqlite3.connect(state)) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")}
    assert "kind" not in columns

    eng = Engine(state=state)
    result = run_file(eng, flow, [order(2, "pending")])
    assert result.counts["review"] == 1
    with closing(eng.store()) as store:
        assert store.schema_version() == SCHEMA_VERSION
        [letter] = store.dead_letters()
        assert (letter.id, letter.record_key, letter.source_record) == (1, "1009", None)
        assert store.list_runs()[-1].run_id == "20261101T000000-aaaaaa"
    assert [(i.id, i.record_key) for i in eng.reviews()] == [(2, "1002")]

    # the old dead letter keeps no source record: it replays from its step, not the start
    with pytest.raises(ValueError, match="written by an older flowyard"):
        eng.replay(flow, [1], from_start=True)
    replayed = eng.replay(flow, [1])
    assert replayed.counts["done"] == 1
    assert [r["order"] for r in read_ndjson(tmp_path / "erp.ndjson")] == ["#1009"]
    # opening it again changes nothing more
    with closing(SqliteStore(state)) as store:
        assert store.schema_version() == SCHEMA_VERSION


# -- the CLI ---------------------------------------------------------------------------------
def test_review_list_show_and_close_from_the_cli(shop, tmp_path):
    flow, _ = shop
    write_ndjson(
        tmp_path / "orders.ndjson", [order(1), order(2, "authorized"), order(3, "pending")]
    )
    state = tmp_path / "state.db"

    def cli(*args):
        return invoke(*args, "--state", state, cwd=tmp_path)

    run = cli("run", flow)
    assert run.returncode == 1, run.stderr
    assert "review 2" in run.stdout and "held for review: flowyard review list" in run.stdout

    listed = json.loads(cli("review", "list", "--queue", "finance", "--output", "json").stdout)
    assert [(i["record_key"], i["status"]) for i in listed] == [("1002", "open"), ("1003", "open")]
    assert cli("review", "list", "--queue", "returns", "--output", "json").stdout.strip() == "[]"
    table = cli("review", "list").stdout
    assert "QUEUE" in table and "order #1002 is authorized: not charged yet" in table
    first = listed[0]["id"]

    shown = cli("review", "show", str(first)).stdout
    assert "queue: finance" in shown and "step: not_paid" in shown
    assert '"financial_status": "authorized"' in shown and '"total_price": "104.00"' in shown

    closed = cli("review", "close", str(first), "--by", "ann", "--comment", "voided in the shop")
    assert closed.returncode == 0, closed.stderr
    item = json.loads(cli("review", "show", str(first), "--output", "json").stdout)
    assert (item["status"], item["decided_by"], item["comment"]) == (
        "closed",
        "ann",
        "voided in the shop",
    )
    assert item["decided_at"] > 0
    again = cli("review", "close", str(first), "--by", "bob")
    assert again.returncode == 2 and "is closed, not open" in again.stderr
    assert cli("review", "close", "99", "--by", "bob").returncode == 2
    assert cli("review", "close", str(first)).returncode == 2  # --by is required
    open_now = json.loads(cli("review", "list", "--output", "json").stdout)
    assert [i["record_key"] for i in open_now] == ["1003"]
    every = json.loads(cli("review", "list", "--all", "--output", "json").stdout)
    assert [i["status"] for i in every] == ["closed", "open"]

    # the dead-letter commands do not see review items, nor purge them
    assert json.loads(cli("dlq", "list", "--all", "--output", "json").stdout) == []
    assert cli("dlq", "show", str(first)).returncode == 2
    assert json.loads(cli("dlq", "purge", "--all", "--output", "json").stdout) == {"purged": 0}
    assert len(json.loads(cli("review", "list", "--all", "--output", "json").stdout)) == 2

    runs = json.loads(cli("runs", "list", "--output", "json").stdout)
    assert runs[0]["status"] == "review" and runs[0]["counts"]["review"] == 2
    shown_run = cli("runs", "show", runs[0]["run_id"]).stdout
    assert "not_paid:review" in shown_run
    trace = cli("trace", "1003").stdout
    assert "review" in trace and "not charged yet" in trace


def test_close_review_through_the_library_keeps_who_when_and_why(shop):
    flow, eng = shop
    run_file(eng, flow, [order(2, "pending")])
    [item] = eng.reviews(flow)
    assert eng.reviews("another_flow") == [] and eng.reviews(queue="returns") == []
    with pytest.raises(ValueError, match="who closes"):
        eng.close_review(item.id, by=" ")
    closed = eng.close_review(item.id, by="ann", comment="customer paid by bank transfer")
    assert (closed.status, closed.decided_by, closed.comment) == (
        "closed",
        "ann",
        "customer paid by bank transfer",
    )
    assert eng.review(item.id) == closed
    with pytest.raises(LookupError):
        eng.close_review(item.id + 1, by="ann")
