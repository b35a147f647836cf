"""Sends to a real HTTP target: each record applied once, transient faults retried,
permanent ones dead-lettered, stored responses reaching later steps."""

from __future__ import annotations

import json

from engine import Engine
from tests.conftest import read_ndjson, shop_order, write_flow, write_ndjson

FLOW = """
flow: orders_http
vars:
  input: orders.ndjson
connections:
  erp:
    connector: http
    base_url: "{{ vars.erp_url }}"
    timeout: 1
    retry: {attempts: 6, backoff: 0.01, max_backoff: 0.05}
source:
  connector: file
  path: "{{ vars.input }}"
steps:
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{ record.id }}"
      body: "{{ record }}"
      save_as: erp
  - name: write_back
    send:
      connection: out
      path: "{{ vars.out }}"
      record:
        id: "{{ record.id }}"
        erp_id: "{{ record.erp.id }}"
"""


def setup(tmp_path, target, n=5, **flow_vars):
    flow = write_flow(
        tmp_path, FLOW.replace("connections:\n", "connections:\n  out:\n    connector: file\n")
    )
    orders = [shop_order(i) for i in range(1, n + 1)]
    write_ndjson(tmp_path / "orders.ndjson", orders)
    eng = Engine(state=tmp_path / "state.db")
    run_vars = {
        "erp_url": target.url,
        "input": str(tmp_path / "orders.ndjson"),
        "out": str(tmp_path / "out.ndjson"),
        **flow_vars,
    }
    return eng, flow, orders, run_vars


def applied_ids(target):
    return sorted(a["body"]["id"] for a in target.applied)


def test_each_record_is_applied_once_and_a_second_run_sends_nothing(tmp_path, target):
    eng, flow, orders, run_vars = setup(tmp_path, target)
    first = eng.run(flow, vars=run_vars)
    assert first.counts["done"] == 5 and first.exit_code == 0
    second = eng.run(flow, vars=run_vars)
    assert second.counts["skipped"] == 5 and second.counts["done"] == 0
    assert applied_ids(target) == sorted(o["id"] for o in orders)
    assert len(target.requests) == 5


def test_transient_failures_are_retried_and_each_record_lands_once(tmp_path, target):
    eng, flow, orders, run_vars = setup(tmp_path, target, n=6)
    target.script(
        [
            {"status": 503},
            {"status": 429, "retry_after": 0.1},
            {"status": 502, "after_apply": True},
            {"drop_after_apply": True},
            {"status": 500},
        ]
    )
    result = eng.run(flow, vars=run_vars)
    assert result.counts["done"] == 6, result
    assert applied_ids(target) == sorted(o["id"] for o in orders)
    # requests applied before their answer was lost were repeated with the same key and
    # answered from the target's idempotency store instead of being applied again
    assert any(r["outcome"] == "replayed" for r in target.requests)
    for r in target.requests:
        body_id = json.loads(r["body"])["id"]
        assert r["headers"]["idempotency-key"].startswith(f'"order:{body_id}#')


def test_a_timeout_is_transient_and_retried(tmp_path, target):
    eng, flow, orders, run_vars = setup(tmp_path, target, n=2)
    flow.write_text(
        flow.read_text().replace("backoff: 0.01, max_backoff: 0.05", "backoff: 0.5, max_backoff: 1")
    )
    target.script([{"delay": 1.5}])
    result = eng.run(flow, vars=run_vars)
    assert result.counts["done"] == 2
    assert applied_ids(target) == sorted(o["id"] for o in orders)


def test_a_refused_record_is_dead_lettered_with_the_reason_and_the_rest_go_on(tmp_path, target):
    eng, flow, orders, run_vars = setup(tmp_path, target, n=4)
    target.script([{"status": 400, "body": {"error": "unknown SKU X-1"}}])
    result = eng.run(flow, vars=run_vars)
    assert result.counts == {**result.counts, "read": 4, "done": 3, "dead_lettered": 1}
    assert result.exit_code == 1
    store = eng.store()
    [letter] = store.dead_letters()
    assert letter.step == "post_order"
    assert letter.error_class == "PermanentError"
    assert "unknown SKU X-1" in letter.message
    assert letter.record["id"] == orders[0]["id"]
    store.close()
    assert len(target.applied) == 3


def test_exhausted_retries_dead_letter_the_record(tmp_path, target):
    eng, flow, orders, run_vars = setup(tmp_path, target, n=2)
    target.script([{"status": 503, "times": 6}])
    result = eng.run(flow, vars=run_vars)
    assert result.counts["dead_lettered"] == 1 and result.counts["done"] == 1
    store = eng.store()
    [letter] = store.dead_letters()
    assert letter.attempts == 6 and letter.error_class == "TransientError"
    store.close()


def test_the_stored_response_reaches_a_later_step_also_when_skipped(tmp_path, target):
    eng, flow, orders, run_vars = setup(tmp_path, target, n=3)
    # the write-back is keyed by run, so it happens on every run
    flow.write_text(
        flow.read_text().replace(
            "      connection: out\n",
            '      connection: out\n      idempotency_key: "{{ run.id }}:{{ record.id }}"\n',
        )
    )
    eng.run(flow, vars=run_vars)
    written = read_ndjson(tmp_path / "out.ndjson")
    assert [w["erp_id"] for w in written] == [1, 2, 3]
    (tmp_path / "out.ndjson").unlink()
    eng.run(flow, vars=run_vars)  # sends skipped, responses come from the store
    assert [w["erp_id"] for w in read_ndjson(tmp_path / "out.ndjson")] == [1, 2, 3]
    assert len(target.applied) == 3


def test_changed_record_follows_on_change(tmp_path, target):
    eng, flow, orders, run_vars = setup(tmp_path, target, n=2)
    eng.run(flow, vars=run_vars)
    changed = [dict(orders[0], total="99.00"), orders[1]]
    write_ndjson(tmp_path / "orders.ndjson", changed)
    # default on_change is conflict: the changed order is dead-lettered, nothing is sent
    result = eng.run(flow, vars=run_vars)
    assert result.counts["dead_lettered"] == 1 and result.counts["skipped"] == 1
    assert len(target.applied) == 2
    store = eng.store()
    assert store.dead_letters()[0].error_class == "ConflictError"
    store.close()
    # with on_change: update the change is sent, under a new idempotency key (and the
    # write-back, whose record now holds the ERP's new answer, is updated too)
    flow.write_text(
        flow.read_text()
        .replace("      save_as: erp\n", "      save_as: erp\n      on_change: update\n")
        .replace("      connection: out\n", "      connection: out\n      on_change: update\n")
    )
    result = eng.run(flow, vars=run_vars)
    assert result.counts["done"] == 1 and result.counts["skipped"] == 1
    assert [a["body"]["total"] for a in target.applied] == ["1.50", "2.50", "99.00"]
    assert target.applied[-1]["idempotency_key"].startswith(f"order:{orders[0]['id']}#")
    # and the same change again is a duplicate
    result = eng.run(flow, vars=run_vars)
    assert result.counts["skipped"] == 2 and len(target.applied) == 3


def test_on_change_skip_ignores_the_change(tmp_path, target):
    eng, flow, orders, run_vars = setup(tmp_path, target, n=1)
    flow.write_text(
        flow.read_text().replace(
            "      save_as: erp\n", "      save_as: erp\n      on_change: skip\n"
        )
    )
    eng.run(flow, vars=run_vars)
    write_ndjson(tmp_path / "orders.ndjson", [dict(orders[0], total="5.00")])
    result = eng.run(flow, vars=run_vars)
    assert result.counts["skipped"] == 1 and len(target.applied) == 1


def test_concurrent_sends_keep_records_with_one_key_in_order(tmp_path, target):
    flow = write_flow(
        tmp_path,
        """
        flow: stock_updates
        concurrency: 8
        connections:
          shop: {connector: http, base_url: "{{ vars.url }}", timeout: 5}
        source: {connector: file, path: "{{ vars.input }}", key: "{{ record.sku }}"}
        steps:
          - name: push
            send:
              connection: shop
              method: PUT
              path: "/levels/{{ record.sku }}"
              idempotency_key: "level:{{ record.sku }}:{{ record.seq }}"
              body: "{{ record }}"
        """,
    )
    levels = [{"sku": f"SKU-{i % 4}", "seq": i, "available": i} for i in range(40)]
    write_ndjson(tmp_path / "levels.ndjson", levels)
    target.configure(latency_ms=20)
    result = Engine(state=tmp_path / "s.db").run(
        flow, vars={"url": target.url, "input": str(tmp_path / "levels.ndjson")}
    )
    assert result.counts["done"] == 40, result
    for sku in {lv["sku"] for lv in levels}:
        seen = [a["body"]["seq"] for a in target.applied if a["body"]["sku"] == sku]
        assert seen == sorted(seen) and len(seen) == 10
    # sends overlapped: one at a time, each arrival would follow the last by the 20 ms latency
    arrivals = sorted(r["time"] for r in target.requests)
    overlapping = sum(1 for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a < 0.01)
    assert overlapping >= 10, arrivals
