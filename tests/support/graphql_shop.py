"""A GraphQL-like shop on 127.0.0.1: orders, paged by cursor, as a web shop's Admin API.

Enough GraphQL for a client to be tested honestly: ``POST {API}/graphql.json`` with
``{"query", "variables"}`` and the access token in ``X-Shopify-Access-Token``. The query
is parsed (operation, variables, nested selections, aliases, arguments) and the answer
holds exactly the fields it selects; a field the schema does not have is a GraphQL error,
as a real server would say. One root field, ``orders(first: Int!, after: String,
sortKey: ID|UPDATED_AT)``, a connection: ``edges { cursor node {...} }``, ``nodes``,
``pageInfo { hasNextPage endCursor }``. Cursors are opaque (base64 of the last order's
sort key and id).

Orders are written here from the documented order fields (docs: RETAIL.md, "Web-shop
orders") in the GraphQL API's naming: ``id`` is the ``gid://shopify/Order/<id>``,
``legacyResourceId`` the numeric id as a string (ids above 2**53), money as decimal
strings in ``*Set { shopMoney { amount currencyCode } }``.

    with GraphQLShop() as shop:                 # shop.url, shop.endpoint, shop.token
        shop.add_order(name="#1005", total="12.00")
        shop.throttle(times=1)                  # the next query answers THROTTLED
        ...
        shop.requests                           # [{"headers", "query", "variables"}]
"""

from __future__ import annotations

import base64
import json
import re
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API = "/admin/api/2025-10"
TOKEN_HEADER = "X-Shopify-Access-Token"
TOKEN = "shpat-test-graphql"

_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|(\$?[A-Za-z_][A-Za-z0-9_]*)|(-?\d+(?:\.\d+)?)'
    r"|(\.\.\.|[{}()\[\]:!,=@]))"
)


class GraphQLError(Exception):
    """A problem with a query, answered as ``{"errors": [{"message": ...}]}``."""


def tokens(query: str) -> list[str]:
    """The query's tokens, without comments and commas (insignificant in GraphQL)."""
    out, at = [], 0
    while query[at:].strip():
        found = _TOKEN.match(query, at)
        if not found:
            raise GraphQLError(f"Parse error on {query[at : at + 10].strip()!r}")
        at = found.end()
        token = found.group(0).strip()
        if not found.group(1) and token != ",":
            out.append(token)
    return out


class Parser:
    """Operations of the shape ``query Name($v: T, ...) { field(arg: value) { ... } }``."""

    def __init__(self, query: str, variables: dict[str, Any]):
        self.tokens, self.at, self.variables = tokens(query), 0, variables

    def take(self, expected: str | None = None) -> str:
        if self.at >= len(self.tokens):
            raise GraphQLError("Parse error: unexpected end of query")
        token = self.tokens[self.at]
        if expected is not None and token != expected:
            raise GraphQLError(f"Parse error: expected {expected!r}, found {token!r}")
        self.at += 1
        return token

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def operation(self) -> list[tuple[str, str, dict, list]]:
        if self.peek() == "query":
            self.take()
            if self.peek() not in ("{", "("):
                self.take()  # the operation's name
            if self.peek() == "(":  # variable definitions: their values come from variables
                depth = 0
                while True:
                    token = self.take()
                    depth += {"(": 1, ")": -1}.get(token, 0)
                    if depth == 0:
                        break
        elif self.peek() != "{":
            raise GraphQLError(f"only queries are served here, not {self.peek()!r}")
        selection = self.selection()
        if self.peek() is not None:
            raise GraphQLError(f"Parse error: {self.peek()!r} after the operation")
        return selection

    def selection(self) -> list[tuple[str, str, dict, list]]:
        """[(alias, field, arguments, sub-selection)]"""
        self.take("{")
        fields = []
        while self.peek() != "}":
            alias = name = self.take()
            if self.peek() == ":":
                self.take()
                name = self.take()
            arguments = {}
            if self.peek() == "(":
                self.take()
                while self.peek() != ")":
                    key = self.take()
                    self.take(":")
                    arguments[key] = self.value()
                self.take(")")
            sub = self.selection() if self.peek() == "{" else []
            fields.append((alias, name, arguments, sub))
        self.take("}")
        return fields

    def value(self) -> Any:
        token = self.take()
        if token.startswith("$"):
            return self.variables.get(token[1:])
        if token.startswith('"'):
            return json.loads(token)
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        return {"true": True, "false": False, "null": None}.get(token, token)


# -- the schema: an order and its connection -------------------------------------------------

_MONEY = {"amount", "currencyCode"}
_MONEY_BAG = {"shopMoney": _MONEY, "presentmentMoney": _MONEY}
_SORT_KEYS = {"ID": "legacyResourceId", "UPDATED_AT": "updatedAt", "CREATED_AT": "createdAt"}
_ORDER_FIELDS = {
    "id",
    "legacyResourceId",
    "name",
    "email",
    "createdAt",
    "updatedAt",
    "processedAt",
    "currencyCode",
    "displayFinancialStatus",
    "displayFulfillmentStatus",
    "tags",
    "totalPriceSet",
    "subtotalPriceSet",
    "totalTaxSet",
    "lineItems",
}
_LINE_FIELDS = {"id", "sku", "title", "quantity", "originalUnitPriceSet"}


def _money(amount: str, currency: str = "EUR") -> dict[str, Any]:
    pair = {"amount": amount, "currencyCode": currency}
    return {"shopMoney": pair, "presentmentMoney": dict(pair)}


def make_order(
    number: int, *, name: str | None = None, total: str = "39.80", status: str = "PAID"
) -> dict[str, Any]:
    """An order node; its numeric id is above 2**53, as the platform's are."""
    order_id = 9_007_199_254_740_993 + number
    cent = Decimal("0.01")
    tax = str((Decimal(total) * 19 / 119).quantize(cent))  # 19 % included in the total
    return {
        "id": f"gid://shopify/Order/{order_id}",
        "legacyResourceId": str(order_id),
        "name": name or f"#{1000 + number}",
        "email": f"customer{number}@example.com",
        "createdAt": f"2026-03-01T09:{number:02d}:00+01:00",
        "updatedAt": f"2026-03-01T10:{number:02d}:00+01:00",
        "processedAt": f"2026-03-01T09:{number:02d}:05+01:00",
        "currencyCode": "EUR",
        "displayFinancialStatus": status,
        "displayFulfillmentStatus": "UNFULFILLED",
        "tags": ["web"],
        "totalPriceSet": _money(total),
        "subtotalPriceSet": _money(total),
        "totalTaxSet": _money(tax),
        "lineItems": [
            {
                "id": f"gid://shopify/LineItem/{order_id + 5000}",
                "sku": "TSHIRT-BLK-M",
                "title": "T-shirt black",
                "quantity": 2,
                "originalUnitPriceSet": _money(str((Decimal(total) / 2).quantize(cent))),
            }
        ],
    }


def _project(value: Any, selection: list, kind: str, known: set[str]) -> dict[str, Any]:
    out = {}
    for alias, name, _, sub in selection:
        if name == "__typename":
            out[alias] = kind
            continue
        if name not in known:
            raise GraphQLError(f"Field '{name}' doesn't exist on type '{kind}'")
        item = value[name]
        if name.endswith("Set"):
            out[alias] = {
                a: _project(item[n], s, "MoneyV2", _MONEY_BAG[n]) if n in _MONEY_BAG else _no(n)
                for a, n, _, s in sub
            }
        elif name == "lineItems":
            out[alias] = _connection(item, sub, "LineItem", _LINE_FIELDS, None, None)
        else:
            out[alias] = item
    return out


def _no(name: str) -> Any:
    raise GraphQLError(f"Field '{name}' doesn't exist on type 'MoneyBag'")


def _cursor(order: dict[str, Any]) -> str:
    key = json.dumps([order["updatedAt"], order["legacyResourceId"]])
    return base64.b64encode(key.encode()).decode()


def _connection(items, selection, kind, known, first, after) -> dict[str, Any]:
    start = 0
    if after is not None:
        cursors = [_cursor(item) for item in items]
        if after not in cursors:
            raise GraphQLError(f"Invalid cursor for current pagination sort: {after!r}")
        start = cursors.index(after) + 1
    page = items[start : start + first] if first is not None else items[start:]
    more = first is not None and start + first < len(items)
    out: dict[str, Any] = {}
    for alias, name, _, sub in selection:
        if name == "edges":
            out[alias] = [
                {
                    a: (_cursor(item) if n == "cursor" else _project(item, s, kind, known))
                    for a, n, _, s in sub
                }
                for item in page
            ]
        elif name == "nodes":
            out[alias] = [_project(item, sub, kind, known) for item in page]
        elif name == "pageInfo":
            info = {
                "hasNextPage": more,
                "hasPreviousPage": start > 0,
                "endCursor": _cursor(page[-1]) if page else None,
                "startCursor": _cursor(page[0]) if page else None,
            }
            out[alias] = {a: info[n] for a, n, _, _ in sub}
        else:
            raise GraphQLError(f"Field '{name}' doesn't exist on type '{kind}Connection'")
    return out


class GraphQLShop:
    """The shop's GraphQL endpoint on 127.0.0.1 (port chosen by the OS), orders in memory."""

    def __init__(self, orders: int = 5, token: str = TOKEN):
        self.token = token
        self.orders = [make_order(n) for n in range(1, orders + 1)]
        self.requests: list[dict[str, Any]] = []
        self._throttled = 0
        self._lock = threading.Lock()

    def add_order(self, **fields: Any) -> dict[str, Any]:
        """Another order, updated after every order so far."""
        with self._lock:
            order = make_order(len(self.orders) + 1, **fields)
            self.orders.append(order)
        return order

    def throttle(self, times: int = 1) -> None:
        """Answer the next ``times`` queries with a THROTTLED error, as the platform does."""
        self._throttled += times

    def answer(self, headers: dict[str, str], payload: Any) -> tuple[int, Any]:
        if headers.get(TOKEN_HEADER.lower()) != self.token:
            return 401, {"errors": "[API] Invalid API key or access token"}
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return 400, {"errors": {"query": "Required parameter missing or invalid"}}
        variables = payload.get("variables") or {}
        self.requests.append(
            {"headers": headers, "query": payload["query"], **{"variables": variables}}
        )
        if self._throttled:
            self._throttled -= 1
            return 200, {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}
        try:
            data = {}
            for alias, name, arguments, sub in Parser(payload["query"], variables).operation():
                if name != "orders":
                    raise GraphQLError(f"Field '{name}' doesn't exist on type 'QueryRoot'")
                unknown = set(arguments) - {"first", "after", "sortKey"}
                if unknown:
                    raise GraphQLError(f"orders: argument {sorted(unknown)[0]!r} is not served")
                first = arguments.get("first")
                if not isinstance(first, int) or not 0 < first <= 250:
                    raise GraphQLError("orders: first must be between 1 and 250")
                sort = _SORT_KEYS.get(arguments.get("sortKey") or "ID")
                if sort is None:
                    raise GraphQLError(f"orders: no sortKey {arguments['sortKey']!r}")
                with self._lock:
                    orders = sorted(
                        self.orders, key=lambda o: (o[sort], int(o["legacyResourceId"]))
                    )
                data[alias] = _connection(
                    orders, sub, "Order", _ORDER_FIELDS, first, arguments.get("after")
                )
        except GraphQLError as exc:
            return 200, {"errors": [{"message": str(exc)}]}
        return 200, {"data": data}

    # -- serving -----------------------------------------------------------------------------

    def __enter__(self) -> GraphQLShop:
        shop = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.split("?")[0] != f"{API}/graphql.json":
                    status, body = 404, {"errors": "Not Found"}
                else:
                    try:
                        payload = json.loads(raw or b"null")
                    except ValueError:
                        payload = None
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    status, body = shop.answer(headers, payload)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}{API}/graphql.json"
