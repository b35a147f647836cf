"""A replay re-runs what a fix changes: the record's lookups are made again (a product
created in the ERP since is found), and `--from-start` takes the record as the source
delivered it through a fixed flow. Both go through the same idempotency keys, so the send
happens once and replaying twice is harmless.

The ERP is a real HTTP server on 127.0.0.1 (tests/support/target.py) that answers the
lookup "unknown" until the test creates the product.
"""

from __future__ import annotations

import json
from contextlib import closing

import pytest

from engine import Engine
from tests.conftest import invoke, read_ndjson, write_flow, write_ndjson

FLOW = """
flow: orders_to_erp
connections:
  erp:
    connector: http
    base_url: "{{ vars.url }}"
    timeout: 2
    retry: {attempts: 2, backoff: 0.01, max_backoff: 0.02}
source: {connector: file, path: orders.ndjson}
steps:
  - name: product_code
    set:
      code: "{{ record.sku }}"
  - name: product_lookup
    enrich:
      connection: erp
      method: GET
      path: /products
      params: {code: "{{ record.code }}"}
      save_as: found
  - name: product_id
    set:
      product: "{{ record.found.products[0].id if record.found.products else none }}"
  - route:
      - when: record.product is none
        steps:
          - name: unknown_product
            fail: >-
              unknown product {{ record.code }} in order {{ record.id }}: create it in
              the ERP, then replay
  - name: post_sale
    send:
      connection: erp
      method: POST
      path: /sales
      idempotency_key: "sale:{{ record.id }}"
      body: {order: "{{ record.id }}", product: "{{ record.product }}"}
"""

UNKNOWN = {"products": []}
KNOWN = {"products": [{"id": 7, "code": "SKU-1"}]}


@pytest.fixture
def erp(tmp_path, target):
    flow = write_flow(tmp_path, FLOW)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": 1001, "sku": "SKU-1"}])
    return flow, Engine(state=tmp_path / "state.db"), {"url": target.url}


def sales(target) -> list[dict]:
    return [a["body"] for a in target.applied if a["path"] == "/sales"]


def lookups(target) -> int:
    return sum(1 for r in target.requests if r["path"] == "/products")


def open_letters(engine):
    with closing(engine.store()) as store:
        return store.dead_letters()


def test_a_replay_looks_the_product_up_again_after_it_was_created_in_the_erp(erp, target):
    flow, eng, run_vars = erp
    target.set_get("/products?code=SKU-1", UNKNOWN)
    first = eng.run(flow, vars=run_vars)
    assert first.counts["dead_lettered"] == 1 and sales(target) == []
    [letter] = open_letters(eng)
    assert letter.step == "unknown_product"
    assert letter.message == (
        "unknown product SKU-1 in order 1001: create it in the ERP, then replay"
    )
    assert letter.record["found"] == UNKNOWN  # the stale answer the record carries

    target.set_get("/products?code=SKU-1", KNOWN)  # the user creates the product in the ERP
    asked = lookups(target)
    replay = eng.replay(flow, vars=run_vars)
    assert (replay.counts["done"], replay.exit_code) == (1, 0)
    assert lookups(target) == asked + 1  # looked up again, not taken from the dead letter
    assert sales(target) == [{"order": 1001, "product": 7}]
    with closing(eng.store()) as store:
        [closed] = store.dead_letters(status=None)
        steps = [s[:2] for s in store.trace("1001")[-1].steps]
    assert (closed.status, closed.replay_run) == ("replayed", replay.run_id)
    # the replay started at the lookup and took the route again
    assert steps == [
        ["product_lookup", "looked up"],
        ["product_id", "set"],
        ["route_4", "no branch"],
        ["post_sale", "sent"],
    ]

    # replaying twice is harmless: nothing is open; the next run finds the sale sent
    assert eng.replay(flow, vars=run_vars).counts["read"] == 0
    assert eng.run(flow, vars=run_vars).counts["skipped"] == 1
    assert len(sales(target)) == 1


def test_a_replay_that_still_finds_nothing_keeps_the_dead_letter_open(erp, target):
    flow, eng, run_vars = erp
    target.set_get("/products?code=SKU-1", UNKNOWN)
    eng.run(flow, vars=run_vars)
    [before] = open_letters(eng)
    again = eng.replay(flow, vars=run_vars)
    assert again.counts["dead_lettered"] == 1 and again.exit_code == 1
    [after] = open_letters(eng)
    assert (after.id, after.run_id) == (before.id, again.run_id)  # refreshed, still open
    assert sales(target) == []


def test_replay_from_start_takes_the_source_record_through_a_fixed_flow(erp, tmp_path, target):
    flow, eng, run_vars = erp
    # the shop sends lower-case codes; the ERP knows them in upper case
    write_ndjson(tmp_path / "orders.ndjson", [{"id": 1002, "sku": "sku-1"}])
    target.set_get("/products?code=sku-1", UNKNOWN)
    target.set_get("/products?code=SKU-1", KNOWN)
    assert eng.run(flow, vars=run_vars).counts["dead_lettered"] == 1
    [letter] = open_letters(eng)
    assert letter.source_record == {"id": 1002, "sku": "sku-1"}

    # the fix is in the flow, before the lookup
    flow.write_text(flow.read_text().replace("{{ record.sku }}", "{{ record.sku | upper }}"))
    # a replay from the lookup keeps the code the record had there: it fails again
    assert eng.replay(flow, vars=run_vars).counts["dead_lettered"] == 1
    assert sales(target) == []

    state = tmp_path / "state.db"
    (tmp_path / "erp.json").write_text(json.dumps({"url": target.url}))
    args = ("dlq", "replay", flow, "--from-start", "--vars", "erp.json")
    replay = invoke(*args, "--state", state, "--output", "json", cwd=tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    result = json.loads(replay.stdout)
    assert result["counts"]["done"] == 1
    assert sales(target) == [{"order": 1002, "product": 7}]
    with closing(eng.store()) as store:
        [closed] = store.dead_letters(status=None)
        [first, *_] = store.trace("1002")[-1].steps
    assert (closed.status, closed.replay_run) == ("replayed", result["run_id"])
    assert first[:2] == ["product_code", "set"]  # from the flow's first step

    again = invoke(*args, "--state", state, "--output", "json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["counts"]["read"] == 0
    assert len(sales(target)) == 1


SPLIT = """
flow: order_lines
connections:
  out: {connector: file}
source: {connector: file, path: orders.ndjson}
steps:
  - foreach:
      items: "{{ record.lines }}"
      as: line
      steps:
        - route:
            - when: line.sku not in vars.known
              steps:
                - name: unknown_sku
                  fail: "unknown SKU {{ line.sku }} in order {{ parent.id }}"
        - name: reserve
          send:
            connection: out
            path: "{{ vars.dir }}/reserved.ndjson"
            idempotency_key: "reserve:{{ parent.id }}:{{ line.sku }}"
            record: {order: "{{ parent.id }}", sku: "{{ line.sku }}"}
"""


def test_replaying_the_items_of_one_record_from_the_start_runs_the_record_once(tmp_path):
    flow = write_flow(tmp_path, SPLIT)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": 7, "lines": [{"sku": "A"}, {"sku": "B"}]}])
    eng = Engine(state=tmp_path / "state.db")
    base = {"dir": str(tmp_path)}
    assert eng.run(flow, vars={**base, "known": []}).counts["dead_lettered"] == 1
    letters = open_letters(eng)
    assert [(d.record_key, d.step) for d in letters] == [
        ("7:0", "unknown_sku"),
        ("7:1", "unknown_sku"),
    ]

    events: list[dict] = []
    eng.listeners.append(events.append)
    partly = eng.replay(flow, vars={**base, "known": ["A"]}, from_start=True)
    assert partly.counts["dead_lettered"] == 1
    [record] = [e for e in events if e["event"] == "record"]
    assert (record["record_key"], sorted(record["replay_of"])) == ("7", [d.id for d in letters])
    with closing(eng.store()) as store:
        states = [(d.record_key, d.status) for d in store.dead_letters(status=None)]
    assert states == [("7:0", "replayed"), ("7:1", "open")]

    done = eng.replay(flow, vars={**base, "known": ["A", "B"]}, from_start=True)
    assert done.exit_code == 0 and open_letters(eng) == []
    assert read_ndjson(tmp_path / "reserved.ndjson") == [
        {"order": 7, "sku": "A"},
        {"order": 7, "sku": "B"},
    ]
