"""The local web shop's WooCommerce REST API (``/wp-json/wc/v3/``): products and their stock.

The shop's catalogue seen as WooCommerce sees it: a product with one variant is a simple
product (its id is the product's), one with several a variable product whose variations
are its variants (same ids). WooCommerce keeps one stock quantity per product or
variation, not per location. Errors have WooCommerce's shape
(``{code, message, data: {status}}``); fields other than the stock's are refused, since
this shop models stock only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from webshop_state import Refusal, ShopState, whole

PREFIX = "/wp-json/wc/v3"
_STOCK_FIELDS = {"manage_stock", "stock_quantity"}
_TARGET = re.compile(r"/products/(\d+)(?:/variations/(\d+))?")
_VARIATIONS = re.compile(r"/products/(\d+)/variations")
_UNMANAGED = {"manage_stock": False, "stock_quantity": None}


def error(status: int, code: str, message: str, **data: Any) -> Refusal:
    return Refusal(status, {"code": code, "message": message, "data": {"status": status, **data}})


def _no_route() -> Refusal:
    return error(404, "rest_no_route", "No route was found matching the URL and request method.")


class WooCommerceAPI:
    """Requests under ``/wp-json/wc/v3/``, answered from the shop's state."""

    def __init__(self, state: ShopState, token: str, base_url: Callable[[], str]):
        self.state, self._token, self._base_url = state, token, base_url

    def resource(self, path: str) -> str | None:
        """The path after ``/wp-json/wc/v3``, or None when it is not this API's."""
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return path[len(PREFIX) :]
        return None

    def check_auth(self, headers: dict[str, str]) -> None:
        """HTTP Basic: any consumer key, the shop's token as the consumer secret."""
        if not self._token:
            return
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
        try:
            key, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            key, secret = "", ""
        if not key:
            raise error(401, "woocommerce_rest_authentication_error", "Consumer key is invalid.")
        if not hmac.compare_digest(secret.encode(), self._token.encode()):
            raise error(401, "woocommerce_rest_authentication_error", "Consumer secret is invalid.")

    def not_json(self) -> Refusal:
        return error(400, "rest_invalid_json", "Invalid JSON body passed.")

    # -- reads ------------------------------------------------------------------------------

    def read(self, rest: str, params: dict[str, str], path: str):
        """(status, extra headers, body) of a GET."""
        with self.state.lock:
            if rest == "/products":
                products = sorted(self.state.catalog["products"], key=lambda p: p["id"])
                return self._page([self._product(p) for p in products], params, path)
            listing = _VARIATIONS.fullmatch(rest)
            if listing:
                product, _ = self._target(f"/products/{listing.group(1)}")
                variations = product["variants"] if len(product["variants"]) > 1 else []
                return self._page([self._variation(product, v) for v in variations], params, path)
            product, variation = self._target(rest)
            if variation is None:
                return 200, {}, self._product(product)
            return 200, {}, self._variation(product, variation)

    def _page(self, items: list[dict[str, Any]], params: dict[str, str], path: str):
        try:
            per_page, page = int(params.get("per_page", 10)), int(params.get("page", 1))
        except ValueError:
            per_page = page = 0
        if not 1 <= per_page <= 100 or page < 1:
            raise error(400, "rest_invalid_param", "Invalid parameter(s): per_page, page")
        pages = max(1, -(-len(items) // per_page))
        extra = {"X-WP-Total": str(len(items)), "X-WP-TotalPages": str(pages)}
        if page < pages:
            query = urlencode({"per_page": per_page, "page": page + 1})
            extra["Link"] = f'<{self._base_url()}{path}?{query}>; rel="next"'
        return 200, extra, items[(page - 1) * per_page : page * per_page]

    def _target(self, rest: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(product, variation or None) for ``/products/<id>[/variations/<id>]``."""
        match = _TARGET.fullmatch(rest)
        if match is None:
            raise _no_route()
        product = self.state.product(int(match.group(1)))
        if product is None:
            raise error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
        if match.group(2) is None:
            return product, None
        variation_id = int(match.group(2))
        variation = next((v for v in product["variants"] if v["id"] == variation_id), None)
        if len(product["variants"]) < 2 or variation is None:
            raise error(404, "woocommerce_rest_product_variation_invalid_id", "Invalid ID.")
        return product, variation

    def _stock(self, woo_id: int) -> dict[str, Any]:
        stock = self.state.woo_stock.get(woo_id, _UNMANAGED)
        quantity = stock["stock_quantity"] if stock["manage_stock"] else None
        status = "outofstock" if stock["manage_stock"] and (quantity or 0) <= 0 else "instock"
        return {
            "manage_stock": stock["manage_stock"],
            "stock_quantity": quantity,
            "stock_status": status,
        }

    def _product(self, product: dict[str, Any]) -> dict[str, Any]:
        variable = len(product["variants"]) > 1
        return {
            "id": product["id"],
            "name": product["title"],
            "type": "variable" if variable else "simple",
            "status": "publish",
            "sku": "" if variable else product["variants"][0]["sku"],
            **self._stock(product["id"]),
            "variations": [v["id"] for v in product["variants"]] if variable else [],
        }

    def _variation(self, product: dict[str, Any], variation: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": variation["id"],
            "parent_id": product["id"],
            "sku": variation["sku"],
            "name": f"{product['title']} - {variation['title']}",
            **self._stock(variation["id"]),
        }

    # -- writes (called with the lock held) ----------------------------------------------------

    def write(self, method: str, rest: str, body: Any) -> tuple[int, Any]:
        """PUT, POST or PATCH of a product or a variation: its stock."""
        product, variation = self._target(rest)
        if not isinstance(body, dict):
            raise self.not_json()
        problems = {
            name: "this local shop sets stock only (manage_stock, stock_quantity)"
            for name in sorted(set(body) - _STOCK_FIELDS)
        }
        if "manage_stock" in body and not isinstance(body["manage_stock"], bool):
            problems["manage_stock"] = "manage_stock is not of type boolean."
        quantity = body.get("stock_quantity")
        if quantity is not None and not whole(quantity):
            problems["stock_quantity"] = "stock_quantity is not of type integer."
        if problems:
            message = f"Invalid parameter(s): {', '.join(problems)}"
            raise error(400, "rest_invalid_param", message, params=problems)
        woo_id = (variation or product)["id"]
        stock = dict(self.state.woo_stock.get(woo_id, _UNMANAGED))
        stock["manage_stock"] = body.get("manage_stock", stock["manage_stock"])
        if "stock_quantity" in body and stock["manage_stock"]:  # ignored for unmanaged stock
            stock["stock_quantity"] = quantity
        self.state.woo_stock[woo_id] = stock
        if variation is None:
            return 200, self._product(product)
        return 200, self._variation(product, variation)
