"""Where a request goes: an API's origin, paths joined to its base URL, query values.

A connection's requests and credentials go only to its own origin (scheme, host and
port, compared after parsing: ``HTTP://Shop.example.com:443`` is not
``https://shop.example.com``, and ``https://shop.example.com:443`` is). :class:`BaseUrl`
joins a path to the base URL and refuses a path that is a URL of another origin, so a
path rendered from a record, or a pagination link, cannot carry a token elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from connectors import _json
from connectors.errors import PermanentError

if TYPE_CHECKING:
    import httpx


class Origin(NamedTuple):
    """(scheme, host, port) of a URL after parsing: case-insensitive, default port filled in."""

    scheme: str
    host: str
    port: int | None

    @classmethod
    def of(cls, url: httpx.URL | str) -> Origin:
        """The origin of ``url``; an unparsable URL has the empty origin ``("", "", None)``."""
        import httpx  # when used: loading a flow does not import it (start-up)

        if not isinstance(url, httpx.URL):
            try:
                url = httpx.URL(url)
            except httpx.InvalidURL:
                return cls("", "", None)
        default = {"http": 80, "https": 443}.get(url.scheme)
        return cls(url.scheme, url.host, url.port or default)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port is not None else "")


class BaseUrl:
    """An API's root URL, to which request paths are appended (its query string is kept)."""

    def __init__(self, base_url: str):
        self.origin = Origin.of(base_url)
        parts = urlsplit(base_url)
        self._prefix = f"{parts.scheme}://{parts.netloc}"
        self._path, self._query = parts.path, parts.query
        self._join_at = parts.path if parts.path.endswith("/") else parts.path + "/"

    def join(self, path: str) -> str:
        """The URL of ``path``: appended to the base path, with the base query first.

        ``"/orders?x=1"`` on ``https://erp/api?shop=b`` is ``https://erp/api/orders?shop=b&x=1``;
        ``""`` is the base URL itself. A path that is a URL (a pagination link, or
        ``HTTP://host/x`` rendered from a record) is taken as it is only when it has the
        base URL's origin; another origin raises :class:`PermanentError`.
        """
        if not path.startswith("/") or path.startswith("//"):
            import httpx

            parsed = httpx.URL(path)
            if parsed.host and not parsed.scheme:  # //host/x takes base_url's scheme
                path = f"{self.origin.scheme}:{path}"
                parsed = httpx.URL(path)
            if parsed.scheme or parsed.host:
                origin = Origin.of(parsed)
                if origin != self.origin:
                    raise PermanentError(
                        f"refusing to send to another origin, {origin}: requests and "
                        f"credentials go only to the connection's own, {self.origin} "
                        "(a path is appended to base_url: start it with '/')"
                    )
                return path
        path, _, query = path.partition("#")[0].partition("?")
        path = self._join_at + path.lstrip("/") if path else self._path
        if self._query:
            query = f"{self._query}&{query}" if query else self._query
        return f"{self._prefix}{path}?{query}" if query else self._prefix + path


def query_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query values as text: a Decimal keeps its digits, booleans are true/false, None is left
    out, a list repeats the parameter, anything else is sent as JSON."""
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


def path_of(url: str) -> str:
    """A URL's path, for messages: never the query string, which may carry secrets."""
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "<invalid url>"
