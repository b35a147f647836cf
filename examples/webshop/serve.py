"""A small local web shop with a Shopify-like inventory API, for examples and tests.

    python examples/webshop/serve.py --port 0                  # prints its URL, serves
    python examples/webshop/serve.py --port 8100 --data out/shop.json --token-env WEBSHOP_TOKEN

Standard library only; listens on 127.0.0.1. The first line it prints is its base URL
(``http://127.0.0.1:PORT``); it serves until Ctrl-C or SIGTERM.

The API (JSON in, JSON out):

* ``POST`` or ``PUT /inventory_levels/set`` (``.json`` optional), like Shopify's
  ``inventory_levels/set``: body ``{"inventory_item_id" or "sku", "location_id",
  "available"}`` sets the absolute level of one item at one location and answers
  ``{"inventory_level": {inventory_item_id, sku, location_id, available, updated_at}}``.
  ``available`` must be a whole number; a body it cannot use is answered 422 with the
  reason.
* ``GET /inventory_levels`` (``.json`` optional): ``{"inventory_levels": [...]}``, sorted,
  optionally narrowed by ``?location_ids=1,2``, ``?skus=A,B`` or ``?inventory_item_ids=``.
* ``GET /_requests``: every request received so far (method, path, idempotency key,
  body, status, outcome), for people and tests checking what a flow sent;
  ``DELETE /_requests`` clears that log.

It honours the ``Idempotency-Key`` header as the IETF httpapi draft and Stripe do: a
repeat of a finished request with the same key and body gets the stored answer (header
``Idempotent-Replayed: true``) and changes nothing; the same key with another body is
answered 422; a repeat while the first is still being processed, 409.

Levels (and the idempotency keys seen) live in memory, or in a JSON file with
``--data FILE`` (rewritten atomically after every change, read back at start, so a
restarted shop keeps its levels and still recognises repeated requests). With
``--token-env NAME`` every API request must carry the header
``X-Shopify-Access-Token`` holding the value of that environment variable (401
otherwise); the token is never printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
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

TOKEN_HEADER = "X-Shopify-Access-Token"
_SET_PATHS = ("/inventory_levels/set", "/inventory_levels/set.json")
_LIST_PATHS = ("/inventory_levels", "/inventory_levels.json")
_MAX_BODY = 1_000_000


class WebShop:
    """The shop's state and HTTP server; ``with WebShop() as shop: ... shop.url``."""

    def __init__(self, port: int = 0, data: str | os.PathLike | None = None, token: str = ""):
        self.port = port
        self.data = Path(data) if data is not None else None
        self._token = token
        self._lock = threading.Lock()
        self._levels: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, dict[str, Any]] = {}  # idempotency key -> stored answer
        self._requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if self.data is not None and self.data.exists():
            saved = json.loads(self.data.read_text(encoding="utf-8"))
            self._levels = {_level_key(lv): lv for lv in saved.get("levels", [])}
            self._keys = {k: {**v, "done": True} for k, v in saved.get("keys", {}).items()}

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
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (the levels stay in the data file, if any)."""
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
        """Every inventory level, sorted by location and item."""
        with self._lock:
            return sorted(
                (dict(lv) for lv in self._levels.values()),
                key=lambda lv: (str(lv["location_id"]), _level_key(lv)),
            )

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far, oldest first."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def clear_requests(self) -> None:
        """Forget the request log (levels and idempotency keys stay)."""
        with self._lock:
            self._requests.clear()

    # -- the API ------------------------------------------------------------------------------

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
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "idempotency_key": key,
            "body": None,
        }
        try:
            status, extra, body, outcome = self._api(method, path, parts.query, headers, raw, entry)
        except _Refused as refused:
            status, extra, body, outcome = refused.status, {}, {"errors": refused.reason}, "refused"
        with self._lock:
            self._requests.append(
                {**entry, "n": len(self._requests) + 1, "status": status, "outcome": outcome}
            )
        return status, extra, body

    def _api(self, method, path, query, headers, raw, entry):
        if self._token and not hmac.compare_digest(
            headers.get(TOKEN_HEADER.lower(), "").encode(), self._token.encode()
        ):
            raise _Refused(401, f"missing or wrong {TOKEN_HEADER} header")
        if path in _LIST_PATHS and method == "GET":
            return 200, {}, {"inventory_levels": self._select(parse_qs(query))}, "read"
        if path not in _SET_PATHS:
            raise _Refused(404, f"no such resource {path}")
        if method not in ("POST", "PUT"):
            raise _Refused(405, f"{method} is not allowed on {path}; use POST or PUT")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise _Refused(400, "the body is not JSON") from None
        entry["body"] = body
        key = entry["idempotency_key"]
        if key is None:
            status, answer = self._set(body)
            return status, {}, answer, "applied" if status == 200 else "refused"
        fingerprint = json.dumps([path, body], sort_keys=True)
        with self._lock:
            stored = self._keys.get(key)
            if stored is None:
                stored = self._keys[key] = {"fingerprint": fingerprint, "done": False}
                first = True
            else:
                first = False
        if not first:
            if stored["fingerprint"] != fingerprint:
                raise _Refused(
                    422, f"Idempotency-Key {key!r} was already used with a different request"
                )
            if not stored["done"]:
                raise _Refused(409, f"a request with Idempotency-Key {key!r} is in progress")
            replayed = {"Idempotent-Replayed": "true"}
            return stored["status"], replayed, stored["answer"], "replayed"
        try:
            status, answer = self._set(body)
        except BaseException:
            with self._lock:
                self._keys.pop(key, None)
            raise
        with self._lock:
            stored.update(status=status, answer=answer, done=True)
            self._save()
        return status, {}, answer, "applied" if status == 200 else "refused"

    def _set(self, body: Any) -> tuple[int, dict[str, Any]]:
        problem = _check_level(body)
        if problem:
            return 422, {"errors": problem}
        level = {
            "inventory_item_id": body.get("inventory_item_id"),
            "sku": body.get("sku"),
            "location_id": body["location_id"],
            "available": body["available"],
            "updated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        with self._lock:
            self._levels[_level_key(level)] = level
            self._save()
        return 200, {"inventory_level": level}

    def _select(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        def wanted(name: str) -> set[str] | None:
            values = [v for raw in query.get(name, []) for v in raw.split(",") if v]
            return set(values) if values else None

        locations, skus, items = (
            wanted("location_ids"),
            wanted("skus"),
            wanted("inventory_item_ids"),
        )
        return [
            lv
            for lv in self.levels()
            if (locations is None or str(lv["location_id"]) in locations)
            and (skus is None or lv["sku"] in skus)
            and (items is None or str(lv["inventory_item_id"]) in items)
        ]

    def _save(self) -> None:
        """Write levels and finished keys to the data file atomically; call with the lock."""
        if self.data is None:
            return
        keys = {
            k: {"fingerprint": v["fingerprint"], "status": v["status"], "answer": v["answer"]}
            for k, v in self._keys.items()
            if v.get("done")
        }
        payload = json.dumps({"levels": list(self._levels.values()), "keys": keys}, indent=1)
        self.data.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.data.parent, prefix=f".{self.data.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(payload)
        os.replace(tmp, self.data)


class _Refused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _check_level(body: Any) -> str | None:
    """Why ``body`` is not a usable inventory level, or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = set(body) - {"inventory_item_id", "sku", "location_id", "available"}
    if unknown:
        return f"unknown field(s) {sorted(unknown)}"
    if body.get("inventory_item_id") is None and not body.get("sku"):
        return "give inventory_item_id or sku"
    location = body.get("location_id")
    if location is None or isinstance(location, bool) or location == "":
        return "location_id is required"
    available = body.get("available")
    if not isinstance(available, int) or isinstance(available, bool):
        return f"available must be a whole number, got {json.dumps(available)}"
    return None


def _level_key(level: dict[str, Any]) -> str:
    item = level.get("inventory_item_id")
    item = f"item:{item}" if item is not None else f"sku:{level.get('sku')}"
    return f"{item}@{level.get('location_id')}"


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
    server_version = "flowyard-webshop/1"

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument("--data", type=Path, help="JSON file keeping the levels across restarts")
    parser.add_argument(
        "--token-env",
        metavar="NAME",
        help="require the header X-Shopify-Access-Token to hold this environment variable",
    )
    args = parser.parse_args(argv)
    token = ""
    if args.token_env:
        token = os.environ.get(args.token_env, "")
        if not token:
            print(f"environment variable {args.token_env} is not set", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    shop = WebShop(port=args.port, data=args.data, token=token).start()
    print(shop.url, flush=True)
    print(
        f"web shop serving inventory levels on {shop.url}/inventory_levels"
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
