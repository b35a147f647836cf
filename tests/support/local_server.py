"""A small real HTTP server for the connector tests: answers given per route, requests kept.

Each route is a function of the request that returns ``(status, headers, body)``; a body
that is not ``bytes`` or ``str`` is sent as JSON (Decimal digits kept exactly).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connectors import _json


@dataclass
class Seen:
    """One request as the server received it; header names are lower-case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    peer_port: int = 0  # the client's TCP port: one per connection it opened

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


Reply = tuple[int, dict[str, str], Any]


@dataclass
class LocalServer:
    """ThreadingHTTPServer on 127.0.0.1, port chosen by the OS, serving ``routes``."""

    routes: dict[tuple[str, str], Callable[[Seen], Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def on(self, method: str, path: str, reply: Callable[[Seen], Reply]) -> None:
        self.routes[(method, path)] = reply

    def reset(self) -> None:
        """Forget routes and requests (one server serves a whole test module)."""
        self.routes.clear()
        self.seen.clear()

    def pause(self, seconds: float) -> None:
        """Sleep inside a handler, cut short when the server stops."""
        self.stop.wait(seconds)

    def __enter__(self) -> LocalServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as an API server would

            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Seen(
                    method=self.command,
                    path=url.path,
                    query=parse_qs(url.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                    peer_port=self.client_address[1],
                )
                server.seen.append(request)
                reply = server.routes.get((self.command, url.path))
                status, headers, body = reply(request) if reply else (404, {}, {"error": "nope"})
                if isinstance(body, str):
                    data, kind = body.encode(), "text/plain; charset=utf-8"
                elif isinstance(body, bytes):
                    data, kind = body, "application/json"
                else:
                    data, kind = _json.dumps(body).encode(), "application/json"
                self.send_response(status)
                headers = {"Content-Type": kind, **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"
