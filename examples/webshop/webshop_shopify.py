"""The local web shop's Shopify Admin REST API: products, locations, inventory levels.

Served under ``/admin/api/<version>/`` with the ``.json`` suffix, as Shopify's. It answers
as Shopify does where that is known (``Required parameter missing or invalid`` 400s,
``Not Found`` 404s, the untracked-item 422) and is stricter where Shopify is lenient: an
unknown field in ``inventory_levels/set`` is refused, not ignored, so a flow that sends
what the shop would drop is caught.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from webshop_state import Refusal, ShopState, now, whole

TOKEN_HEADER = "X-Shopify-Access-Token"
PREFIX = re.compile(r"^/admin/api/(\d{4}-\d{2}|unstable)(/.*)$")
MISSING_PARAM = "Required parameter missing or invalid"
_SET_FIELDS = {"inventory_item_id", "location_id", "available", "disconnect_if_necessary"}


def error(status: int, errors: Any) -> Refusal:
    return Refusal(status, {"errors": errors})


class ShopifyAPI:
    """Requests under ``/admin/api/<version>/``, answered from the shop's state."""

    def __init__(self, state: ShopState, token: str, base_url: Callable[[], str]):
        self.state, self._token, self._base_url = state, token, base_url

    def resource(self, path: str) -> str | None:
        """The path after ``/admin/api/<version>``, or None when it is not this API's."""
        match = PREFIX.match(path)
        return match.group(2) if match else None

    def check_auth(self, headers: dict[str, str]) -> None:
        given = headers.get(TOKEN_HEADER.lower(), "")
        if self._token and not hmac.compare_digest(given.encode(), self._token.encode()):
            raise error(
                401, "[API] Invalid API key or access token (unrecognized login or wrong password)"
            )

    def not_json(self) -> Refusal:
        return error(400, "the body is not JSON")

    # -- reads ------------------------------------------------------------------------------

    def read(self, rest: str, params: dict[str, str], path: str):
        """(status, extra headers, body) of a GET."""
        if rest == "/products.json":
            return self._product_page(params, path)
        with self.state.lock:
            if rest == "/locations.json":
                return 200, {}, {"locations": copy.deepcopy(self.state.catalog["locations"])}
            if rest == "/inventory_levels.json":
                items = _id_list(params, "inventory_item_ids")
                locations = _id_list(params, "location_ids")
                if items is None and locations is None:
                    raise error(
                        400, {"inventory_item_ids": MISSING_PARAM, "location_ids": MISSING_PARAM}
                    )
                levels = [
                    dict(self.state.levels[key])
                    for key in sorted(self.state.levels, key=lambda k: k[::-1])
                    if (items is None or key[0] in items)
                    and (locations is None or key[1] in locations)
                ]
                return 200, {}, {"inventory_levels": levels}
        raise error(404, "Not Found")

    def _product_page(self, params: dict[str, str], path: str):
        try:
            limit = int(params.get("limit", 50))
            offset = 0
            if "page_info" in params:
                offset = int(base64.urlsafe_b64decode(params["page_info"]).decode())
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise error(400, {"page_info": "Invalid value."}) from None
        if not 1 <= limit <= 250:
            raise error(400, {"limit": "Invalid value."})
        with self.state.lock:
            products = sorted(self.state.catalog["products"], key=lambda p: p["id"])
            page = [self.product(p) for p in products[offset : offset + limit]]
        extra = {}
        if offset + limit < len(products):
            token = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
            query = urlencode({"limit": limit, "page_info": token})
            extra["Link"] = f'<{self._base_url()}{path}?{query}>; rel="next"'
        return 200, extra, {"products": page}

    def product(self, product: dict[str, Any]) -> dict[str, Any]:
        """A product as Shopify shows it; call with the lock held."""
        variants = []
        for variant in product["variants"]:
            item = variant["inventory_item_id"]
            levels = self.state.levels.items()
            variants.append(
                {
                    **variant,
                    "product_id": product["id"],
                    "inventory_quantity": sum(
                        lv["available"] for (i, _), lv in levels if i == item
                    ),
                    "admin_graphql_api_id": f"gid://shopify/ProductVariant/{variant['id']}",
                }
            )
        return {
            **product,
            "variants": variants,
            "admin_graphql_api_id": f"gid://shopify/Product/{product['id']}",
        }

    # -- writes (called with the lock held) ----------------------------------------------------

    def write(self, method: str, rest: str, body: Any) -> tuple[int, Any]:
        if rest == "/inventory_levels/set.json":
            if method != "POST":
                raise error(406, "Not Acceptable")
            return self._set_level(body)
        if rest == "/products.json" and method == "POST":
            return self._create_product(body)
        raise error(404, "Not Found")

    def _set_level(self, body: Any) -> tuple[int, Any]:
        """inventory_levels/set: one item's absolute level at one location."""
        if not isinstance(body, dict):
            raise error(400, {"inventory_item_id": MISSING_PARAM})
        missing = {
            name: MISSING_PARAM
            for name in ("location_id", "inventory_item_id", "available")
            if not whole(body.get(name))
        }
        if missing:
            raise error(400, missing)
        unknown = sorted(set(body) - _SET_FIELDS)
        if unknown:
            raise error(
                422, {name: ["is not a parameter of inventory_levels/set"] for name in unknown}
            )
        item, location = body["inventory_item_id"], body["location_id"]
        variant = self.state.variant_by_item(item)
        if variant is None or not self.state.has_location(location):
            raise error(404, "Not Found")
        if variant["inventory_management"] != "shopify":
            raise error(422, ["Inventory item does not have inventory tracking enabled"])
        level = {
            "inventory_item_id": item,
            "location_id": location,
            "available": body["available"],
            "updated_at": now(),
            "admin_graphql_api_id": f"gid://shopify/InventoryLevel/{location}?inventory_item_id={item}",
        }
        self.state.levels[(item, location)] = level
        return 200, {"inventory_level": dict(level)}

    def _create_product(self, body: Any) -> tuple[int, Any]:
        """POST products.json: a product with its variants, ids given by the shop."""
        product = body.get("product") if isinstance(body, dict) else None
        if not isinstance(product, dict):
            raise error(400, {"product": MISSING_PARAM})
        if not product.get("title"):
            raise error(422, {"title": ["can't be blank"]})
        variants = product.get("variants") or [{}]
        if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
            raise error(422, {"variants": ["must be a list of objects"]})
        products = self.state.catalog["products"]
        every = [v for p in products for v in p["variants"]]
        next_variant = max((v["id"] for v in every), default=0) + 1
        next_item = max((v["inventory_item_id"] for v in every), default=0) + 1
        new = {
            "id": max((p["id"] for p in products), default=0) + 1,
            "title": str(product["title"]),
            "variants": [
                {
                    "id": next_variant + n,
                    "title": str(v.get("title") or v.get("option1") or "Default Title"),
                    "sku": str(v.get("sku") or ""),
                    "inventory_item_id": next_item + n,
                    # as Shopify: inventory is not tracked unless asked for
                    "inventory_management": v.get("inventory_management"),
                }
                for n, v in enumerate(variants)
            ],
        }
        products.append(new)
        return 201, {"product": self.product(new)}


def _id_list(params: dict[str, str], name: str) -> set[int] | None:
    if name not in params:
        return None
    try:
        return {int(part) for part in params[name].split(",") if part.strip()}
    except ValueError:
        raise error(400, {name: MISSING_PARAM}) from None
