"""HTTP APIs as sources (paged JSON reads) and actions (one request per record).

The connector is the YAML face of :mod:`connectors.httpkit`: its connection options are
:func:`~connectors.httpkit.connection_schema`, it sends through an
:class:`~connectors.httpkit.HttpSession` (one client per thread; requests and
credentials only to ``base_url``'s origin; redirects checked; every failure classified
as ``TransientError`` or ``PermanentError``), and each ``pagination`` type is one of the
kit's paginators. What goes where is in docs/security.md, "What a connection sends where";
how failures are classified in docs/connectors.md, "Errors: transient or permanent".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from connectors import _json
from connectors.base import Check, Connector, Item, LaneKind, Lint, Request, Response
from connectors.errors import PermanentError, TransientError
from connectors.httpkit import (
    HttpSession,
    LinkHeader,
    PageNumber,
    PageRequest,
    Paginator,
    QueryCursor,
    connection_schema,
    decode_body,
    idempotency_header,
    lint_connection,
    retry_after,
    tagged_schema,
)
from connectors.httpkit.schema import STRING_MAP, text

if TYPE_CHECKING:
    from connectors.httpkit.session import Client

__all__ = ["HttpConnector", "idempotency_header", "retry_after"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PARAMS = {
    "type": "object",
    "additionalProperties": {
        "type": ["string", "number", "boolean", "null", "array"],
        "items": {"type": ["string", "number", "boolean"]},
    },
}


class HttpConnector(Connector):
    """JSON over HTTP: paged reads with link, cursor or page pagination; one call per record."""

    name: ClassVar[str] = "http"
    description: ClassVar[str] = "HTTP/JSON APIs: paged reads (source) and requests (action)."
    lanes: ClassVar[LaneKind] = "processes"
    options_schema: ClassVar[dict[str, Any]] = connection_schema()
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
                **tagged_schema(
                    "pagination",
                    {
                        "link": {},
                        "cursor": {
                            "param": text("Query parameter that carries the cursor."),
                            "next": text(
                                "Dotted path in the body to the next cursor; paging stops "
                                "when it is missing, null or empty."
                            ),
                        },
                        "page": {
                            "param": text(
                                "Query parameter that carries the page number.", default="page"
                            ),
                            "start": {
                                "type": "integer",
                                "default": 1,
                                "description": "Number of the first page.",
                            },
                            "size_param": text("Query parameter that carries the page size."),
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
            "headers": {**STRING_MAP, "description": "Headers of this request only."},
            "params": {**_PARAMS, "description": "Query parameters."},
            "body": {"description": "Any JSON value, sent as application/json."},
        },
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.session = HttpSession.from_options(self.options, self)

    @classmethod
    def lint(
        cls, role: str, options: Mapping[str, Any], connection: Mapping[str, Any]
    ) -> list[Lint]:
        """Warn about ``verify: false``."""
        return lint_connection(options) if role == "connection" else []

    @property
    def client(self) -> Client:
        """This thread's client, created on first use."""
        return self.session.client

    def close(self) -> None:
        """Close every thread's client; a later call opens a new one."""
        self.session.close()

    def check(self, source: Mapping[str, Any] | None = None) -> list[Check]:
        """One GET with the connection's credentials: the source's first page when the
        flow reads from here, else the base URL. Any answer but 401 and 403 reaches the
        API (a 404 at the base URL too); 401 or 403 means the credentials were refused."""
        path = str((source or {}).get("path") or "")
        params = (source or {}).get("params") if source else None
        what = f"GET {path}" if path else "GET the base URL"  # its query may hold a secret
        try:
            response = self.session.send("GET", path, params=params)
        except PermanentError as exc:
            if exc.status in (401, 403):
                return [Check(what, False, f"the credentials were refused (HTTP {exc.status})")]
            if exc.status is not None:
                return [Check(what, True, f"reached: HTTP {exc.status} (no read there to try)")]
            return [Check(what, False, str(exc))]
        except TransientError as exc:
            return [Check(what, False, str(exc))]
        return [Check(what, True, f"HTTP {response.status_code}")]

    # -- source --------------------------------------------------------------

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        """Yield the records of every page, one page in memory at a time."""
        params = dict(options.get("params") or {})
        if options.get("cursor_param") and cursor is not None:
            params[options["cursor_param"]] = cursor
        first = PageRequest(options.get("path", ""), params)
        paginator = _paginator(options.get("pagination"))
        field = options.get("cursor_field")
        for page in self.session.pages(first, paginator, records=options.get("records")):
            for record in page.records:
                yield Item(data=record, position=_position(record, field))

    # -- action --------------------------------------------------------------

    def call(self, request: Request) -> Response:
        """Send one request; return the decoded response or raise a classified error."""
        options = request.options
        response = self.session.send(
            str(options.get("method", "POST")).upper(),
            str(options["path"]),
            params=options.get("params"),
            headers=options.get("headers"),
            json=options.get("body"),
            idempotency_key=request.idempotency_key,
        )
        # The side effect has happened: a body that does not parse is returned as text.
        body = decode_body(response, strict=False)
        return Response(body=body, status=response.status_code, headers=dict(response.headers))


def _paginator(spec: Mapping[str, Any] | None) -> Paginator | None:
    """The kit's paginator for a ``pagination`` option; None for one page."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "link":
        return LinkHeader()
    if kind == "cursor":
        return QueryCursor(spec["param"], spec["next"])
    if kind == "page":
        return PageNumber(
            spec.get("param", "page"),
            spec.get("start", 1),
            spec.get("size_param"),
            spec.get("size"),
        )
    return None


def _position(record: Any, field: str | None) -> Any:
    if not field:
        return None
    try:
        return _json.dotted(record, field)
    except KeyError:
        return None
