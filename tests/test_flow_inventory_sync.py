"""flows/inventory_sync.yaml (Shopify) and inventory_sync_woocommerce.yaml: ERP stock to the shop.

The end-to-end tests run the shipped flows, unchanged, against a real Tryton
(tests/support/tryton.py) and the example web shop (examples/webshop/serve.py), which
takes what Shopify's and WooCommerce's APIs take and refuses what they refuse. What
reached the shop is read back from the shop's API. The maps (SKU -> shop ids, ERP
location -> shop location) are files the test writes, as a user would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine import Engine
from tests.conftest import ROOT, flowyard, write_flow
from tests.support.webshop import (
    API,
    ITEMS,
    STORE,
    TOKEN,
    WAREHOUSE,
    catalog,
    read_levels,
    read_woo_stock,
    webshop,
    write_item_map,
    write_location_map,
    write_woo_item_map,
)

pytest.register_assert_rewrite("tests.support.tryton")
from tests.support.tryton import TrytonInstance  # noqa: E402

pytest_plugins = ["tests.support.tryton"]

FLOW = ROOT / "flows" / "inventory_sync.yaml"
WOO_FLOW = ROOT / "flows" / "inventory_sync_woocommerce.yaml"
ERP_SKUS = ("TSHIRT-BLK-M", "MUG-LOGO", "CAP-RED")  # the demo ERP's goods


@pytest.fixture
def shop(monkeypatch):
    """The example web shop on 127.0.0.1 selling the ERP's SKUs, requiring a token."""
    monkeypatch.setenv("WEBSHOP_TOKEN", TOKEN)
    monkeypatch.setenv("WOO_CONSUMER_KEY", "ck_test")
    monkeypatch.setenv("WOO_CONSUMER_SECRET", TOKEN)
    with webshop.WebShop(token=TOKEN, catalog=catalog()) as running:
        yield running


@pytest.fixture
def maps(tmp_path):
    """The item and location maps, as files: every SKU, STO at the warehouse."""
    write_item_map(tmp_path / "items.csv", ERP_SKUS)
    write_location_map(tmp_path / "locations.csv", STO=WAREHOUSE)
    return tmp_path


def shop_vars(shop, maps: Path, **extra) -> dict:
    return {
        "shop_url": shop.url,
        "item_map": str(maps / "items.csv"),
        "location_map": str(maps / "locations.csv"),
        **extra,
    }


def sets(shop) -> list[dict]:
    """The bodies of every inventory_levels/set request the shop received."""
    return [r["body"] for r in shop.requests if r["path"].endswith("/inventory_levels/set.json")]


def tryton_row(sku: str, quantity: float, location: str = "STO") -> dict:
    """A record as the tryton source yields it, for tests that need no ERP."""
    return {
        "product": 1,
        "code": sku,
        "name": sku,
        "location": 3,
        "location_code": location,
        "quantity": quantity,
        "forecast_quantity": quantity,
    }


def dead_letters(eng: Engine) -> list:
    store = eng.store()
    try:
        return store.dead_letters()
    finally:
        store.close()


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


# -- Shopify, end to end against the real ERP ------------------------------------------------


@pytest.mark.tryton
def test_levels_arrive_as_item_location_and_available_then_only_changed_ones(
    tryton, shop, maps, tmp_path
):
    eng = Engine(state=tmp_path / "state.db")
    run_vars = shop_vars(shop, maps, tryton_url=tryton.url, safety_stock="5")

    first = eng.run(FLOW, vars=run_vars)
    assert first.exit_code == 0, first
    assert first.counts["read"] == 3 and first.counts["done"] == 3
    # Shopify's shape, nothing else: the item and location by the shop's ids
    assert all(
        set(body) == {"inventory_item_id", "location_id", "available"} for body in sets(shop)
    )
    assert sorted(b["inventory_item_id"] for b in sets(shop)) == sorted(
        ITEMS[sku][2] for sku in ERP_SKUS
    )
    # Tryton's quantities on STO minus the buffer, read back from the shop's API
    stock = tryton.ids["stock"]
    assert read_levels(shop) == {(sku, WAREHOUSE): qty - 5 for sku, qty in stock.items()}

    # a stock count in the ERP changes one level: only that one is sent, as an update
    confirm_inventory(tryton, {"MUG-LOGO": 33})
    shop.clear_requests()
    second = eng.run(FLOW, vars=run_vars)
    assert second.counts["done"] == 1 and second.counts["skipped"] == 2
    assert sets(shop) == [
        {"inventory_item_id": ITEMS["MUG-LOGO"][2], "location_id": WAREHOUSE, "available": 28}
    ]
    assert shop.requests[0]["idempotency_key"].startswith("inventory_level:1:MUG-LOGO@STO#")

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
    assert [r["outcome"] for r in shop.requests] == ["applied", "applied"]
    assert read_levels(shop) == {
        ("TSHIRT-BLK-M", WAREHOUSE): 95,
        ("MUG-LOGO", WAREHOUSE): 35,
        ("CAP-RED", WAREHOUSE): 0,
    }


@pytest.mark.tryton
def test_an_sku_the_item_map_lacks_is_dead_lettered_with_its_reason_and_the_others_go(
    tryton, shop, maps, tmp_path
):
    write_item_map(maps / "items.csv", ("TSHIRT-BLK-M", "MUG-LOGO"))
    eng = Engine(state=tmp_path / "state.db")
    run_vars = shop_vars(shop, maps, tryton_url=tryton.url)

    first = eng.run(FLOW, vars=run_vars)
    assert first.exit_code == 1
    assert first.counts["done"] == 2 and first.counts["dead_lettered"] == 1
    [letter] = dead_letters(eng)
    assert letter.record_key == "CAP-RED@STO" and letter.step == "shop_item"
    assert letter.message.endswith(
        f"SKU CAP-RED has no inventory item in the shop: add it to the item map "
        f"{maps / 'items.csv'} (sku,inventory_item_id) or create the variant in the shop"
    ), letter.message
    assert set(read_levels(shop)) == {("TSHIRT-BLK-M", WAREHOUSE), ("MUG-LOGO", WAREHOUSE)}

    # the fix is data: the row goes into the map, the flow stays as it is
    write_item_map(maps / "items.csv", ERP_SKUS)
    shop.clear_requests()
    second = eng.run(FLOW, vars=run_vars)
    assert second.exit_code == 0 and second.counts["done"] == 1 and second.counts["skipped"] == 2
    assert [b["inventory_item_id"] for b in sets(shop)] == [ITEMS["CAP-RED"][2]]
    assert read_levels(shop)[("CAP-RED", WAREHOUSE)] == tryton.ids["stock"]["CAP-RED"]
    assert dead_letters(eng) == []  # resolved by the run that delivered it


@pytest.mark.tryton
def test_editing_the_location_map_file_changes_where_levels_go(tryton, shop, maps, tmp_path):
    eng = Engine(state=tmp_path / "state.db")
    run_vars = shop_vars(shop, maps, tryton_url=tryton.url)
    assert eng.run(FLOW, vars=run_vars).counts["done"] == 3
    stock = tryton.ids["stock"]
    assert read_levels(shop) == {(sku, WAREHOUSE): qty for sku, qty in stock.items()}

    write_location_map(maps / "locations.csv", STO=STORE)  # STO now stocks the store
    shop.clear_requests()
    moved = eng.run(FLOW, vars=run_vars)
    assert moved.exit_code == 0 and moved.counts["done"] == 3
    assert {b["location_id"] for b in sets(shop)} == {STORE}
    levels = read_levels(shop)
    assert {sku: levels[(sku, STORE)] for sku in stock} == stock

    shop.clear_requests()  # and a run with nothing changed sends nothing
    assert eng.run(FLOW, vars=run_vars).counts["skipped"] == 3 and shop.requests == []


@pytest.mark.tryton
def test_item_map_written_from_the_shop_drives_the_sync(tryton, shop, tmp_path):
    # the shop sells no caps yet: the map the script writes has no CAP-RED
    shop.stop()
    with webshop.WebShop(
        token=TOKEN, catalog=catalog(("TSHIRT-BLK-M", "TSHIRT-BLK-L", "MUG-LOGO"))
    ) as small:
        items = tmp_path / "items.csv"
        written = subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples/inventory_sync/item_map_from_shop.py"),
                "--shop-url",
                small.url,
                "--out",
                str(items),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert written.returncode == 0, written.stderr
        assert written.stdout.strip() == f"wrote 3 items to {items}"
        assert items.read_text().splitlines() == [
            "sku,inventory_item_id,product_id,variant_id,title",
            "TSHIRT-BLK-M,45000000011,8000000001,40000000011,T-shirt black / M",
            "TSHIRT-BLK-L,45000000012,8000000001,40000000012,T-shirt black / L",
            "MUG-LOGO,45000000021,8000000002,40000000021,Logo mug",
        ]
        write_location_map(tmp_path / "locations.csv", STO=WAREHOUSE)
        eng = Engine(state=tmp_path / "state.db")
        result = eng.run(FLOW, vars=shop_vars(small, tmp_path, tryton_url=tryton.url))
        assert result.counts["done"] == 2 and result.counts["dead_lettered"] == 1
        assert set(read_levels(small)) == {("TSHIRT-BLK-M", WAREHOUSE), ("MUG-LOGO", WAREHOUSE)}


# -- Shopify, the flow's steps fed the records its Tryton source would read ------------------


@pytest.fixture
def given_records(monkeypatch):
    monkeypatch.setenv("TRYTON_PASSWORD", "not used: records are given")


def test_a_flow_sending_the_sku_is_refused_by_the_shop(tmp_path, shop, maps, given_records):
    old = FLOW.read_text().replace(
        'inventory_item_id: "{{ record.item_rows[0].inventory_item_id | int }}"',
        'sku: "{{ record.sku }}"',
    )
    assert old != FLOW.read_text()
    flow = write_flow(tmp_path, old.replace("[../mappings]", f"[{ROOT / 'mappings'}]"))
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(flow, records=[tryton_row("MUG-LOGO", 4.0)], vars=shop_vars(shop, maps))
    assert result.exit_code == 1 and result.counts["dead_lettered"] == 1
    [letter] = dead_letters(eng)
    assert letter.step == "shop_inventory_level" and "400" in letter.message
    assert "inventory_item_id" in letter.message and "Required parameter missing" in letter.message
    assert [r["status"] for r in shop.requests] == [400]
    assert read_levels(shop) == {}


def test_an_erp_location_the_location_map_lacks_is_dead_lettered(
    tmp_path, shop, maps, given_records
):
    rows = [tryton_row("MUG-LOGO", 4.0), tryton_row("CAP-RED", 6.0, location="BACK")]
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(FLOW, records=rows, vars=shop_vars(shop, maps))
    assert result.exit_code == 1 and result.counts == {
        **result.counts,
        "done": 1,
        "dead_lettered": 1,
    }
    [letter] = dead_letters(eng)
    assert letter.step == "shop_location" and letter.message.endswith(
        f"ERP location BACK has no shop location: add it to the location map "
        f"{maps / 'locations.csv'} (erp_location,shop_location_id)"
    ), letter.message
    assert read_levels(shop) == {("MUG-LOGO", WAREHOUSE): 4}


def test_what_the_maps_get_wrong_is_dead_lettered_with_what_to_fix(
    tmp_path, shop, maps, given_records
):
    write_item_map(
        maps / "items.csv",
        ("MUG-LOGO",),
        extra_rows="MUG-LOGO,45000000099\nCAP-RED,cap\nTSHIRT-BLK-M,\n",
    )
    rows = [tryton_row("MUG-LOGO", 4.0), tryton_row("CAP-RED", 2.0), tryton_row("TSHIRT-BLK-M", 1)]
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(FLOW, records=rows, vars=shop_vars(shop, maps))
    # an empty inventory_item_id says the shop does not sell the SKU: filtered, not sent
    assert result.counts["filtered"] == 1 and result.counts["dead_lettered"] == 2
    reasons = {letter.record_key: letter.message for letter in dead_letters(eng)}
    assert "SKU MUG-LOGO is on 2 rows of the item map" in reasons["MUG-LOGO@STO"]
    assert "gives inventory_item_id 'cap', which is not a Shopify id" in reasons["CAP-RED@STO"]
    assert shop.requests == []


def test_an_item_id_the_shop_does_not_have_is_dead_lettered_with_its_answer(
    tmp_path, shop, maps, given_records
):
    write_item_map(maps / "items.csv", ("MUG-LOGO",), extra_rows="CAP-RED,45000000099\n")
    rows = [tryton_row("MUG-LOGO", 4.0), tryton_row("CAP-RED", 2.0)]
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(FLOW, records=rows, vars=shop_vars(shop, maps))
    assert result.counts["done"] == 1 and result.counts["dead_lettered"] == 1
    [letter] = dead_letters(eng)
    assert letter.step == "shop_inventory_level" and "404" in letter.message, letter.message


def test_a_level_that_goes_back_and_forth_reaches_the_shop_every_time(
    tmp_path, shop, maps, given_records
):
    # 10, 9, 10, 9: each change is a new operation with its own Idempotency-Key, so a
    # shop that honours the header applies it instead of answering from its store
    eng = Engine(state=tmp_path / "state.db")
    seen = []
    for quantity in (10, 9, 10, 9, 9):
        result = eng.run(
            FLOW, records=[tryton_row("MUG-LOGO", quantity)], vars=shop_vars(shop, maps)
        )
        assert result.exit_code == 0, result
        seen.append(read_levels(shop)[("MUG-LOGO", WAREHOUSE)])
    assert seen == [10, 9, 10, 9, 9]
    applied = [r for r in shop.requests if r["method"] == "POST"]
    assert [r["outcome"] for r in applied] == ["applied"] * 4  # the last run sent nothing
    assert len({r["idempotency_key"] for r in applied}) == 4


def test_a_new_generation_sends_every_level_again(tmp_path, shop, maps, given_records):
    rows = [tryton_row("MUG-LOGO", 4.0), tryton_row("CAP-RED", 6.0)]
    eng = Engine(state=tmp_path / "state.db")
    eng.run(FLOW, records=rows, vars=shop_vars(shop, maps))
    shop.clear_requests()
    assert eng.run(FLOW, records=rows, vars=shop_vars(shop, maps)).counts["skipped"] == 2
    assert shop.requests == []
    again = eng.run(FLOW, records=rows, vars=shop_vars(shop, maps, generation="2"))
    assert again.counts["done"] == 2 and len(sets(shop)) == 2


def test_the_safety_stock_must_be_a_number(tmp_path, shop, maps, given_records):
    result = Engine(state=tmp_path / "state.db").run(
        FLOW, records=[tryton_row("MUG-LOGO", 10.0)], vars=shop_vars(shop, maps, safety_stock="x")
    )
    assert result.counts["dead_lettered"] == 1 and shop.requests == []


# -- WooCommerce ----------------------------------------------------------------------------------


@pytest.mark.tryton
def test_woocommerce_stock_is_set_on_the_product_or_its_variation(tryton, shop, tmp_path):
    write_woo_item_map(tmp_path / "woo.csv", ("TSHIRT-BLK-M", "MUG-LOGO"))
    eng = Engine(state=tmp_path / "state.db")
    run_vars = {
        "tryton_url": tryton.url,
        "shop_url": shop.url,
        "item_map": str(tmp_path / "woo.csv"),
        "safety_stock": "2",
    }
    first = eng.run(WOO_FLOW, vars=run_vars)
    assert first.counts["done"] == 2 and first.counts["dead_lettered"] == 1
    [letter] = dead_letters(eng)
    assert letter.message.endswith(
        f"SKU CAP-RED has no product in the shop: add it to the item map {tmp_path / 'woo.csv'} "
        "(sku,product_id,variation_id) or create the product in the shop"
    ), letter.message
    tshirt, mug = ITEMS["TSHIRT-BLK-M"], ITEMS["MUG-LOGO"]
    assert sorted((r["method"], r["path"], r["body"]["stock_quantity"]) for r in shop.requests) == [
        ("PUT", f"/wp-json/wc/v3/products/{tshirt[0]}/variations/{tshirt[1]}", 98),
        ("PUT", f"/wp-json/wc/v3/products/{mug[0]}", 38),
    ]
    assert all(r["body"]["manage_stock"] is True for r in shop.requests)
    assert read_woo_stock(shop) == {"TSHIRT-BLK-M": 98, "MUG-LOGO": 38}

    confirm_inventory(tryton, {"MUG-LOGO": 12})
    shop.clear_requests()
    second = eng.run(WOO_FLOW, vars=run_vars)
    assert second.counts["done"] == 1 and second.counts["skipped"] == 1
    assert [r["body"]["stock_quantity"] for r in shop.requests if r["method"] == "PUT"] == [10]
    shop.clear_requests()
    assert eng.run(WOO_FLOW, vars=run_vars).counts["skipped"] == 2
    assert shop.requests == []
    assert read_woo_stock(shop) == {"TSHIRT-BLK-M": 98, "MUG-LOGO": 10}


def test_woocommerce_item_map_written_from_the_shop(shop, tmp_path):
    out = tmp_path / "woo.csv"
    written = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/inventory_sync/item_map_from_shop.py"),
            "--woocommerce",
            "--shop-url",
            shop.url,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert written.returncode == 0, written.stderr
    assert out.read_text().splitlines() == [
        "sku,product_id,variation_id,title",
        "TSHIRT-BLK-M,8000000001,40000000011,T-shirt black - M",
        "TSHIRT-BLK-L,8000000001,40000000012,T-shirt black - L",
        "MUG-LOGO,8000000002,,Logo mug",
        "CAP-RED,8000000003,,Red cap",
    ]


def test_item_map_script_reports_a_shop_that_refuses_it(shop, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBSHOP_TOKEN", "wrong")
    refused = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/inventory_sync/item_map_from_shop.py"),
            "--shop-url",
            shop.url,
            "--out",
            str(tmp_path / "items.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "the shop answered 401" in refused.stderr
    assert TOKEN not in refused.stderr and not (tmp_path / "items.csv").exists()


@pytest.mark.parametrize("flow", [FLOW, WOO_FLOW], ids=["shopify", "woocommerce"])
def test_flow_is_valid(flow, monkeypatch):
    for name in ("TRYTON_PASSWORD", "WEBSHOP_TOKEN", "WOO_CONSUMER_KEY", "WOO_CONSUMER_SECRET"):
        monkeypatch.setenv(name, "x")
    assert [p for p in Engine().check(Path(flow)) if p.severity != "info"] == []


def test_the_shipped_location_map_names_a_location_of_the_demo_shop():
    import csv

    rows = list(csv.DictReader((ROOT / "examples/inventory_sync/shop_locations.csv").open()))
    demo = webshop.load_catalog(None)
    assert {int(r["shop_location_id"]) for r in rows} <= {loc["id"] for loc in demo["locations"]}
    assert API.startswith("/admin/api/")


# -- the example's story, on the command line -------------------------------------------------


@pytest.mark.tryton
def test_the_examples_story_on_the_command_line(tryton, tmp_path, monkeypatch):
    """examples/inventory_sync/README.md: the demo shop lacks the cap; create it, go on."""
    monkeypatch.setenv("WEBSHOP_TOKEN", TOKEN)
    env = {"FLOWYARD_STATE": str(tmp_path / "state.db")}
    items = tmp_path / "shop_items.csv"
    script = str(ROOT / "examples/inventory_sync/item_map_from_shop.py")
    with webshop.WebShop(token=TOKEN) as demo:  # the demo catalogue and location map
        run = [
            "run",
            str(FLOW),
            "--var",
            "safety_stock=2",
            "--var",
            f"tryton_url={tryton.url}",
            "--var",
            f"shop_url={demo.url}",
            "--var",
            f"item_map={items}",
        ]
        export = [sys.executable, script, "--shop-url", demo.url, "--out", str(items)]
        assert subprocess.run(export, capture_output=True, timeout=60).returncode == 0
        first = flowyard(*run, env=env)
        assert first.returncode == 1, first.stderr
        assert "read 3  dead_lettered 1  done 2" in first.stdout
        shown = flowyard("dlq", "show", "1", env=env)
        assert (
            f"message: SKU CAP-RED has no inventory item in the shop: add it to the item map "
            f"{items} (sku,inventory_item_id) or create the variant in the shop"
        ) in shown.stdout

        created = httpx.post(
            f"{demo.url}{API}/products.json",
            json={
                "product": {
                    "title": "Red cap",
                    "variants": [{"sku": "CAP-RED", "inventory_management": "shopify"}],
                }
            },
            headers={webshop.TOKEN_HEADER: TOKEN},
        )
        assert created.status_code == 201
        assert subprocess.run(export, capture_output=True, timeout=60).returncode == 0
        second = flowyard(*run, env=env)
        assert second.returncode == 0 and "read 3  done 1  skipped 2" in second.stdout
        assert flowyard("dlq", "list", env=env).stdout.strip() == "(none)"
        third = flowyard(*run, env=env)
        assert third.returncode == 0 and "read 3  skipped 3" in third.stdout
        levels = {lv["inventory_item_id"]: lv["available"] for lv in demo.levels()}
        assert sorted(levels.values()) == sorted(q - 2 for q in tryton.ids["stock"].values())
