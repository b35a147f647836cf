"""``flowyard serve`` end to end, in real processes: a signed webhook reaches the target
once, duplicates are acknowledged and not re-sent, the trace shows the arrival, metrics
are scraped and parsed, the inbox pushes back when full, oversized bodies get 413,
SIGTERM stops gracefully and SIGKILL loses nothing acknowledged."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import Engine
from engine.serve.signatures import sign
from engine.store import SCHEMA_VERSION, SqliteStore
from tests.support.cli import invoke
from tests.support.files import write_flow
from tests.support.serving import Serving
from tests.support.target import read_applied, spawn_target, stop_target

SECRET = "shpss_serve_test_secret"
PATH = "/webhooks/shop_orders"

FLOW = """
flow: shop_orders
vars: {erp_url: "http://127.0.0.1:1"}
source:
  webhook:
    path: /webhooks/shop_orders
    scheme: shopify
    secret: ${env:SHOP_WEBHOOK_SECRET}
    topics: [orders/create, orders/updated]
    max_body: 20000
  key: "{{ record.id }}"
connections:
  erp:
    connector: http
    base_url: "{{ vars.erp_url }}"
    timeout: 5
    retry: {attempts: 3, backoff: 0.01, max_backoff: 0.05}
steps:
  - name: to_erp
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{ record.id }}:{{ meta.webhook.event_id }}"
      body: {order: "{{ record.name }}", total: "{{ record.total_price }}"}
"""


def order(n: int, **extra) -> dict:
    """A web-shop order webhook body (a few of the documented fields)."""
    return {
        "id": 5_234_567_890_123_456_000 + n,
        "name": f"#{1000 + n}",
        "email": f"buyer{n}@example.com",
        "currency": "EUR",
        "financial_status": "paid",
        "total_price": f"{n}.50",
        **extra,
    }


def delivery(n: int, topic: str = "orders/create", event: str | None = None, **extra):
    body = json.dumps(order(n, **extra)).encode()
    return body, sign("shopify", SECRET, body, event_id=event or f"ev-{n}", topic=topic)


@pytest.fixture
def erp(tmp_path):
    proc, url = spawn_target(tmp_path / "erp")
    yield url, tmp_path / "erp"
    stop_target(proc)


def flow_with(tmp_path, url: str, text: str = FLOW):
    flow = write_flow(tmp_path, text.replace("http://127.0.0.1:1", url))
    return flow


def wait_for(check, timeout: float = 15.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


def applied_orders(erp_dir) -> list[str]:
    return [a["body"]["order"] for a in read_applied(erp_dir)]


def test_a_signed_order_reaches_the_erp_once_and_its_trace_shows_the_webhook(tmp_path, erp):
    url, erp_dir = erp
    env = {"SHOP_WEBHOOK_SECRET": SECRET}
    with Serving(tmp_path, [flow_with(tmp_path, url)], env=env) as srv:
        body, headers = delivery(1)
        sent_at = time.monotonic()
        first = srv.deliver(body, headers, PATH)
        assert first.status_code == 200 and first.json()["status"] == "accepted"
        wait_for(lambda: applied_orders(erp_dir) == ["#1001"])
        assert time.monotonic() - sent_at < 2.0
        # the platform delivers the same event again, and again: acknowledged, not re-sent
        again = [srv.deliver(body, headers, PATH) for _ in range(2)]
        assert [(r.status_code, r.json()["status"]) for r in again] == [(200, "duplicate")] * 2
        ignored = srv.deliver(*delivery(2, topic="products/update"), PATH)
        assert ignored.json()["status"] == "ignored"
        refused = srv.deliver(body, {**headers, "X-Shopify-Hmac-Sha256": "AAAA"}, PATH)
        assert refused.status_code == 401
        assert srv.deliver(body, headers, "/webhooks/nothing").status_code == 404
        time.sleep(1.0)
        assert applied_orders(erp_dir) == ["#1001"]
        [request] = [r for r in read_applied(erp_dir)]
        assert request["idempotency_key"].startswith("order:5234567890123456001:ev-1#")
        assert srv.stop() == 0
    trace = invoke("trace", "5234567890123456001", "--state", str(srv.state), "--output", "json")
    [traced] = json.loads(trace.stdout)
    assert traced["kind"] == "webhook" and traced["outcome"] == "done"
    arrival = traced["steps"][0]
    assert arrival[:2] == ["webhook", "received"]
    assert arrival[2]["event_id"] == "ev-1" and arrival[2]["topic"] == "orders/create"
    assert traced["steps"][1][:2] == ["to_erp", "sent"]
    shown = invoke("trace", "5234567890123456001", "--state", str(srv.state))
    assert "webhook: received" in shown.stdout
    assert SECRET not in (srv.output() + trace.stdout)


def test_metrics_are_scraped_and_parsed_and_health_is_answered(tmp_path, erp):
    url, erp_dir = erp
    failing = FLOW.replace("path: /orders", 'path: "/orders/{{ record.id }}"')
    with Serving(
        tmp_path, [flow_with(tmp_path, url, failing)], env={"SHOP_WEBHOOK_SECRET": SECRET}
    ) as srv:
        assert srv.client.get(srv.url + "/healthz").text == "ok\n"
        for n in range(3):
            srv.deliver(*delivery(n), PATH)
        srv.deliver(*delivery(0), PATH)  # a duplicate
        srv.deliver(b"{}", {"X-Shopify-Hmac-Sha256": "nope"}, PATH)
        wait_for(lambda: len(read_applied(erp_dir)) == 3)
        time.sleep(1.5)  # the run ends after its idle time and counts itself

        def samples():
            text = srv.client.get(srv.url + "/metrics").text
            found = {}
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    found[(s.name, tuple(sorted(s.labels.items())))] = s.value
            return found

        found = wait_for(lambda: (s := samples()) and s)
        flow = ("flow", "shop_orders")
        assert found[("flowyard_records_total", (flow, ("outcome", "done")))] == 3
        assert found[("flowyard_webhooks_total", (flow, ("outcome", "accepted")))] == 3
        assert found[("flowyard_webhooks_total", (flow, ("outcome", "duplicate")))] == 1
        assert found[("flowyard_webhooks_total", (flow, ("outcome", "unauthorized")))] == 1
        assert found[("flowyard_inbox_depth", (flow,))] == 0
        assert found[("flowyard_dead_letters_open", (flow,))] == 0
        assert found[("flowyard_last_success_timestamp_seconds", (flow,))] > time.time() - 60
        assert found[("flowyard_runs_total", (flow, ("status", "ok")))] >= 1
        sends = found[("flowyard_send_duration_seconds_count", (flow, ("step", "to_erp")))]
        assert sends == 3
        assert found[("flowyard_webhook_ack_seconds_count", (flow,))] == 4
        assert srv.stop() == 0


def test_bodies_over_the_limit_get_413_and_a_full_inbox_503_with_retry_after(tmp_path, erp):
    url, erp_dir = erp
    slow = spawn_target(tmp_path / "slow", latency_ms=400)
    try:
        flow = flow_with(tmp_path, slow[1])
        with Serving(
            tmp_path, [flow], env={"SHOP_WEBHOOK_SECRET": SECRET}, args=["--inbox-limit", "3"]
        ) as srv:
            big, headers = delivery(1, note="x" * 30_000)
            assert srv.deliver(big, headers, PATH).status_code == 413
            answers = [srv.deliver(*delivery(n), PATH) for n in range(2, 12)]
            statuses = [a.status_code for a in answers]
            assert 200 in statuses and 503 in statuses, statuses
            busy = next(a for a in answers if a.status_code == 503)
            assert busy.headers["retry-after"] == "5"
            accepted = [
                n for n, a in zip(range(2, 12), answers, strict=True) if a.status_code == 200
            ]
            wait_for(lambda: len(read_applied(tmp_path / "slow")) == len(accepted), timeout=30)
            assert sorted(a["body"]["order"] for a in read_applied(tmp_path / "slow")) == sorted(
                f"#{1000 + n}" for n in accepted
            )
            assert srv.stop() == 0
    finally:
        stop_target(slow[0])


def test_sigterm_finishes_in_flight_events_and_sigkill_loses_nothing_acknowledged(tmp_path):
    slow_proc, slow_url = spawn_target(tmp_path / "slow", latency_ms=150)
    try:
        with Serving(
            tmp_path, [flow_with(tmp_path, slow_url)], env={"SHOP_WEBHOOK_SECRET": SECRET}
        ) as srv:
            acked = [n for n in range(10) if srv.deliver(*delivery(n), PATH).status_code == 200]
            assert srv.stop() == 0  # graceful: what was taken is finished and committed
            assert "stopped" in srv.output()
            done_before_restart = len(read_applied(tmp_path / "slow"))
            assert done_before_restart >= 1
            srv.start()
            acked += [
                n for n in range(10, 30) if srv.deliver(*delivery(n), PATH).status_code == 200
            ]
            time.sleep(0.3)
            srv.kill()  # kill -9 with events pending and one in flight
            srv.start()
            wait_for(lambda: len(read_applied(tmp_path / "slow")) >= len(acked), timeout=30)
            time.sleep(0.5)
            assert srv.stop() == 0
        applied = applied_orders(tmp_path / "slow")
        assert sorted(applied) == sorted(f"#{1000 + n}" for n in acked)  # each exactly once
        with closing(SqliteStore(srv.state)) as store:
            assert store.inbox_depth() == {}
            assert len(store.inbox_events(status="done")) == len(acked)
    finally:
        stop_target(slow_proc)


def test_a_webhook_flow_is_not_run_from_its_source(tmp_path, erp):
    url, _ = erp
    flow = flow_with(tmp_path, url)
    result = invoke(
        "run", str(flow), "--state", str(tmp_path / "state.db"), env={"SHOP_WEBHOOK_SECRET": SECRET}
    )
    assert result.returncode == 3
    assert "takes its records from webhooks: serve it with `flowyard serve`" in result.stderr


def test_engine_accept_and_process_inbox_let_a_partner_app_take_webhooks(
    tmp_path, erp, monkeypatch
):
    url, erp_dir = erp
    monkeypatch.setenv("SHOP_WEBHOOK_SECRET", SECRET)
    eng = Engine(state=tmp_path / "state.db")
    flow = eng.load(flow_with(tmp_path, url))
    answers = [eng.accept(flow, delivery(n)[1], delivery(n)[0]) for n in (1, 2, 1)]
    assert [a.body["status"] for a in answers] == ["accepted", "accepted", "duplicate"]
    bad = eng.accept(flow, {"X-Shopify-Topic": "orders/create"}, b"not json")
    assert bad.status == 401
    unparsable = b"{not json"
    eng.accept(
        flow,
        sign("shopify", SECRET, unparsable, event_id="ev-x", topic="orders/create"),
        unparsable,
    )
    result = eng.process_inbox(flow, idle=0.05)
    assert result is not None and result.counts["done"] == 2 and result.counts["dead_lettered"] == 1
    assert sorted(applied_orders(erp_dir)) == ["#1001", "#1002"]
    [letter] = eng.dead_letters()
    assert letter.raw == "{not json" and "not JSON" in letter.message
    assert eng.process_inbox(flow, idle=0.05) is None  # nothing left
    eng.close()


SCHEMA_3 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, started_at REAL NOT NULL,
    ended_at REAL, status TEXT NOT NULL, counts TEXT, exit_code INTEGER, kind TEXT,
    holder TEXT, message TEXT, vars TEXT);
CREATE TABLE keys (flow TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
    fingerprint TEXT NOT NULL, sent_key TEXT NOT NULL, step TEXT, record_key TEXT,
    run_id TEXT, response TEXT, updated_at REAL NOT NULL, source_key TEXT,
    PRIMARY KEY (flow, key));
INSERT INTO meta VALUES ('schema_version', '3');
INSERT INTO runs VALUES ('20261101T000000-aaaaaa', 'shop_orders', 1761955200, 1761955201,
    'ok', '{"read":1,"done":1}', 0, 'run', 'old-host:1', NULL, '{}');
"""


def test_a_state_file_of_schema_3_gets_the_inbox_in_place(tmp_path):
    state = tmp_path / "state.db"
    with closing(sqlite3.connect(state)) as conn:
        conn.executescript(SCHEMA_3)
    with closing(SqliteStore(state)) as store:
        assert store.schema_version() == SCHEMA_VERSION == 5
        assert store.list_runs()[0].run_id == "20261101T000000-aaaaaa"
        from engine.store import InboxEvent

        [added] = store.add_to_inbox([("shop_orders", InboxEvent("ev-1", b"{}"))])
        assert added.new and store.claim_schedule("shop_orders", 60.0, "me")


def test_a_state_file_of_schema_4_gets_the_inbox_and_keeps_its_work_items(tmp_path):
    # version 4 (work items, compensations) is the one before the inbox: a file written
    # then is brought up to 5 in place, with what it holds
    state = tmp_path / "state.db"
    with closing(SqliteStore(state)):
        pass
    with closing(sqlite3.connect(state)) as conn:
        conn.executescript(
            "DROP TABLE inbox; DROP TABLE schedules; "
            "UPDATE meta SET value = '4' WHERE name = 'schema_version'; "
            "INSERT INTO runs (run_id, flow, started_at, status) "
            "VALUES ('20261101T000000-bbbbbb', 'shop_orders', 1761955200, 'ok');"
        )
    with closing(SqliteStore(state)) as store:
        assert store.schema_version() == 5
        assert store.list_runs()[0].run_id == "20261101T000000-bbbbbb"
        from engine.store import InboxEvent

        [added] = store.add_to_inbox([("shop_orders", InboxEvent("ev-1", b"{}"))])
        assert added.new and store.inbox_depth() == {"shop_orders": 1}
        assert store.claim_schedule("shop_orders", 60.0, "me")
    with closing(sqlite3.connect(state)) as conn:
        work_columns = {row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")}
    assert {"owner", "due_at", "history"} <= work_columns
