"""A small local web shop with Shopify's and WooCommerce's stock APIs, for examples and tests.

    python examples/webshop/serve.py --port 0                  # prints its URL, serves
    python examples/webshop/serve.py --port 8100 --data .flowyard/webshop.json \
        --token-env WEBSHOP_TOKEN

Standard library only; listens on 127.0.0.1. The first line it prints is its base URL
(``http://127.0.0.1:PORT``); it serves until Ctrl-C or SIGTERM.

It sells the products of a catalogue (``--catalog FILE``, default ``catalog.json`` next to
this file): products with variants, each variant with its ``sku`` and
``inventory_item_id``, and the shop's locations. It takes what the real APIs take and
refuses what they refuse, so a flow that works here sends what a real shop accepts:

Shopify Admin REST, under ``/admin/api/<version>/`` (any ``YYYY-MM``):

* ``GET products.json`` (``limit``, ``page_info``, ``Link`` header): products with their
  variants (``id``, ``product_id``, ``sku``, ``inventory_item_id``,
  ``inventory_management``, ``inventory_quantity``). ``POST products.json`` creates one.
* ``GET locations.json``.
* ``POST inventory_levels/set.json`` ``{inventory_item_id, location_id, available}``
  sets one item's absolute level at one location. Each must be a whole number: one
  missing (an ``sku`` instead of the item id) is 400 ``{"errors": {"inventory_item_id":
  "Required parameter missing or invalid"}}``; an item or location the shop does not
  have is 404 ``{"errors": "Not Found"}``; an item whose inventory the shop does not
  track is 422. Other fields are refused (422), which Shopify would ignore.
* ``GET inventory_levels.json?inventory_item_ids=..&location_ids=..`` (one is required).

WooCommerce REST, under ``/wp-json/wc/v3/``: a product with one variant is a simple
product, one with several a variable product whose variations are its variants (same ids).

* ``GET products`` (``per_page``, ``page``), ``GET products/<id>``,
  ``GET products/<id>/variations``, ``GET products/<id>/variations/<id>``.
* ``PUT`` (or ``POST``, ``PATCH``) ``products/<id>`` or ``products/<id>/variations/<id>``
  with ``{"manage_stock": true, "stock_quantity": N}`` sets the stock; unknown ids are
  404 ``woocommerce_rest_product_invalid_id`` or ``..._variation_invalid_id``, a quantity
  that is not an integer 400 ``rest_invalid_param``. Other product fields are refused.

Both: ``Idempotency-Key`` is honoured on writes as the IETF httpapi draft and Stripe do
(a repeat of a finished request with the same key and body gets the stored answer with
``Idempotent-Replayed: true`` and changes nothing; the same key with another body is 422;
a repeat while the first is in progress is 409). ``GET /_requests`` lists every request
received (method, path, idempotency key, body, status, outcome); ``DELETE /_requests``
clears the list.

With ``--token-env NAME`` every API request must carry the value of that environment
variable: as ``X-Shopify-Access-Token`` for Shopify, as the consumer secret of HTTP Basic
auth for WooCommerce (401 otherwise); the token is never printed. With ``--data FILE``
the whole shop (catalogue, levels, stock, idempotency keys) is kept in that JSON file,
rewritten atomically after each change and read back at start.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import datetime as dt
import hmac
import json
import os
import re
import signal
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

TOKEN_HEADER = "X-Shopify-Access-Token"
DEMO_CATALOG = Path(__file__).resolve().parent / "catalog.json"
SHOPIFY_PREFIX = re.compile(r"^/admin/api/(\d{4}-\d{2}|unstable)(/.*)$")
WOO_PREFIX = "/wp-json/wc/v3"
_MAX_BODY = 1_000_000
_MISSING_PARAM = "Required parameter missing or invalid"
_SET_FIELDS = {"inventory_item_id", "location_id", "available", "disconnect_if_necessary"}
_WOO_STOCK_FIELDS = {"manage_stock", "stock_quantity"}


class CatalogError(ValueError):
    """A catalogue file the shop cannot use, with the reason."""


class _Answer(Exception):
    """An answer other than success, raised from deep inside a handler."""

    def __init__(self, status: int, body: Any, outcome: str = "refused"):
        super().__init__(status)
        self.status, self.body, self.outcome = status, body, outcome


def _shopify_error(status: int, errors: Any) -> _Answer:
    return _Answer(status, {"errors": errors})


def _woo_error(status: int, code: str, message: str, **data: Any) -> _Answer:
    return _Answer(status, {"code": code, "message": message, "data": {"status": status, **data}})


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

    def check_id(kind: str, value: Any, what: str) -> None:
        if not _whole(value) or value <= 0:
            raise CatalogError(f"{where}: {what} needs a positive whole number as {kind}")
        if (kind, value) in seen:
            raise CatalogError(f"{where}: {kind} {value} is used twice")
        seen.add((kind, value))

    for location in locations:
        check_id(
            "location id", location.get("id") if isinstance(location, dict) else None, "a location"
        )
        location.setdefault("name", f"Location {location['id']}")
        location.setdefault("active", True)
    for product in products:
        if not isinstance(product, dict) or not isinstance(product.get("variants"), list):
            raise CatalogError(f"{where}: every product needs a list of variants")
        check_id("product id", product.get("id"), f"product {product.get('title')!r}")
        product.setdefault("title", f"Product {product['id']}")
        if not product["variants"]:
            raise CatalogError(f"{where}: product {product['id']} has no variant")
        for variant in product["variants"]:
            what = f"variant {variant.get('sku')!r} of product {product['id']}"
            check_id("variant id", variant.get("id"), what)
            check_id("inventory_item_id", variant.get("inventory_item_id"), what)
            variant.setdefault("title", "Default Title")
            variant.setdefault("sku", "")
            variant.setdefault("inventory_management", "shopify")
    return {"locations": locations, "products": products}


class WebShop:
    """The shop's state and HTTP server; ``with WebShop() as shop: ... shop.url``."""

    def __init__(
        self,
        port: int = 0,
        data: str | os.PathLike | None = None,
        token: str = "",
        catalog: str | os.PathLike | dict | None = None,
    ):
        self.port = port
        self.data = Path(data) if data is not None else None
        self._token = token
        self._lock = threading.Lock()
        self._levels: dict[tuple[int, int], dict[str, Any]] = {}
        self._woo_stock: dict[int, dict[str, Any]] = {}  # product or variation id -> stock
        self._keys: dict[str, dict[str, Any]] = {}  # idempotency key -> stored answer
        self._requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        if self.data is not None and self.data.exists():
            saved = json.loads(self.data.read_text(encoding="utf-8"))
            self._catalog = load_catalog({k: saved[k] for k in ("locations", "products")})
            self._levels = {
                (lv["inventory_item_id"], lv["location_id"]): lv for lv in saved["levels"]
            }
            self._woo_stock = {int(k): v for k, v in saved["woo_stock"].items()}
            self._keys = {k: {**v, "done": True} for k, v in saved["keys"].items()}
        else:
            self._catalog = load_catalog(catalog)

    # -- life cycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8100``."""
        if self._server is None:
            raise RuntimeError("the web shop is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> WebShop:
        """Listen on 127.0.0.1 and serve in a background thread."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.shop = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving (the shop stays in the data file, if any)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> WebShop:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests and people look at -------------------------------------------------------

    def levels(self) -> list[dict[str, Any]]:
        """Every Shopify inventory level, sorted by location and item."""
        with self._lock:
            return [dict(self._levels[key]) for key in sorted(self._levels, key=lambda k: k[::-1])]

    def woo_stock(self) -> dict[int, int | None]:
        """WooCommerce stock quantity by product or variation id (managed stock only)."""
        with self._lock:
            return {
                woo_id: stock["stock_quantity"]
                for woo_id, stock in sorted(self._woo_stock.items())
                if stock["manage_stock"]
            }

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far, oldest first."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def clear_requests(self) -> None:
        """Forget the request log (the shop's data and idempotency keys stay)."""
        with self._lock:
            self._requests.clear()

    # -- requests ---------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """Answer one request: (status, extra headers, JSON body)."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        if path == "/_requests":
            if method == "DELETE":
                self.clear_requests()
                return 200, {}, {"cleared": True}
            return 200, {}, {"requests": self.requests}
        key = _idempotency_key(headers.get("idempotency-key"))
        entry: dict[str, Any] = {"method": method, "path": path, "idempotency_key": key}
        entry["body"] = None
        extra: dict[str, str] = {}
        try:
            status, extra, body, outcome = self._route(
                method, path, parts.query, headers, raw, entry
            )
        except _Answer as answer:
            status, body, outcome = answer.status, answer.body, answer.outcome
        with self._lock:
            self._requests.append(
                {**entry, "n": len(self._requests) + 1, "status": status, "outcome": outcome}
            )
        return status, extra, body

    def _route(self, method, path, query, headers, raw, entry):
        shopify = SHOPIFY_PREFIX.match(path)
        if shopify:
            api, rest = "shopify", shopify.group(2)
            self._check_shopify_token(headers)
        elif path == WOO_PREFIX or path.startswith(WOO_PREFIX + "/"):
            api, rest = "woo", path[len(WOO_PREFIX) :]
            self._check_woo_auth(headers)
        else:
            raise _shopify_error(404, "Not Found")
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        if method == "GET":
            if api == "shopify":
                return (*self._shopify_read(rest, params, path), "read")
            return (*self._woo_read(rest, params, path), "read")
        if method not in ("POST", "PUT", "PATCH"):
            raise _Answer(405, {"errors": f"{method} is not allowed on {path}"})
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            if api == "woo":
                raise _woo_error(400, "rest_invalid_json", "Invalid JSON body passed.") from None
            raise _shopify_error(400, "the body is not JSON") from None
        entry["body"] = body
        write = self._shopify_write if api == "shopify" else self._woo_write
        return self._once(entry, lambda: write(method, rest, body, path))

    def _once(self, entry, write):
        """Perform ``write`` once per Idempotency-Key, as the draft says."""
        key = entry["idempotency_key"]
        if key is None:
            status, body = self._apply(write)
            return status, {}, body, "applied"
        fingerprint = json.dumps([entry["method"], entry["path"], entry["body"]], sort_keys=True)
        with self._lock:
            stored = self._keys.get(key)
            if stored is None:
                stored = self._keys[key] = {"fingerprint": fingerprint, "done": False}
                first = True
            else:
                first = False
        if not first:
            if stored["fingerprint"] != fingerprint:
                raise _Answer(
                    422,
                    {"errors": f"Idempotency-Key {key!r} was already used with another request"},
                )
            if not stored["done"]:
                raise _Answer(
                    409, {"errors": f"a request with Idempotency-Key {key!r} is in progress"}
                )
            replayed = {"Idempotent-Replayed": "true"}
            return stored["status"], replayed, stored["answer"], "replayed"
        try:
            status, body = self._apply(write)
        except _Answer as refused:  # a refusal is an answer too: a repeat gets it again
            status, body = refused.status, refused.body
        except BaseException:
            with self._lock:
                self._keys.pop(key, None)
            raise
        with self._lock:
            stored.update(status=status, answer=body, done=True)
            self._save()
        return status, {}, body, "applied" if status < 400 else "refused"

    def _apply(self, write):
        with self._lock:
            status, body = write()
            self._save()
        return status, body

    # -- Shopify ------------------------------------------------------------------------------

    def _check_shopify_token(self, headers: dict[str, str]) -> None:
        given = headers.get(TOKEN_HEADER.lower(), "")
        if self._token and not hmac.compare_digest(given.encode(), self._token.encode()):
            raise _shopify_error(
                401, "[API] Invalid API key or access token (unrecognized login or wrong password)"
            )

    def _shopify_read(self, rest: str, params: dict[str, str], path: str):
        if rest == "/products.json":
            return self._product_page(params, path)
        if rest == "/locations.json":
            with self._lock:
                return 200, {}, {"locations": copy.deepcopy(self._catalog["locations"])}
        if rest == "/inventory_levels.json":
            items, locations = (
                _id_list(params, "inventory_item_ids"),
                _id_list(params, "location_ids"),
            )
            if items is None and locations is None:
                raise _shopify_error(
                    400, {"inventory_item_ids": _MISSING_PARAM, "location_ids": _MISSING_PARAM}
                )
            levels = [
                lv
                for lv in self.levels()
                if (items is None or lv["inventory_item_id"] in items)
                and (locations is None or lv["location_id"] in locations)
            ]
            return 200, {}, {"inventory_levels": levels}
        raise _shopify_error(404, "Not Found")

    def _product_page(self, params: dict[str, str], path: str):
        try:
            limit = int(params.get("limit", 50))
            offset = (
                int(base64.urlsafe_b64decode(params["page_info"]).decode())
                if "page_info" in params
                else 0
            )
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise _shopify_error(400, {"page_info": "Invalid value."}) from None
        if not 1 <= limit <= 250:
            raise _shopify_error(400, {"limit": "Invalid value."})
        with self._lock:
            products = sorted(self._catalog["products"], key=lambda p: p["id"])
            page = [self._shopify_product(p) for p in products[offset : offset + limit]]
            more = offset + limit < len(products)
        extra = {}
        if more:
            token = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
            query = urlencode({"limit": limit, "page_info": token})
            extra["Link"] = f'<{self.url}{path}?{query}>; rel="next"'
        return 200, extra, {"products": page}

    def _shopify_product(self, product: dict[str, Any]) -> dict[str, Any]:
        """A product as Shopify shows it; call with the lock held."""
        variants = []
        for variant in product["variants"]:
            item = variant["inventory_item_id"]
            quantity = sum(lv["available"] for (i, _), lv in self._levels.items() if i == item)
            variants.append(
                {
                    **variant,
                    "product_id": product["id"],
                    "inventory_quantity": quantity,
                    "admin_graphql_api_id": f"gid://shopify/ProductVariant/{variant['id']}",
                }
            )
        return {
            **product,
            "variants": variants,
            "admin_graphql_api_id": f"gid://shopify/Product/{product['id']}",
        }

    def _shopify_write(self, method: str, rest: str, body: Any, path: str):
        if rest == "/inventory_levels/set.json":
            if method != "POST":
                raise _Answer(406, {"errors": "Not Acceptable"})
            return self._set_level(body)
        if rest == "/products.json" and method == "POST":
            return self._create_product(body)
        raise _shopify_error(404, "Not Found")

    def _set_level(self, body: Any):
        """inventory_levels/set; call with the lock held."""
        if not isinstance(body, dict):
            raise _shopify_error(400, {"inventory_item_id": _MISSING_PARAM})
        missing = {
            name: _MISSING_PARAM
            for name in ("location_id", "inventory_item_id", "available")
            if not _whole(body.get(name))
        }
        if missing:
            raise _shopify_error(400, missing)
        unknown = sorted(set(body) - _SET_FIELDS)
        if unknown:
            raise _shopify_error(
                422, {name: ["is not a parameter of inventory_levels/set"] for name in unknown}
            )
        item, location = body["inventory_item_id"], body["location_id"]
        variant = self._variant_by_item(item)
        known_location = any(loc["id"] == location for loc in self._catalog["locations"])
        if variant is None or not known_location:
            raise _shopify_error(404, "Not Found")
        if variant["inventory_management"] != "shopify":
            raise _shopify_error(422, ["Inventory item does not have inventory tracking enabled"])
        level = {
            "inventory_item_id": item,
            "location_id": location,
            "available": body["available"],
            "updated_at": _now(),
            "admin_graphql_api_id": f"gid://shopify/InventoryLevel/{location}?inventory_item_id={item}",
        }
        self._levels[(item, location)] = level
        return 200, {"inventory_level": dict(level)}

    def _variant_by_item(self, item: int) -> dict[str, Any] | None:
        for product in self._catalog["products"]:
            for variant in product["variants"]:
                if variant["inventory_item_id"] == item:
                    return variant
        return None

    def _create_product(self, body: Any):
        """POST products.json: a product with its variants, ids given by the shop."""
        product = body.get("product") if isinstance(body, dict) else None
        if not isinstance(product, dict):
            raise _shopify_error(400, {"product": _MISSING_PARAM})
        if not product.get("title"):
            raise _shopify_error(422, {"title": ["can't be blank"]})
        variants = product.get("variants") or [{}]
        if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
            raise _shopify_error(422, {"variants": ["must be a list of objects"]})
        products = self._catalog["products"]
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
        return 201, {"product": self._shopify_product(new)}

    # -- WooCommerce ----------------------------------------------------------------------------

    def _check_woo_auth(self, headers: dict[str, str]) -> None:
        if not self._token:
            return
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise _woo_error(
                401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources."
            )
        try:
            key, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            key, secret = "", ""
        if not key:
            raise _woo_error(
                401, "woocommerce_rest_authentication_error", "Consumer key is invalid."
            )
        if not hmac.compare_digest(secret.encode(), self._token.encode()):
            raise _woo_error(
                401, "woocommerce_rest_authentication_error", "Consumer secret is invalid."
            )

    def _woo_target(self, rest: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """(product, variation or None) for ``/products/<id>[/variations/<id>]``."""
        match = re.fullmatch(r"/products/(\d+)(?:/variations/(\d+))?", rest)
        if match is None:
            return None
        product_id, variation_id = int(match.group(1)), match.group(2)
        product = next((p for p in self._catalog["products"] if p["id"] == product_id), None)
        if product is None:
            raise _woo_error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
        if variation_id is None:
            return product, None
        variable = len(product["variants"]) > 1
        variation = next((v for v in product["variants"] if v["id"] == int(variation_id)), None)
        if not variable or variation is None:
            raise _woo_error(404, "woocommerce_rest_product_variation_invalid_id", "Invalid ID.")
        return product, variation

    def _woo_read(self, rest: str, params: dict[str, str], path: str):
        with self._lock:
            if rest == "/products":
                products = sorted(self._catalog["products"], key=lambda p: p["id"])
                return self._woo_page([self._woo_product(p) for p in products], params, path)
            listing = re.fullmatch(r"/products/(\d+)/variations", rest)
            if listing:
                product, _ = self._woo_target(f"/products/{listing.group(1)}")
                variations = product["variants"] if len(product["variants"]) > 1 else []
                items = [self._woo_variation(product, v) for v in variations]
                return self._woo_page(items, params, path)
            target = self._woo_target(rest)
            if target is None:
                raise _woo_route_error()
            product, variation = target
            if variation is None:
                return 200, {}, self._woo_product(product)
            return 200, {}, self._woo_variation(product, variation)

    def _woo_page(self, items: list[dict[str, Any]], params: dict[str, str], path: str):
        try:
            per_page, page = int(params.get("per_page", 10)), int(params.get("page", 1))
        except ValueError:
            raise _woo_error(
                400, "rest_invalid_param", "Invalid parameter(s): per_page, page"
            ) from None
        if not 1 <= per_page <= 100 or page < 1:
            raise _woo_error(400, "rest_invalid_param", "Invalid parameter(s): per_page, page")
        pages = max(1, -(-len(items) // per_page))
        extra = {"X-WP-Total": str(len(items)), "X-WP-TotalPages": str(pages)}
        if page < pages:
            query = urlencode({"per_page": per_page, "page": page + 1})
            extra["Link"] = f'<{self.url}{path}?{query}>; rel="next"'
        return 200, extra, items[(page - 1) * per_page : page * per_page]

    def _woo_stock_fields(self, woo_id: int) -> dict[str, Any]:
        stock = self._woo_stock.get(woo_id, {"manage_stock": False, "stock_quantity": None})
        quantity = stock["stock_quantity"] if stock["manage_stock"] else None
        status = "outofstock" if stock["manage_stock"] and (quantity or 0) <= 0 else "instock"
        return {
            "manage_stock": stock["manage_stock"],
            "stock_quantity": quantity,
            "stock_status": status,
        }

    def _woo_product(self, product: dict[str, Any]) -> dict[str, Any]:
        variable = len(product["variants"]) > 1
        return {
            "id": product["id"],
            "name": product["title"],
            "type": "variable" if variable else "simple",
            "status": "publish",
            "sku": "" if variable else product["variants"][0]["sku"],
            **self._woo_stock_fields(product["id"]),
            "variations": [v["id"] for v in product["variants"]] if variable else [],
        }

    def _woo_variation(self, product: dict[str, Any], variation: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": variation["id"],
            "parent_id": product["id"],
            "sku": variation["sku"],
            "name": f"{product['title']} - {variation['title']}",
            **self._woo_stock_fields(variation["id"]),
        }

    def _woo_write(self, method: str, rest: str, body: Any, path: str):
        target = self._woo_target(rest)  # called with the lock held
        if target is None:
            raise _woo_route_error()
        if not isinstance(body, dict):
            raise _woo_error(400, "rest_invalid_json", "Invalid JSON body passed.")
        problems = {
            name: "this local shop sets stock only (manage_stock, stock_quantity)"
            for name in sorted(set(body) - _WOO_STOCK_FIELDS)
        }
        if "manage_stock" in body and not isinstance(body["manage_stock"], bool):
            problems["manage_stock"] = "manage_stock is not of type boolean."
        quantity = body.get("stock_quantity")
        if "stock_quantity" in body and quantity is not None and not _whole(quantity):
            problems["stock_quantity"] = "stock_quantity is not of type integer."
        if problems:
            raise _woo_error(
                400,
                "rest_invalid_param",
                f"Invalid parameter(s): {', '.join(problems)}",
                params=problems,
            )
        product, variation = target
        woo_id = (variation or product)["id"]
        stock = dict(self._woo_stock.get(woo_id, {"manage_stock": False, "stock_quantity": None}))
        stock["manage_stock"] = body.get("manage_stock", stock["manage_stock"])
        if "stock_quantity" in body and stock["manage_stock"]:  # ignored for unmanaged stock
            stock["stock_quantity"] = quantity
        self._woo_stock[woo_id] = stock
        if variation is None:
            return 200, self._woo_product(product)
        return 200, self._woo_variation(product, variation)

    # -- the data file ----------------------------------------------------------------------

    def _save(self) -> None:
        """Write the whole shop to the data file atomically; call with the lock held."""
        if self.data is None:
            return
        keys = {
            k: {"fingerprint": v["fingerprint"], "status": v["status"], "answer": v["answer"]}
            for k, v in self._keys.items()
            if v.get("done")
        }
        payload = json.dumps(
            {
                **self._catalog,
                "levels": list(self._levels.values()),
                "woo_stock": {str(k): v for k, v in self._woo_stock.items()},
                "keys": keys,
            },
            indent=1,
        )
        self.data.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.data.parent, prefix=f".{self.data.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(payload)
        os.replace(tmp, self.data)


def _woo_route_error() -> _Answer:
    return _woo_error(
        404, "rest_no_route", "No route was found matching the URL and request method."
    )


def _id_list(params: dict[str, str], name: str) -> set[int] | None:
    if name not in params:
        return None
    try:
        return {int(part) for part in params[name].split(",") if part.strip()}
    except ValueError:
        raise _shopify_error(400, {name: _MISSING_PARAM}) from None


def _idempotency_key(value: str | None) -> str | None:
    """The header's value with the structured-field quotes of the draft removed."""
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value or None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flowyard-webshop/2"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            status, extra, body = 413, {}, {"errors": "the body is too large"}
            self.close_connection = True
        else:
            raw = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, extra, body = self.server.shop.handle(  # type: ignore[attr-defined]
                self.command, self.path, headers, raw
            )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The API is described at the top of this file and in examples/webshop/README.md.",
    )
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument(
        "--catalog",
        type=Path,
        help="JSON file of locations and products with their variants "
        f"(default: {DEMO_CATALOG.name} next to this script)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="JSON file keeping the whole shop across restarts; when it exists, "
        "it is the shop and --catalog is not read",
    )
    parser.add_argument(
        "--token-env",
        metavar="NAME",
        help="require this environment variable's value as the X-Shopify-Access-Token "
        "header (Shopify) or the Basic auth consumer secret (WooCommerce)",
    )
    args = parser.parse_args(argv)
    token = ""
    if args.token_env:
        token = os.environ.get(args.token_env, "")
        if not token:
            print(f"environment variable {args.token_env} is not set", file=sys.stderr)
            return 2
    try:
        shop = WebShop(port=args.port, data=args.data, token=token, catalog=args.catalog)
    except CatalogError as exc:
        print(f"cannot start the web shop: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot read the data file {args.data}: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        shop.start()
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    print(shop.url, flush=True)
    print(
        f"web shop on {shop.url}: Shopify API under /admin/api/<version>/, WooCommerce "
        f"under {WOO_PREFIX}/"
        + (f" (data in {args.data})" if args.data else " (in memory)")
        + "; Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        shop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
