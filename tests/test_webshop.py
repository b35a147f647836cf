"""The example web shop (examples/webshop/serve.py) takes what the real APIs take.

A flow tested against a shop more forgiving than the real one passes here and fails
there, so the local shop refuses what Shopify's inventory API and WooCommerce's product
API refuse: an SKU instead of the inventory item id, ids the shop does not have,
quantities that are not whole numbers, missing credentials. Every test talks to a shop
started on 127.0.0.1 over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT
from tests.support.webshop import (
    API,
    ITEMS,
    STORE,
    TOKEN,
    WAREHOUSE,
    WOO,
    catalog,
    read_levels,
    shopify_headers,
    webshop,
    woo_auth,
)

MUG_ITEM = ITEMS["MUG-LOGO"][2]


@pytest.fixture
def shop():
    with webshop.WebShop(token=TOKEN, catalog=catalog()) as running:
        yield running


def set_level(shop, key=None, **body) -> httpx.Response:
    headers = shopify_headers()
    if key is not None:
        headers["Idempotency-Key"] = f'"{key}"'
    return httpx.post(f"{shop.url}{API}/inventory_levels/set.json", json=body, headers=headers)


def woo_put(shop, path, body, key=None) -> httpx.Response:
    headers = woo_auth()
    if key is not None:
        headers["Idempotency-Key"] = f'"{key}"'
    return httpx.put(f"{shop.url}{WOO}{path}", json=body, headers=headers)


# -- Shopify: inventory levels ------------------------------------------------------------------


def test_a_level_is_set_by_inventory_item_and_location_and_read_back(shop):
    answer = set_level(shop, inventory_item_id=MUG_ITEM, location_id=WAREHOUSE, available=7)
    assert answer.status_code == 200
    level = answer.json()["inventory_level"]
    assert (level["inventory_item_id"], level["location_id"], level["available"]) == (
        MUG_ITEM,
        WAREHOUSE,
        7,
    )
    assert level["updated_at"].endswith("+00:00")
    set_level(shop, inventory_item_id=MUG_ITEM, location_id=WAREHOUSE, available=-2)  # oversold
    big = ITEMS["CAP-RED"][2]  # above 2**53: kept exactly
    assert set_level(shop, inventory_item_id=big, location_id=STORE, available=0).is_success
    assert read_levels(shop) == {("MUG-LOGO", WAREHOUSE): -2, ("CAP-RED", STORE): 0}
    by_item = httpx.get(
        f"{shop.url}{API}/inventory_levels.json",
        params={"inventory_item_ids": str(big)},
        headers=shopify_headers(),
    ).json()["inventory_levels"]
    assert [(lv["inventory_item_id"], lv["location_id"]) for lv in by_item] == [(big, STORE)]


def test_an_sku_instead_of_the_inventory_item_id_is_refused_as_shopify_does(shop):
    answer = set_level(shop, sku="MUG-LOGO", location_id=WAREHOUSE, available=7)
    assert answer.status_code == 400
    assert answer.json() == {
        "errors": {"inventory_item_id": "Required parameter missing or invalid"}
    }
    with_both = set_level(
        shop, sku="MUG-LOGO", inventory_item_id=MUG_ITEM, location_id=WAREHOUSE, available=7
    )
    assert with_both.status_code == 422 and "sku" in with_both.json()["errors"]
    assert shop.levels() == []


@pytest.mark.parametrize(
    ("body", "wrong"),
    [
        ({"location_id": WAREHOUSE, "available": 1}, "inventory_item_id"),
        (
            {"inventory_item_id": str(MUG_ITEM), "location_id": WAREHOUSE, "available": 1},
            "inventory_item_id",
        ),
        ({"inventory_item_id": MUG_ITEM, "available": 1}, "location_id"),
        ({"inventory_item_id": MUG_ITEM, "location_id": WAREHOUSE, "available": "7"}, "available"),
        ({"inventory_item_id": MUG_ITEM, "location_id": WAREHOUSE, "available": 7.5}, "available"),
        ({"inventory_item_id": MUG_ITEM, "location_id": WAREHOUSE, "available": True}, "available"),
    ],
    ids=["no-item", "item-as-text", "no-location", "text", "fraction", "bool"],
)
def test_a_missing_or_malformed_parameter_is_400_naming_it(shop, body, wrong):
    answer = set_level(shop, **body)
    assert answer.status_code == 400
    assert answer.json() == {"errors": {wrong: "Required parameter missing or invalid"}}
    assert shop.levels() == []


def test_an_item_or_location_the_shop_does_not_have_is_404(shop):
    unknown_item = set_level(
        shop, inventory_item_id=45_000_000_099, location_id=WAREHOUSE, available=1
    )
    unknown_location = set_level(shop, inventory_item_id=MUG_ITEM, location_id=1, available=1)
    assert unknown_item.status_code == unknown_location.status_code == 404
    assert unknown_item.json() == {"errors": "Not Found"}


def test_an_item_whose_inventory_is_not_tracked_is_422(tmp_path):
    untracked = catalog(("MUG-LOGO",))
    untracked["products"][0]["variants"][0]["inventory_management"] = None
    with webshop.WebShop(catalog=untracked) as shop:
        answer = set_level(shop, inventory_item_id=MUG_ITEM, location_id=WAREHOUSE, available=1)
    assert answer.status_code == 422
    assert answer.json() == {"errors": ["Inventory item does not have inventory tracking enabled"]}


def test_listing_levels_needs_items_or_locations(shop):
    answer = httpx.get(f"{shop.url}{API}/inventory_levels.json", headers=shopify_headers())
    assert answer.status_code == 400


def test_the_access_token_is_required(shop):
    body = {"inventory_item_id": MUG_ITEM, "location_id": WAREHOUSE, "available": 1}
    for headers in ({}, {webshop.TOKEN_HEADER: "wrong"}):
        answer = httpx.post(
            f"{shop.url}{API}/inventory_levels/set.json", json=body, headers=headers
        )
        assert answer.status_code == 401 and "Invalid API key or access token" in answer.text
    assert httpx.get(f"{shop.url}{API}/locations.json").status_code == 401
    assert shop.levels() == []


def test_only_the_admin_api_paths_exist(shop):
    old_path = httpx.post(
        f"{shop.url}/inventory_levels/set.json",
        json={"inventory_item_id": MUG_ITEM, "location_id": WAREHOUSE, "available": 1},
        headers=shopify_headers(),
    )
    assert old_path.status_code == 404
    assert (
        httpx.get(f"{shop.url}{API}/inventory_levels", headers=shopify_headers()).status_code == 404
    )


# -- Shopify: products and locations ---------------------------------------------------------------


def test_products_list_variants_with_sku_and_inventory_item_page_by_page(shop):
    url, seen, pages = f"{shop.url}{API}/products.json?limit=2", [], 0
    while url:
        page = httpx.get(url, headers=shopify_headers())
        pages += 1
        for product in page.json()["products"]:
            for variant in product["variants"]:
                assert variant["product_id"] == product["id"]
                seen.append((variant["sku"], variant["inventory_item_id"], variant["id"]))
        url = page.links.get("next", {}).get("url")
    assert pages == 2
    assert sorted(seen) == sorted((sku, item, variant) for sku, (_, variant, item) in ITEMS.items())


def test_a_variants_inventory_quantity_is_the_sum_of_its_levels(shop):
    set_level(shop, inventory_item_id=MUG_ITEM, location_id=WAREHOUSE, available=7)
    set_level(shop, inventory_item_id=MUG_ITEM, location_id=STORE, available=2)
    products = httpx.get(f"{shop.url}{API}/products.json", headers=shopify_headers()).json()
    [mug] = [v for p in products["products"] for v in p["variants"] if v["sku"] == "MUG-LOGO"]
    assert mug["inventory_quantity"] == 9


def test_locations_are_listed(shop):
    answer = httpx.get(f"{shop.url}{API}/locations.json", headers=shopify_headers()).json()
    assert [(loc["id"], loc["name"]) for loc in answer["locations"]] == [
        (WAREHOUSE, "Warehouse"),
        (STORE, "Store Berlin"),
    ]


def test_a_created_product_gets_ids_and_untracked_inventory_unless_asked(shop):
    created = httpx.post(
        f"{shop.url}{API}/products.json",
        json={
            "product": {
                "title": "Wool scarf",
                "variants": [
                    {"sku": "SCARF-GRY", "inventory_management": "shopify"},
                    {"sku": "SCARF-RED"},
                ],
            }
        },
        headers=shopify_headers(),
    )
    assert created.status_code == 201
    tracked, untracked = created.json()["product"]["variants"]
    assert tracked["sku"] == "SCARF-GRY" and tracked["inventory_item_id"] not in {
        item for _, _, item in ITEMS.values()
    }
    ok = set_level(
        shop, inventory_item_id=tracked["inventory_item_id"], location_id=STORE, available=4
    )
    refused = set_level(
        shop, inventory_item_id=untracked["inventory_item_id"], location_id=STORE, available=4
    )
    assert (ok.status_code, refused.status_code) == (200, 422)
    no_title = httpx.post(
        f"{shop.url}{API}/products.json", json={"product": {}}, headers=shopify_headers()
    )
    assert no_title.status_code == 422


# -- idempotency, the request log, the data file -------------------------------------------------


def test_idempotency_keys_are_honoured(shop):
    body = {"inventory_item_id": MUG_ITEM, "location_id": WAREHOUSE, "available": 7}
    first = set_level(shop, "k1", **body)
    set_level(shop, **{**body, "available": 3})  # changed in the shop meanwhile
    repeat = set_level(shop, "k1", **body)
    assert repeat.status_code == 200 and repeat.headers["Idempotent-Replayed"] == "true"
    assert repeat.json() == first.json()
    assert read_levels(shop) == {("MUG-LOGO", WAREHOUSE): 3}  # the repeat changed nothing
    assert set_level(shop, "k1", **{**body, "available": 8}).status_code == 422
    refused = set_level(shop, "k2", sku="MUG-LOGO", location_id=WAREHOUSE, available=1)
    again = set_level(shop, "k2", sku="MUG-LOGO", location_id=WAREHOUSE, available=1)
    assert refused.status_code == again.status_code == 400  # a refusal is kept too
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [r["outcome"] for r in shop.requests if r["method"] == "POST"] == [
        "applied",
        "applied",
        "replayed",
        "refused",
        "refused",
        "replayed",
    ]


def test_the_request_log_lists_and_forgets_requests(shop):
    set_level(shop, "k1", inventory_item_id=MUG_ITEM, location_id=WAREHOUSE, available=1)
    [entry] = httpx.get(f"{shop.url}/_requests").json()["requests"]
    assert entry["path"] == f"{API}/inventory_levels/set.json" and entry["idempotency_key"] == "k1"
    assert entry["body"] == {
        "inventory_item_id": MUG_ITEM,
        "location_id": WAREHOUSE,
        "available": 1,
    }
    assert httpx.delete(f"{shop.url}/_requests").json() == {"cleared": True}
    assert shop.requests == []


def test_the_data_file_keeps_the_whole_shop(tmp_path):
    data = tmp_path / "shop.json"
    body = {"inventory_item_id": MUG_ITEM, "location_id": WAREHOUSE, "available": 5}
    with webshop.WebShop(data=data, catalog=catalog()) as first:
        httpx.post(
            f"{first.url}{API}/inventory_levels/set.json",
            json=body,
            headers={"Idempotency-Key": '"k1"'},
        )
        httpx.put(
            f"{first.url}{WOO}/products/{ITEMS['MUG-LOGO'][0]}",
            json={"manage_stock": True, "stock_quantity": 4},
        )
        httpx.post(
            f"{first.url}{API}/products.json",
            json={"product": {"title": "Scarf", "variants": [{"sku": "SCARF"}]}},
        )
    with webshop.WebShop(data=data, catalog={"locations": [], "products": []}) as again:
        assert [lv["available"] for lv in again.levels()] == [5]
        assert again.woo_stock() == {ITEMS["MUG-LOGO"][0]: 4}
        repeat = httpx.post(
            f"{again.url}{API}/inventory_levels/set.json",
            json=body,
            headers={"Idempotency-Key": '"k1"'},
        )
        assert repeat.headers.get("Idempotent-Replayed") == "true"
        products = httpx.get(f"{again.url}{API}/products.json").json()["products"]
        assert "SCARF" in {v["sku"] for p in products for v in p["variants"]}
    assert json.loads(data.read_text())["levels"][0]["inventory_item_id"] == MUG_ITEM


# -- WooCommerce ---------------------------------------------------------------------------------


def test_woocommerce_lists_simple_and_variable_products_with_variations(shop):
    products = httpx.get(f"{shop.url}{WOO}/products", headers=woo_auth())
    assert products.headers["X-WP-Total"] == "3"
    by_name = {p["name"]: p for p in products.json()}
    tshirt, mug = by_name["T-shirt black"], by_name["Logo mug"]
    assert (tshirt["type"], tshirt["variations"]) == (
        "variable",
        [ITEMS["TSHIRT-BLK-M"][1], ITEMS["TSHIRT-BLK-L"][1]],
    )
    assert (mug["type"], mug["sku"], mug["manage_stock"]) == ("simple", "MUG-LOGO", False)
    variations = httpx.get(
        f"{shop.url}{WOO}/products/{tshirt['id']}/variations", headers=woo_auth()
    ).json()
    assert [(v["sku"], v["parent_id"]) for v in variations] == [
        ("TSHIRT-BLK-M", tshirt["id"]),
        ("TSHIRT-BLK-L", tshirt["id"]),
    ]
    first = httpx.get(f"{shop.url}{WOO}/products", params={"per_page": 2}, headers=woo_auth())
    assert len(first.json()) == 2 and first.headers["X-WP-TotalPages"] == "2"
    assert httpx.get(first.links["next"]["url"], headers=woo_auth()).json()[0]["name"] == "Red cap"


def test_woocommerce_stock_is_set_on_a_product_or_a_variation(shop):
    tshirt_id, variation_id, _ = ITEMS["TSHIRT-BLK-M"]
    mug_id = ITEMS["MUG-LOGO"][0]
    simple = woo_put(shop, f"/products/{mug_id}", {"manage_stock": True, "stock_quantity": 12})
    assert simple.status_code == 200
    assert (simple.json()["stock_quantity"], simple.json()["stock_status"]) == (12, "instock")
    variation = woo_put(
        shop,
        f"/products/{tshirt_id}/variations/{variation_id}",
        {"manage_stock": True, "stock_quantity": 0},
    )
    assert (variation.json()["stock_quantity"], variation.json()["stock_status"]) == (
        0,
        "outofstock",
    )
    assert shop.woo_stock() == {variation_id: 0, mug_id: 12}
    # without manage_stock, WooCommerce keeps no quantity
    cap_id = ITEMS["CAP-RED"][0]
    unmanaged = woo_put(shop, f"/products/{cap_id}", {"stock_quantity": 5})
    assert unmanaged.json()["stock_quantity"] is None and cap_id not in shop.woo_stock()


def test_woocommerce_refuses_unknown_ids_and_bad_quantities(shop):
    tshirt_id, variation_id, _ = ITEMS["TSHIRT-BLK-M"]
    mug_id = ITEMS["MUG-LOGO"][0]
    body = {"manage_stock": True, "stock_quantity": 1}
    unknown = woo_put(shop, "/products/123", body)
    assert (
        unknown.status_code == 404
        and unknown.json()["code"] == "woocommerce_rest_product_invalid_id"
    )
    for path in (
        f"/products/{mug_id}/variations/{variation_id}",
        f"/products/{tshirt_id}/variations/1",
    ):
        wrong = woo_put(shop, path, body)
        assert wrong.status_code == 404
        assert wrong.json()["code"] == "woocommerce_rest_product_variation_invalid_id"
    text = woo_put(shop, f"/products/{mug_id}", {"manage_stock": True, "stock_quantity": "7"})
    assert text.status_code == 400 and text.json()["code"] == "rest_invalid_param"
    assert text.json()["data"]["params"] == {
        "stock_quantity": "stock_quantity is not of type integer."
    }
    other = woo_put(shop, f"/products/{mug_id}", {"regular_price": "9.00"})
    assert other.status_code == 400 and "regular_price" in other.json()["data"]["params"]
    assert shop.woo_stock() == {}


def test_woocommerce_needs_the_consumer_secret(shop):
    mug_id = ITEMS["MUG-LOGO"][0]
    url = f"{shop.url}{WOO}/products/{mug_id}"
    body = {"manage_stock": True, "stock_quantity": 1}
    missing = httpx.put(url, json=body)
    assert missing.status_code == 401 and missing.json()["code"] == "woocommerce_rest_cannot_view"
    wrong = httpx.put(url, json=body, auth=("ck_test", "wrong"))
    assert (
        wrong.status_code == 401 and wrong.json()["code"] == "woocommerce_rest_authentication_error"
    )
    assert httpx.put(url, json=body, auth=("ck_test", TOKEN)).status_code == 200


# -- the script ------------------------------------------------------------------------------------


def test_serve_script_prints_its_url_and_serves_the_demo_catalogue():
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples/webshop/serve.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        products = httpx.get(f"{url}{API}/products.json").json()["products"]
        skus = {v["sku"] for p in products for v in p["variants"]}
        assert {"TSHIRT-BLK-M", "MUG-LOGO"} <= skus and "CAP-RED" not in skus
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_serve_script_refuses_a_catalogue_it_cannot_use(tmp_path):
    bad = tmp_path / "catalog.json"
    bad.write_text(
        json.dumps({"locations": [], "products": [{"id": 1, "variants": [{"id": 2, "sku": "A"}]}]})
    )
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/webshop/serve.py"),
            "--port",
            "0",
            "--catalog",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "inventory_item_id" in done.stderr and "Traceback" not in done.stderr
