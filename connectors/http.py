"""HTTP APIs as sources (paged JSON reads) and actions (one request per record).

One ``httpx.Client`` per connector and thread, created on first use: the engine's lanes
each send through their own client and connection. (With one client shared by 16 lanes,
the lanes queued on its connection pool's lock; see docs/benchmarks.md.) Errors are
classified by class, so the engine's retry policy never reads a message:

* ``TransientError``: timeouts, connection errors, 408, 429, 5xx, and 409 when an
  ``Idempotency-Key`` was sent (the target is still processing the same key);
  ``retry_after`` comes from a ``Retry-After`` header (seconds or an HTTP date).
* ``PermanentError``: every other 4xx, redirects that are not followed, a TLS
  certificate that cannot be verified, and requests that cannot be made (bad URL,
  another origin).

What goes where (docs/security.md, "What a connection sends where"): a request goes
only to the connection's own origin (``base_url``'s scheme, host and port, compared
after parsing); a path or a pagination link that leads elsewhere is refused. The
client follows no redirect by itself: this module follows one to the same origin (with
the credentials), to an origin listed in ``redirect_origins`` (without them), and never
one that would turn a POST into a GET (301/302/303), which is an error, not a success.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import re
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from connectors import _json
from connectors.base import Connector, Item, Lint, Request, Response
from connectors.errors import PermanentError, TransientError

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_TRANSIENT_STATUSES = frozenset({408, 429})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TO_GET = frozenset({301, 302, 303})  # clients turn a POST into a GET on these
_MAX_REDIRECTS = 10
# headers that may follow a redirect to another (listed) origin: no credentials
_CROSS_ORIGIN_HEADERS = frozenset({"content-type", "idempotency-key"})
_DELTA_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_PARAMS = {
    "type": "object",
    "additionalProperties": {
        "type": ["string", "number", "boolean", "null", "array"],
        "items": {"type": ["string", "number", "boolean"]},
    },
}


def _tagged(
    what: str, variants: dict[str, dict[str, dict[str, Any]]], required: dict[str, list[str]]
) -> dict[str, Any]:
    """An object whose ``type`` picks the variant; each variant lists its own options.

    Written with if/then rather than oneOf so a mistake is reported precisely ("no option
    'tokn'", "'next' is required") instead of "not valid under any of the given schemas".
    """
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": list(variants), "description": f"Kind of {what}."}},
        "allOf": [
            {
                "if": {"required": ["type"], "properties": {"type": {"const": kind}}},
                "then": {
                    "additionalProperties": False,
                    "required": required.get(kind, []),
                    "properties": {
                        "type": {"const": kind, "description": f"Kind of {what}."},
                        **fields,
                    },
                },
            }
            for kind, fields in variants.items()
        ],
    }


def _text(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


class HttpConnector(Connector):
    """JSON over HTTP: paged reads with link, cursor or page pagination; one call per record."""

    name: ClassVar[str] = "http"
    description: ClassVar[str] = "HTTP/JSON APIs: paged reads (source) and requests (action)."
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["base_url"],
        "properties": {
            "base_url": {
                "type": "string",
                "pattern": "^https?://",
                "description": "Root URL of the API; call and read paths are appended to its "
                "path (a query string in it is kept). Requests and credentials go only to "
                "its origin (scheme, host and port).",
            },
            "auth": {
                **_tagged(
                    "authentication",
                    {
                        "bearer": {"token": _text("Sent as 'Authorization: Bearer <token>'.")},
                        "basic": {
                            "username": _text("Basic auth user name."),
                            "password": _text("Basic auth password."),
                        },
                        "header": {
                            "name": _text("Header name, e.g. X-Api-Key."),
                            "value": _text("Header value."),
                        },
                    },
                    required={
                        "bearer": ["token"],
                        "basic": ["username", "password"],
                        "header": ["name", "value"],
                    },
                ),
                "description": "Credentials sent with every request (only to base_url's origin).",
            },
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 30,
                "description": "Seconds to wait to connect, and for each read or write.",
            },
            "headers": {**_STRING_MAP, "description": "Headers sent with every request."},
            "verify": {
                "type": ["boolean", "string"],
                "default": True,
                "description": "Verify TLS certificates (true), skip it (false, warned "
                "about), or the path of a CA bundle to verify against.",
            },
            "redirect_origins": {
                "type": "array",
                "items": {"type": "string", "pattern": "^https?://"},
                "description": "Other origins a redirect may lead to, e.g. "
                "['https://files.example.com'] for downloads; such a redirect is followed "
                "without the connection's credentials and headers. A redirect to any other "
                "origin is an error.",
            },
        },
    }
    read_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {
                "type": "string",
                "default": "",
                "description": "Path of the resource, appended to base_url.",
            },
            "params": {**_PARAMS, "description": "Query parameters of the first request."},
            "records": {
                "type": "string",
                "description": "Dotted path to the list of records in the JSON body, e.g. "
                "'data.orders'; by default the body itself, which must then be a list.",
            },
            "pagination": {
                **_tagged(
                    "pagination",
                    {
                        "link": {},
                        "cursor": {
                            "param": _text("Query parameter that carries the cursor."),
                            "next": _text(
                                "Dotted path in the body to the next cursor; paging stops "
                                "when it is missing, null or empty."
                            ),
                        },
                        "page": {
                            "param": _text(
                                "Query parameter that carries the page number.", default="page"
                            ),
                            "start": {
                                "type": "integer",
                                "default": 1,
                                "description": "Number of the first page.",
                            },
                            "size_param": _text("Query parameter that carries the page size."),
                            "size": {
                                "type": "integer",
                                "minimum": 1,
                                "description": "Page size to ask for (sent as size_param).",
                            },
                        },
                    },
                    required={"cursor": ["param", "next"]},
                ),
                "description": "How to fetch the next page: link (the Link header's "
                'rel="next"), cursor (a cursor from the body) or page (numbered pages, '
                "until one is empty). By default there is one page.",
            },
            "cursor_param": {
                "type": "string",
                "description": "Incremental reads: query parameter that receives the last "
                "committed cursor (not sent on the first run).",
            },
            "cursor_field": {
                "type": "string",
                "description": "Dotted path of the record field whose value becomes the "
                "record's position (the cursor to resume after it).",
            },
        },
    }
    call_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "method": {
                "type": "string",
                "enum": list(METHODS),
                "default": "POST",
                "description": "HTTP method.",
            },
            "path": {
                "type": "string",
                "description": "Path appended to base_url, e.g. '/orders/{{ record.id }}'.",
            },
            "headers": {**_STRING_MAP, "description": "Headers of this request only."},
            "params": {**_PARAMS, "description": "Query parameters."},
            "body": {"description": "Any JSON value, sent as application/json."},
        },
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self._local = threading.local()  # .client: this thread's client
        self._clients: list[httpx.Client] = []  # every thread's, to close them
        self._lock = threading.Lock()
        base_url = str(self.options.get("base_url", ""))
        self._origin = _origin(base_url)
        # base_url in the parts a path is joined to: prefix + path + "?" + query
        parts = urlsplit(base_url)
        self._prefix = f"{parts.scheme}://{parts.netloc}"
        self._base_path, self._base_query = parts.path, parts.query
        self._join_at = parts.path if parts.path.endswith("/") else parts.path + "/"
        self._redirect_origins = frozenset(
            _origin(str(url)) for url in self.options.get("redirect_origins") or ()
        )
        self._credentials = self._credential_headers()

    def _credential_headers(self) -> dict[str, str]:
        """Connection headers and credentials: sent to the connection's own origin only."""
        headers = {str(k): str(v) for k, v in (self.options.get("headers") or {}).items()}
        spec = self.options.get("auth") or {}
        kind = spec.get("type")
        if kind == "bearer":
            headers["Authorization"] = f"Bearer {self.declare_secret(str(spec.get('token')))}"
        elif kind == "basic":
            user, password = (
                str(spec.get("username")),
                self.declare_secret(str(spec.get("password"))),
            )
            pair = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {self.declare_secret(pair)}"
        elif kind == "header":
            headers[str(spec.get("name"))] = self.declare_secret(str(spec.get("value")))
        return headers

    @classmethod
    def lint(
        cls, role: str, options: Mapping[str, Any], connection: Mapping[str, Any]
    ) -> list[Lint]:
        """Warn about ``verify: false``."""
        if role == "connection" and options.get("verify") is False:
            return [
                Lint(
                    ("verify",),
                    "verify: false turns off TLS certificate checks: anyone on the network "
                    "path can read and change the requests, credentials included; give "
                    "verify the path of the CA bundle that signed the server's certificate",
                )
            ]
        return []

    @property
    def client(self) -> httpx.Client:
        """This thread's client, created on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._make_client()
            with self._lock:
                self._clients.append(client)
                self._local.client = client
        return client

    def _make_client(self) -> httpx.Client:
        # No credentials and no redirects at this level: _send adds the one and follows
        # the other, checking the origin of every request it makes.
        if (self.options.get("auth") or {}).get("type") not in (None, "bearer", "basic", "header"):
            raise PermanentError(f"unknown auth type {self.options['auth'].get('type')!r}")
        try:
            return httpx.Client(
                headers={"Accept": "application/json"},
                timeout=float(self.options.get("timeout", 30)),
                verify=_verify(self.options.get("verify", True)),
                follow_redirects=False,
            )
        except OSError as exc:  # the CA bundle named by verify
            raise PermanentError(f"cannot load the CA bundle: {exc.strerror}") from None

    def close(self) -> None:
        """Close every thread's client; a later call opens a new one."""
        with self._lock:
            clients, self._clients = self._clients, []
            self._local = threading.local()
        for client in clients:
            client.close()

    # -- source --------------------------------------------------------------

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        """Yield the records of every page, one page in memory at a time."""
        params = dict(options.get("params") or {})
        if options.get("cursor_param") and cursor is not None:
            params[options["cursor_param"]] = cursor
        paging = options.get("pagination") or {}
        kind = paging.get("type")
        page = paging.get("start", 1)
        if kind == "page":
            params[paging.get("param", "page")] = page
            if paging.get("size_param") and paging.get("size"):
                params[paging["size_param"]] = paging["size"]
        url: str = options.get("path", "")
        seen: set[str] = set()
        while True:
            response = self._send("GET", url, params=params)
            body = _decode(response)
            records = _records(body, options.get("records"))
            for record in records:
                position = _position(record, options.get("cursor_field"))
                yield Item(data=record, position=position)
            if kind == "link":
                link = response.links.get("next", {}).get("url")
                if not link:
                    return
                url, params = str(response.url.join(link)), {}
                if url in seen:
                    return  # a server that links a page to itself
                seen.add(url)
            elif kind == "cursor":
                try:
                    token = _json.dotted(body, paging["next"])
                except KeyError:
                    token = None
                if token in (None, "") or token == params.get(paging["param"]):
                    return
                params[paging["param"]] = token
            elif kind == "page":
                if not records:
                    return
                page += 1
                params[paging.get("param", "page")] = page
            else:
                return

    # -- action --------------------------------------------------------------

    def call(self, request: Request) -> Response:
        """Send one request; return the decoded response or raise a classified error."""
        options = request.options
        method = str(options.get("method", "POST")).upper()
        try:
            headers = httpx.Headers(self._credentials)
            headers.update({str(k): str(v) for k, v in (options.get("headers") or {}).items()})
        except UnicodeEncodeError:
            raise PermanentError("header names and values must be ASCII") from None
        if request.idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_header(request.idempotency_key)
        content = None
        if "body" in options and options["body"] is not None:
            try:
                content = _json.dumps(options["body"]).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise PermanentError(f"the body cannot be sent as JSON: {exc}") from None
            if "Content-Type" not in headers:
                headers["Content-Type"] = "application/json"
        response = self._send(
            method,
            str(options["path"]),
            params=options.get("params"),
            headers=headers,
            content=content,
            idempotent=request.idempotency_key is not None,
        )
        # The side effect has happened: a body that does not parse is returned as text.
        body = _decode(response, strict=False)
        return Response(body=body, status=response.status_code, headers=dict(response.headers))

    # -- both ----------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: httpx.Headers | None = None,
        content: bytes | None = None,
        idempotent: bool = False,
    ) -> httpx.Response:
        """One request to the connection's own origin, and the redirects it may follow."""
        client = self.client
        url = path

        def where() -> str:  # for error messages only: never the query, which may hold secrets
            return f"{method} {_path_of(url)}"

        try:
            try:
                url = self._url(path)
            except PermanentError as exc:
                raise PermanentError(f"{where()}: {exc}") from None
            query = _query(params)
            if query:  # merged with the query the URL has (httpx's params would replace it)
                url = str(httpx.URL(url).copy_merge_params(query))
            if headers is None:
                headers = httpx.Headers(self._credentials)
            response = client.request(method, url, headers=headers, content=content)
            for _ in range(_MAX_REDIRECTS):
                if response.status_code not in _REDIRECTS or "Location" not in response.headers:
                    break
                url, same_origin = self._redirect(method, response)
                if not same_origin:  # a listed origin: no credentials, no connection headers
                    headers = httpx.Headers(
                        {k: v for k, v in headers.items() if k.lower() in _CROSS_ORIGIN_HEADERS}
                    )
                response = client.request(method, url, headers=headers, content=content)
            else:
                if response.status_code in _REDIRECTS:
                    raise PermanentError(f"{where()}: more than {_MAX_REDIRECTS} redirects")
        except httpx.TimeoutException:
            raise TransientError(f"{where()}: timed out") from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise PermanentError(f"{where()}: {type(exc).__name__}") from None
        except httpx.RequestError as exc:  # connection refused or reset, proxy, TLS, decoding
            certificate = _certificate_failure(exc)
            if certificate is not None:
                raise PermanentError(
                    f"{where()}: the TLS certificate of {_show(_origin(url))} cannot be "
                    f"verified ({certificate}); not retried: give verify the path of the CA "
                    "bundle that signed it, or fix the server's certificate"
                ) from None
            raise TransientError(f"{where()}: {type(exc).__name__}") from None
        except UnicodeEncodeError:
            raise PermanentError(f"{where()}: header names and values must be ASCII") from None
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            # The message may quote a header value (a token): name the class only.
            raise PermanentError(
                f"{where()}: cannot build the request: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if status < 300:
            return response
        message = f"{method} {response.url.path} -> {status} {response.reason_phrase}"
        body = _decode(response, strict=False)
        if status in _TRANSIENT_STATUSES or status >= 500 or (status == 409 and idempotent):
            raise TransientError(
                message,
                status=status,
                response=body,
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        raise PermanentError(message, status=status, response=body)

    def _url(self, path: str) -> str:
        """The URL of ``path``: appended to base_url's path, with base_url's query kept.

        A path that is a URL itself (a pagination link, or ``HTTP://host/x`` rendered
        from a record) is used as it is only when it has the connection's own origin.
        """
        if not path.startswith("/") or path.startswith("//"):
            parsed = httpx.URL(path)
            if parsed.host and not parsed.scheme:  # //host/x takes base_url's scheme
                path = f"{self._origin[0]}:{path}"
                parsed = httpx.URL(path)
            if parsed.scheme or parsed.host:
                origin = _origin(parsed)
                if origin != self._origin:
                    raise PermanentError(
                        f"refusing to send to another origin, {_show(origin)}: requests and "
                        f"credentials go only to the connection's own, {_show(self._origin)} "
                        "(a path is appended to base_url: start it with '/')"
                    )
                return path
        path, _, query = path.partition("#")[0].partition("?")
        if path:
            path = self._join_at + path.lstrip("/")
        else:
            path = self._base_path
        if self._base_query:
            query = f"{self._base_query}&{query}" if query else self._base_query
        return f"{self._prefix}{path}?{query}" if query else self._prefix + path

    def _redirect(self, method: str, response: httpx.Response) -> tuple[str, bool]:
        """Where a redirect leads and whether that is the connection's own origin;
        a redirect that must not be followed raises ``PermanentError``."""
        status = response.status_code
        target = response.url.join(response.headers["Location"])
        what = f"{method} {response.url.path} -> {status} {response.reason_phrase}"
        if status in _TO_GET and method not in ("GET", "HEAD"):
            raise PermanentError(
                f"{what}, to {_show(_origin(target))}{target.path}: following it would "
                f"turn the {method} into a GET, so it is not followed and the {method} is not "
                "taken as done"
                + (
                    " (a 303 usually means the target applied it: check there before replaying)"
                    if status == 303
                    else ""
                ),
                status=status,
            )
        origin = _origin(target)
        if origin == self._origin:
            return str(target), True
        if origin in self._redirect_origins:
            return str(target), False
        if origin[:2] == ("https", self._origin[1]) and self._origin[0] == "http":
            hint = "the API moved to https: start base_url with https://"
        else:
            hint = f"list {_show(origin)} under redirect_origins to follow it, without credentials"
        raise PermanentError(
            f"{what}: redirected to {_show(origin)}, another origin than the connection's "
            f"({_show(self._origin)}); not followed, since requests and credentials go only "
            f"there ({hint})",
            status=status,
        )


def idempotency_header(key: str) -> str:
    """The ``Idempotency-Key`` value: a structured-field string, ``"<key>"``.

    Quotes and backslashes are escaped; characters a header cannot carry (non-ASCII,
    control characters) are percent-encoded as UTF-8, so every key maps to one value.
    """
    out = []
    for char in key:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~" and char != "%":
            out.append(char)
        else:
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
    return '"' + "".join(out) + '"'


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _origin(url: httpx.URL | str) -> tuple[str, str, int | None]:
    """(scheme, host, port) after parsing: case-insensitive, default ports filled in."""
    if not isinstance(url, httpx.URL):
        try:
            url = httpx.URL(url)
        except httpx.InvalidURL:
            return "", "", None
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _show(origin: tuple[str, str, int | None]) -> str:
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def _certificate_failure(exc: BaseException) -> str | None:
    """Why the server's TLS certificate was refused, when that is what ``exc`` is about."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    return None


def _verify(value: bool | str) -> bool | ssl.SSLContext:
    if isinstance(value, str):
        return ssl.create_default_context(cafile=value)
    return bool(value)


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query values as strings: a Decimal keeps its digits, booleans are true/false."""
    if not params:
        return None

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, Decimal | int | float):
            return str(value)
        return value if isinstance(value, str) else _json.dumps(value)

    return {
        str(key): [text(v) for v in value] if isinstance(value, list) else text(value)
        for key, value in params.items()
        if value is not None
    }


def _decode(response: httpx.Response, *, strict: bool = True) -> Any:
    """JSON (fractions as Decimal) when the content type says JSON, else text; None if empty."""
    if not response.content:
        return None
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return _json.loads(response.content)
        except ValueError:
            if strict:
                raise TransientError(
                    f"{response.request.method} {response.url.path}: "
                    "response says JSON but does not parse (truncated?)",
                    status=response.status_code,
                    response=response.text,
                ) from None
    return response.text


def _records(body: Any, path: str | None) -> list[Any]:
    try:
        records = _json.dotted(body, path)
    except KeyError:
        keys = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise PermanentError(f"no {path!r} in the response body (it has: {keys})") from None
    if records is None:
        return []
    if not isinstance(records, list):
        where = f"{path!r} in the response" if path else "the response body"
        raise PermanentError(f"{where} is a {type(records).__name__}, not a list of records")
    return records


def _position(record: Any, field: str | None) -> Any:
    if not field:
        return None
    try:
        return _json.dotted(record, field)
    except KeyError:
        return None


def _path_of(url: str) -> str:
    """A URL's path for messages: never the query string, which may carry secrets."""
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "<invalid url>"
