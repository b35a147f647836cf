"""The example web shop (examples/webshop/serve.py) for tests, and a catalogue for it.

The catalogue is written here from Shopify's documented product, variant and location
fields (ids as whole numbers, one inventory item per variant); a shop started from it
sells the demo ERP's SKUs (tests/support/tryton.py) at two locations. What a flow sent is
read back from the shop over HTTP, as a person would check it.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
from typing import Any

import httpx

from tests.support.files import ROOT

TOKEN = "test-shop-token"
API = "/admin/api/2025-10"
WOO = "/wp-json/wc/v3"
WAREHOUSE, STORE = 70_000_000_001, 70_000_000_002

#: SKU -> (product id, variant id, inventory item id); CAP-RED's item id is above 2**53,
#: so a float anywhere between the map file and the request would change it
ITEMS = {
    "TSHIRT-BLK-M": (8_000_000_001, 40_000_000_011, 45_000_000_011),
    "TSHIRT-BLK-L": (8_000_000_001, 40_000_000_012, 45_000_000_012),
    "MUG-LOGO": (8_000_000_002, 40_000_000_021, 45_000_000_021),
    "CAP-RED": (8_000_000_003, 40_000_000_031, 9_007_199_254_740_993),
}


def _load():
    name = "flowyard_examples_webshop"
    if name not in sys.modules:  # examples/ is no package: load the script from its file
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples/webshop/serve.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


webshop = _load()


def catalog(skus: tuple[str, ...] = tuple(ITEMS)) -> dict[str, Any]:
    """Locations and products selling ``skus``: the T-shirt sizes are variants of one."""
    products: dict[int, dict[str, Any]] = {}
    titles = {8_000_000_001: "T-shirt black", 8_000_000_002: "Logo mug", 8_000_000_003: "Red cap"}
    for sku in skus:
        product_id, variant_id, item_id = ITEMS[sku]
        product = products.setdefault(
            product_id, {"id": product_id, "title": titles[product_id], "variants": []}
        )
        size = sku.rsplit("-", 1)[-1] if sku.startswith("TSHIRT") else "Default Title"
        product["variants"].append(
            {
                "id": variant_id,
                "title": size,
                "sku": sku,
                "inventory_item_id": item_id,
                "inventory_management": "shopify",
            }
        )
    return {
        "locations": [
            {"id": WAREHOUSE, "name": "Warehouse"},
            {"id": STORE, "name": "Store Berlin"},
        ],
        "products": list(products.values()),
    }


def shopify_headers() -> dict[str, str]:
    return {webshop.TOKEN_HEADER: TOKEN}


def woo_auth() -> dict[str, str]:
    encoded = base64.b64encode(f"ck_test:{TOKEN}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def read_levels(shop) -> dict[tuple[str, int], int]:
    """{(sku, location id): available} as the shop's API reports them."""
    products = httpx.get(f"{shop.url}{API}/products.json", headers=shopify_headers()).json()
    skus = {v["inventory_item_id"]: v["sku"] for p in products["products"] for v in p["variants"]}
    answer = httpx.get(
        f"{shop.url}{API}/inventory_levels.json",
        params={"location_ids": f"{WAREHOUSE},{STORE}"},
        headers=shopify_headers(),
    )
    answer.raise_for_status()
    return {
        (skus[lv["inventory_item_id"]], lv["location_id"]): lv["available"]
        for lv in answer.json()["inventory_levels"]
    }


def read_woo_stock(shop) -> dict[str, int | None]:
    """{sku: stock_quantity} of every product and variation whose stock the shop manages."""
    stock = {}
    for product in httpx.get(f"{shop.url}{WOO}/products", headers=woo_auth()).json():
        if product["type"] == "simple" and product["manage_stock"]:
            stock[product["sku"]] = product["stock_quantity"]
        for variation in httpx.get(
            f"{shop.url}{WOO}/products/{product['id']}/variations", headers=woo_auth()
        ).json():
            if variation["manage_stock"]:
                stock[variation["sku"]] = variation["stock_quantity"]
    return stock


def write_item_map(path, skus=tuple(ITEMS), extra_rows: str = "") -> None:
    rows = "".join(f"{sku},{ITEMS[sku][2]}\n" for sku in skus)
    path.write_text("sku,inventory_item_id\n" + rows + extra_rows)


def write_woo_item_map(path, skus=tuple(ITEMS)) -> None:
    rows = []
    for sku in skus:
        product_id, variant_id, _ = ITEMS[sku]
        variation = variant_id if sku.startswith("TSHIRT") else ""
        rows.append(f"{sku},{product_id},{variation}\n")
    path.write_text("sku,product_id,variation_id\n" + "".join(rows))


def write_location_map(path, **codes: int) -> None:
    rows = "".join(f"{code},{location}\n" for code, location in codes.items())
    path.write_text("erp_location,shop_location_id\n" + rows)
