"""An httpx transport on the standard library's ``http.client``: the same requests, for
less CPU.

httpx's own transport (httpcore and h11, in pure Python) cost about 0.4 ms of CPU per
request on the project's machine, twice what ``http.client`` (its parser is in C) does
for the same request (docs/benchmarks.md, section 6): at hundreds of sends a second that
is a core's worth. :class:`StdlibTransport` keeps everything else of httpx (the client,
its request and response models, content decoding, timeouts, proxies from the
environment, which httpx gives their own transports) and only moves the bytes.

:class:`DirectClient` sends through one without an ``httpx.Client`` around it: the
session follows redirects and adds credentials itself, so what the client adds per
request (its auth and redirect machinery, event hooks, a cookie jar walked through
``urllib`` twice per request) cost as much CPU again as the transport and the models
(0.30 against 0.15 ms per request); the direct client keeps the client's default
headers, its timeouts and its cookies (a jar used only once a server sets one).

One transport belongs to one thread (the session gives each thread a client of its
own), and keeps one kept-alive connection per origin. An idle connection the server has
closed is noticed before it is used (as httpcore does: it is readable), and replaced;
failures are raised as httpx's exceptions, so the session classifies them as it does
httpx's (connectors/httpkit/session.py): timeouts and dropped connections are transient,
a certificate that cannot be verified is permanent.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
from typing import NoReturn

import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: what an ``httpx.Client`` sends unless told otherwise (the encodings httpx always decodes)
_CLIENT_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": f"python-httpx/{httpx.__version__}",
}


class StdlibTransport(httpx.BaseTransport):
    """HTTP/1.1 through ``http.client``, TLS through ``ssl_context`` (None: http only)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        self.ssl_context = ssl_context
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}", request=request)
        host = url.host
        if not host:
            raise httpx.UnsupportedProtocol("the URL has no host", request=request)
        origin = (scheme, host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = request.read()
        conn = self._connections.pop(origin, None)
        if conn is not None and _closed_by_peer(conn):
            conn.close()
            conn = None
        if conn is None:
            conn = self._connect(request, origin, timeouts.get("connect"))
        try:
            conn.sock.settimeout(timeouts.get("read"))
            target = url.raw_path.decode("ascii")
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            answer = conn.getresponse()
            content = answer.read()
        except BaseException as exc:
            conn.close()
            _raise_as_httpx(exc, request, "read")
        if answer.will_close:
            conn.close()
        else:
            self._connections[origin] = conn
        return httpx.Response(
            answer.status,
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.getheaders()],
            stream=httpx.ByteStream(content),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1" if answer.version == 11 else b"HTTP/1.0",
                "reason_phrase": answer.reason.encode("latin-1", "replace"),
            },
        )

    def _connect(
        self, request: httpx.Request, origin: tuple[str, str, int], timeout: float | None
    ) -> http.client.HTTPConnection:
        scheme, host, port = origin
        conn: http.client.HTTPConnection
        if scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException as exc:
            conn.close()
            _raise_as_httpx(exc, request, "connect")
        return conn

    def close(self) -> None:
        connections, self._connections = self._connections, {}
        for conn in connections.values():
            conn.close()


class DirectClient:
    """What the session asks of an ``httpx.Client`` (:meth:`request`, :meth:`close`),
    sent straight through a :class:`StdlibTransport`; for one thread. ``headers`` go with
    every request (over httpx's defaults), ``timeout`` is seconds to connect and for each
    read or write. Follows no redirect."""

    def __init__(
        self,
        transport: StdlibTransport,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ):
        self.transport = transport
        self.headers = {**_CLIENT_HEADERS, **(headers or {})}
        self.timeout = httpx.Timeout(timeout).as_dict()
        self.cookies = httpx.Cookies()
        self.is_closed = False

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: httpx.Headers | dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send one request and read its answer (decoded: gzip, deflate)."""
        sent = httpx.Headers(self.headers)
        if headers:
            sent.update(headers)
        request = httpx.Request(
            method, url, headers=sent, content=content, extensions={"timeout": self.timeout}
        )
        if self.cookies.jar:
            self.cookies.set_cookie_header(request)
        response = self.transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        if "set-cookie" in response.headers:
            self.cookies.extract_cookies(response)
        return response

    def close(self) -> None:
        self.is_closed = True
        self.transport.close()


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection can no longer be used: the server closed it
    (or sent something unasked), which makes its socket readable."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _raise_as_httpx(exc: BaseException, request: httpx.Request, phase: str) -> NoReturn:
    """Raise the httpx exception for a failure of ``http.client`` or the socket under it
    (``exc`` as its cause, where the session looks for a refused certificate)."""
    kind: type[httpx.TransportError]
    if isinstance(exc, TimeoutError):  # socket.timeout too
        kind = httpx.ConnectTimeout if phase == "connect" else httpx.ReadTimeout
    elif isinstance(exc, OSError):  # refused, reset, a TLS failure (ssl.SSLError)
        kind = httpx.ConnectError if phase == "connect" else httpx.ReadError
    elif isinstance(exc, http.client.HTTPException):  # a bad status line, a short body
        kind = httpx.RemoteProtocolError
    else:  # a request that cannot be built (the session says so), KeyboardInterrupt
        raise exc
    raise kind(f"{type(exc).__name__}: {exc}", request=request) from exc
