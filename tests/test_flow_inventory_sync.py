"""flows/inventory_sync.yaml: ERP stock levels to the web shop, changed levels only.

The end-to-end test runs the shipped flow against a real Tryton (tests/tryton_support.py)
and the example web shop (examples/webshop/serve.py), and checks what reached the shop
through its request log. The other tests need neither Tryton nor a network beyond
127.0.0.1: they check the web shop itself and what the engine's idempotency keys make
of levels that change back and forth.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx
import pytest

from engine import Engine
from tests.conftest import ROOT, write_flow, write_ndjson

pytest.register_assert_rewrite("tests.tryton_support")
from tests.tryton_support import TrytonInstance  # noqa: E402

pytest_plugins = ["tests.tryton_support"]

FLOW = ROOT / "flows" / "inventory_sync.yaml"
TOKEN = "test-shop-token"


def _load_webshop():
    name = "flowyard_examples_webshop"
    if name not in sys.modules:  # examples/ is no package: load the script from its file
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples/webshop/serve.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


webshop = _load_webshop()


@pytest.fixture
def shop(monkeypatch):
    """The example web shop on 127.0.0.1, requiring the token the flow reads from the env."""
    monkeypatch.setenv("WEBSHOP_TOKEN", TOKEN)
    with webshop.WebShop(token=TOKEN) as running:
        yield running


def set_level(shop, key=None, **body):
    headers = {webshop.TOKEN_HEADER: TOKEN}
    if key is not None:
        headers["Idempotency-Key"] = f'"{key}"'
    return httpx.post(f"{shop.url}/inventory_levels/set.json", json=body, headers=headers)


def shop_levels(shop) -> dict[str, int]:
    return {f"{lv['sku']}@{lv['location_id']}": lv["available"] for lv in shop.levels()}


def sent(shop) -> list[tuple[str, int]]:
    """(sku, available) of every level the shop applied, in order."""
    return [
        (r["body"]["sku"], r["body"]["available"])
        for r in shop.requests
        if r["outcome"] == "applied"
    ]


def tryton_row(sku: str, quantity: float) -> dict:
    return {
        "product": 1,
        "code": sku,
        "name": sku,
        "location": 3,
        "location_code": "STO",
        "quantity": quantity,
        "forecast_quantity": quantity,
    }


def confirm_inventory(tryton: TrytonInstance, counts: dict[str, float]) -> None:
    """Count stock on STO in Tryton: a confirmed stock.inventory sets these quantities."""
    from connectors.tryton import TrytonConnector

    products = tryton.ids["products"]
    lines = [{"product": products[sku], "quantity": float(q)} for sku, q in counts.items()]
    with TrytonConnector(tryton.options()) as erp:
        [inventory] = erp.execute(
            "stock.inventory",
            "create",
            [{"location": tryton.ids["storage"], "lines": [["create", lines]]}],
        )
        erp.execute("stock.inventory", "confirm", [inventory])


# -- end to end, against the real ERP ----------------------------------------------------------


@pytest.mark.tryton
def test_first_run_sends_every_level_then_only_changed_ones(tryton, shop, tmp_path):
    eng = Engine(state=tmp_path / "state.db")
    run_vars = {"tryton_url": tryton.url, "shop_url": shop.url, "safety_stock": "5"}

    first = eng.run(FLOW, vars=run_vars)
    assert first.exit_code == 0, first
    assert first.counts["done"] == 3 and first.counts["read"] == 3
    # Tryton's quantities on STO minus the buffer; the service (gift wrap) is not stock
    stock = tryton.ids["stock"]
    assert shop_levels(shop) == {f"{sku}@1": qty - 5 for sku, qty in stock.items()}
    assert sorted(sent(shop)) == sorted((sku, qty - 5) for sku, qty in stock.items())

    # a stock count in the ERP changes one level: only that one is sent, as an update
    confirm_inventory(tryton, {"MUG-LOGO": 33})
    shop.clear_requests()
    second = eng.run(FLOW, vars=run_vars)
    assert second.counts["done"] == 1 and second.counts["skipped"] == 2
    assert [(r["body"]["sku"], r["body"]["available"]) for r in shop.requests] == [("MUG-LOGO", 28)]
    assert shop.requests[0]["idempotency_key"].startswith("inventory_level:1:MUG-LOGO@STO#")
    assert shop_levels(shop)["MUG-LOGO@1"] == 28

    # nothing changed: nothing is sent
    shop.clear_requests()
    third = eng.run(FLOW, vars=run_vars)
    assert third.counts["skipped"] == 3 and third.exit_code == 0
    assert shop.requests == []

    # below the buffer the shop shows 0, never a negative number; the mug goes back to
    # its first level, which must be applied again (not answered from the shop's store)
    confirm_inventory(tryton, {"CAP-RED": 3, "MUG-LOGO": 40})
    fourth = eng.run(FLOW, vars=run_vars)
    assert fourth.counts["done"] == 2 and fourth.counts["skipped"] == 1
    assert sorted(sent(shop)) == [("CAP-RED", 0), ("MUG-LOGO", 35)]
    assert shop_levels(shop) == {"TSHIRT-BLK-M@1": 95, "MUG-LOGO@1": 35, "CAP-RED@1": 0}


def test_a_location_the_shop_does_not_know_is_dead_lettered_with_the_reason(
    tmp_path, shop, monkeypatch
):
    # the shipped flow's steps, fed the records its Tryton source would read
    monkeypatch.setenv("TRYTON_PASSWORD", "not used: records are given")
    rows = [tryton_row("A-1", 4.0), {**tryton_row("A-2", 6.0), "location_code": "BACK"}]
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(FLOW, records=rows, vars={"shop_url": shop.url})
    assert result.exit_code == 1
    assert result.counts["dead_lettered"] == 1 and result.counts["done"] == 1
    store = eng.store()
    [letter] = store.dead_letters()
    store.close()
    assert letter.step == "shop_inventory_level" and "BACK" in letter.message, letter.message
    assert sent(shop) == [("A-1", 4)]


def test_a_new_generation_sends_every_level_again(tmp_path, shop, monkeypatch):
    monkeypatch.setenv("TRYTON_PASSWORD", "not used: records are given")
    rows = [tryton_row("A-1", 4.0), tryton_row("A-2", 6.0)]
    eng = Engine(state=tmp_path / "state.db")
    eng.run(FLOW, records=rows, vars={"shop_url": shop.url})
    set_level(shop, sku="A-1", location_id=1, available=99)  # edited in the shop by hand
    shop.clear_requests()
    assert eng.run(FLOW, records=rows, vars={"shop_url": shop.url}).counts["skipped"] == 2
    assert shop.requests == []  # the flow follows the ERP, not the shop
    again = eng.run(FLOW, records=rows, vars={"shop_url": shop.url, "generation": "2"})
    assert again.counts["done"] == 2
    assert shop_levels(shop) == {"A-1@1": 4, "A-2@1": 6}


# -- the engine's idempotency with absolute levels (no ERP needed) ---------------------------

LEVELS_FLOW = """
flow: levels
connections:
  shop:
    connector: http
    base_url: "{{ vars.url }}"
    auth: {type: header, name: X-Shopify-Access-Token, value: "${env:WEBSHOP_TOKEN}"}
source: {connector: file, path: levels.ndjson, key: "{{ record.code }}"}
steps:
  - map: tryton_stock_to_inventory_level
  - validate: inventory_level
  - name: push
    send:
      connection: shop
      path: /inventory_levels/set
      idempotency_key: "inventory_level:{{ record.sku }}@{{ record.location.id }}"
      on_change: update
      body:
        sku: "{{ record.sku }}"
        location_id: "{{ record.location.id }}"
        available: "{{ record.available }}"
"""


def test_a_level_that_goes_back_and_forth_reaches_the_shop_every_time(tmp_path, shop):
    # 10, 9, 10, 9: each change is a new operation with its own Idempotency-Key, so a
    # shop that honours the header applies it instead of answering from its store
    flow = write_flow(tmp_path, LEVELS_FLOW)
    eng = Engine(state=tmp_path / "state.db")
    seen = []
    for quantity in (10, 9, 10, 9, 9):
        write_ndjson(tmp_path / "levels.ndjson", [tryton_row("A-1", float(quantity))])
        result = eng.run(flow, vars={"url": shop.url})
        assert result.exit_code == 0, result
        seen.append(shop_levels(shop)["A-1@STO"])
    assert seen == [10, 9, 10, 9, 9]
    assert [r["outcome"] for r in shop.requests] == ["applied"] * 4  # the last run sent nothing
    keys = [r["idempotency_key"] for r in shop.requests]
    assert len(set(keys)) == 4


def test_the_safety_stock_must_be_a_number(tmp_path, shop):
    flow = write_flow(tmp_path, LEVELS_FLOW.replace("flow: levels", "flow: levels\nvars: {}"))
    write_ndjson(tmp_path / "levels.ndjson", [tryton_row("A-1", 10.0)])
    result = Engine(state=tmp_path / "state.db").run(
        flow, vars={"url": shop.url, "safety_stock": "five"}
    )
    assert result.counts["dead_lettered"] == 1 and shop.requests == []


# -- the example web shop ------------------------------------------------------------------


def test_web_shop_sets_absolute_levels_and_reads_them_back(shop):
    assert set_level(shop, sku="A-1", location_id=1, available=7).status_code == 200
    answer = set_level(shop, sku="A-1", location_id=1, available=4).json()
    assert answer["inventory_level"]["available"] == 4
    assert set_level(shop, inventory_item_id=808950810, location_id=2, available=0).is_success
    listed = httpx.get(
        f"{shop.url}/inventory_levels?location_ids=1", headers={webshop.TOKEN_HEADER: TOKEN}
    ).json()["inventory_levels"]
    assert [(lv["sku"], lv["available"]) for lv in listed] == [("A-1", 4)]


def test_web_shop_honours_idempotency_keys(shop):
    first = set_level(shop, "k1", sku="A-1", location_id=1, available=7)
    set_level(shop, sku="A-1", location_id=1, available=3)  # changed in the shop meanwhile
    repeat = set_level(shop, "k1", sku="A-1", location_id=1, available=7)
    assert repeat.status_code == 200 and repeat.headers["Idempotent-Replayed"] == "true"
    assert repeat.json() == first.json()
    assert shop_levels(shop) == {"A-1@1": 3}  # the repeat changed nothing
    assert set_level(shop, "k1", sku="A-1", location_id=1, available=8).status_code == 422


def test_web_shop_refuses_what_it_cannot_use_with_the_reason(shop):
    bad = set_level(shop, sku="A-1", location_id=1, available="7")
    assert bad.status_code == 422 and "whole number" in bad.json()["errors"]
    assert set_level(shop, location_id=1, available=1).status_code == 422
    no_token = httpx.post(f"{shop.url}/inventory_levels/set", json={})
    assert no_token.status_code == 401
    assert shop.levels() == []


def test_web_shop_keeps_levels_and_keys_in_its_data_file(tmp_path):
    data = tmp_path / "shop.json"
    with webshop.WebShop(data=data) as first:
        httpx.post(
            f"{first.url}/inventory_levels/set",
            json={"sku": "A-1", "location_id": 1, "available": 5},
            headers={"Idempotency-Key": '"k1"'},
        )
    with webshop.WebShop(data=data) as again:
        assert [lv["available"] for lv in again.levels()] == [5]
        repeat = httpx.post(
            f"{again.url}/inventory_levels/set",
            json={"sku": "A-1", "location_id": 1, "available": 5},
            headers={"Idempotency-Key": '"k1"'},
        )
        assert repeat.headers.get("Idempotent-Replayed") == "true"
    assert json.loads(data.read_text())["levels"][0]["sku"] == "A-1"


def test_serve_script_prints_its_url_and_serves(tmp_path):
    import subprocess

    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples/webshop/serve.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/inventory_levels").json() == {"inventory_levels": []}
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_flow_is_valid(monkeypatch):
    monkeypatch.setenv("TRYTON_PASSWORD", "x")
    monkeypatch.setenv("WEBSHOP_TOKEN", "y")
    assert [p for p in Engine().check(Path(FLOW)) if p.severity == "error"] == []
