"""What the local web shop holds (catalogue, levels, stock) and how it says no.

Shared by ``serve.py`` (the server) and the two APIs it serves, ``webshop_shopify.py``
and ``webshop_woocommerce.py``. Standard library only.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_CATALOG = Path(__file__).resolve().parent / "catalog.json"


class CatalogError(ValueError):
    """A catalogue the shop cannot use, with the reason."""


class Refusal(Exception):
    """An answer other than success, raised from deep inside a handler."""

    def __init__(self, status: int, body: Any):
        super().__init__(status)
        self.status, self.body = status, body


@dataclass
class ShopState:
    """The shop's data; every read and change holds ``lock``."""

    catalog: dict[str, Any]
    #: (inventory_item_id, location_id) -> Shopify inventory level
    levels: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    #: WooCommerce product or variation id -> {manage_stock, stock_quantity}
    woo_stock: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def product(self, product_id: int) -> dict[str, Any] | None:
        return next((p for p in self.catalog["products"] if p["id"] == product_id), None)

    def variant_by_item(self, item: int) -> dict[str, Any] | None:
        for product in self.catalog["products"]:
            for variant in product["variants"]:
                if variant["inventory_item_id"] == item:
                    return variant
        return None

    def has_location(self, location: int) -> bool:
        return any(loc["id"] == location for loc in self.catalog["locations"])


def whole(value: Any) -> bool:
    """A JSON integer (not a bool, not a float, not text)."""
    return isinstance(value, int) and not isinstance(value, bool)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load_catalog(source: str | os.PathLike | dict | None) -> dict[str, Any]:
    """A checked copy of a catalogue: a dict, a JSON file, or None for the demo one."""
    if source is None:
        source = DEMO_CATALOG
    if isinstance(source, dict):
        data, where = copy.deepcopy(source), "the catalogue"
    else:
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CatalogError(f"cannot read {where}: {exc.strerror}") from None
        except ValueError as exc:
            raise CatalogError(f"{where} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: expected an object with locations and products")
    locations, products = data.get("locations"), data.get("products")
    if not isinstance(locations, list) or not isinstance(products, list):
        raise CatalogError(f"{where}: expected lists under 'locations' and 'products'")
    seen: set[tuple[str, int]] = set()

    def check(kind: str, value: Any, what: str) -> None:
        if not whole(value) or value <= 0:
            raise CatalogError(f"{where}: {what} needs a positive whole number as {kind}")
        if (kind, value) in seen:
            raise CatalogError(f"{where}: {kind} {value} is used twice")
        seen.add((kind, value))

    for location in locations:
        if not isinstance(location, dict):
            raise CatalogError(f"{where}: every location is an object with an id")
        check("location id", location.get("id"), "a location")
        location.setdefault("name", f"Location {location['id']}")
        location.setdefault("active", True)
    for product in products:
        if not isinstance(product, dict) or not isinstance(product.get("variants"), list):
            raise CatalogError(f"{where}: every product needs a list of variants")
        check("product id", product.get("id"), f"product {product.get('title')!r}")
        product.setdefault("title", f"Product {product['id']}")
        if not product["variants"]:
            raise CatalogError(f"{where}: product {product['id']} has no variant")
        for variant in product["variants"]:
            if not isinstance(variant, dict):
                raise CatalogError(f"{where}: the variants of product {product['id']} are objects")
            what = f"variant {variant.get('sku')!r} of product {product['id']}"
            check("variant id", variant.get("id"), what)
            check("inventory_item_id", variant.get("inventory_item_id"), what)
            variant.setdefault("title", "Default Title")
            variant.setdefault("sku", "")
            variant.setdefault("inventory_management", "shopify")
    return {"locations": locations, "products": products}
