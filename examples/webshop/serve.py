"""A small local web shop with Shopify's and WooCommerce's stock APIs, for examples and tests.

    python examples/webshop/serve.py --port 0                  # prints its URL, serves
    python examples/webshop/serve.py --port 8100 --data .flowyard/webshop.json \
        --token-env WEBSHOP_TOKEN

Standard library only; listens on 127.0.0.1. The first line it prints is its base URL
(``http://127.0.0.1:PORT``); it serves until Ctrl-C or SIGTERM. This file is the server
(routing, idempotency, the request log, the data file, the command line); the APIs are
``webshop_shopify.py`` and ``webshop_woocommerce.py``, the shop's data ``webshop_state.py``.

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
import json
import os
import signal
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the modules next to this script
from webshop_shopify import TOKEN_HEADER, ShopifyAPI  # noqa: E402
from webshop_state import (  # noqa: E402
    DEMO_CATALOG,
    CatalogError,
    Refusal,
    ShopState,
    load_catalog,
)
from webshop_woocommerce import PREFIX as WOO_PREFIX  # noqa: E402
from webshop_woocommerce import WooCommerceAPI  # noqa: E402

__all__ = ["DEMO_CATALOG", "TOKEN_HEADER", "CatalogError", "WebShop", "load_catalog", "main"]

_MAX_BODY = 1_000_000


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
        self._keys: dict[str, dict[str, Any]] = {}  # idempotency key -> stored answer
        self._requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        if self.data is not None and self.data.exists():
            saved = json.loads(self.data.read_text(encoding="utf-8"))
            self.state = ShopState(
                catalog=load_catalog({k: saved[k] for k in ("locations", "products")}),
                levels={(lv["inventory_item_id"], lv["location_id"]): lv for lv in saved["levels"]},
                woo_stock={int(k): v for k, v in saved["woo_stock"].items()},
            )
            self._keys = {k: {**v, "done": True} for k, v in saved["keys"].items()}
        else:
            self.state = ShopState(catalog=load_catalog(catalog))
        self._apis = (
            ShopifyAPI(self.state, token, lambda: self.url),
            WooCommerceAPI(self.state, token, lambda: self.url),
        )

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
        with self.state.lock:
            levels = self.state.levels
            return [dict(levels[key]) for key in sorted(levels, key=lambda k: k[::-1])]

    def woo_stock(self) -> dict[int, int | None]:
        """WooCommerce stock quantity by product or variation id (managed stock only)."""
        with self.state.lock:
            return {
                woo_id: stock["stock_quantity"]
                for woo_id, stock in sorted(self.state.woo_stock.items())
                if stock["manage_stock"]
            }

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far, oldest first."""
        with self.state.lock:
            return [dict(r) for r in self._requests]

    def clear_requests(self) -> None:
        """Forget the request log (the shop's data and idempotency keys stay)."""
        with self.state.lock:
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
        except Refusal as refusal:
            status, body, outcome = refusal.status, refusal.body, "refused"
        with self.state.lock:
            self._requests.append(
                {**entry, "n": len(self._requests) + 1, "status": status, "outcome": outcome}
            )
        return status, extra, body

    def _route(self, method, path, query, headers, raw, entry):
        for api in self._apis:
            rest = api.resource(path)
            if rest is not None:
                break
        else:
            raise Refusal(404, {"errors": "Not Found"})
        api.check_auth(headers)
        if method == "GET":
            params = {name: values[-1] for name, values in parse_qs(query).items()}
            return (*api.read(rest, params, path), "read")
        if method not in ("POST", "PUT", "PATCH"):
            raise Refusal(405, {"errors": f"{method} is not allowed on {path}"})
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise api.not_json() from None
        entry["body"] = body
        return self._once(entry, lambda: api.write(method, rest, body))

    def _once(self, entry, write):
        """Perform ``write`` once per Idempotency-Key, as the draft says."""
        key = entry["idempotency_key"]
        if key is None:
            status, body = self._apply(write)
            return status, {}, body, "applied"
        fingerprint = json.dumps([entry["method"], entry["path"], entry["body"]], sort_keys=True)
        with self.state.lock:
            stored = self._keys.get(key)
            first = stored is None
            if first:
                stored = self._keys[key] = {"fingerprint": fingerprint, "done": False}
        if not first:
            if stored["fingerprint"] != fingerprint:
                message = f"Idempotency-Key {key!r} was already used with another request"
                raise Refusal(422, {"errors": message})
            if not stored["done"]:
                message = f"a request with Idempotency-Key {key!r} is in progress"
                raise Refusal(409, {"errors": message})
            return stored["status"], {"Idempotent-Replayed": "true"}, stored["answer"], "replayed"
        try:
            status, body = self._apply(write)
        except Refusal as refusal:  # a refusal is an answer too: a repeat gets it again
            status, body = refusal.status, refusal.body
        except BaseException:
            with self.state.lock:
                self._keys.pop(key, None)
            raise
        with self.state.lock:
            stored.update(status=status, answer=body, done=True)
            self._save()
        return status, {}, body, "applied" if status < 400 else "refused"

    def _apply(self, write):
        with self.state.lock:
            status, body = write()
            self._save()
        return status, body

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
                **self.state.catalog,
                "levels": list(self.state.levels.values()),
                "woo_stock": {str(k): v for k, v in self.state.woo_stock.items()},
                "keys": keys,
            },
            indent=1,
        )
        self.data.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.data.parent, prefix=f".{self.data.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(payload)
        os.replace(tmp, self.data)


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
