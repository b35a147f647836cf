"""Building blocks for connectors that speak HTTP: the pieces the http connector is made of.

When a flow's YAML cannot say what an API needs (a GraphQL query, a signed request, a
login), write a connector (docs/connectors.md, "Writing a connector") and build it from
these instead of from nothing:

* :class:`HttpSession` sends requests to one API: only to its origin, with its headers and
  credentials, redirects checked, one client per thread (:class:`PerThreadClient`): a
  :class:`DirectClient` on :class:`StdlibTransport` (``http.client`` under httpx's models,
  without an ``httpx.Client`` around them: less CPU per request), every
  failure classified as ``TransientError`` or ``PermanentError``; :meth:`HttpSession.pages`
  reads paged answers with a paginator.
* :func:`connection_schema` declares the same connection options as the http connector
  (``base_url``, ``auth``, ``timeout``, ``headers``, ``verify``, ``redirect_origins``), which
  :meth:`HttpSession.from_options` reads; :func:`lint_connection` warns about ``verify: false``.
* authenticators: :class:`BearerAuth`, :class:`BasicAuth`, :class:`HeaderAuth`, or a subclass
  of :class:`Authenticator`; :func:`auth_from_options` reads an ``auth`` option.
* paginators: :class:`LinkHeader`, :class:`PageNumber`, :class:`Offset`, :class:`QueryCursor`
  (a cursor from the body, in the query), :class:`BodyCursor` (in a POST body) and
  :class:`GraphQLCursor`, or a subclass of :class:`Paginator`.
* answers: :func:`raise_for_status`, :func:`is_transient_status`, :func:`retry_after`,
  :func:`decode_body` (JSON with money as ``Decimal``), :func:`raise_for_graphql_errors`,
  :func:`records_at`.
* where requests go: :class:`Origin`, :class:`BaseUrl`, :func:`query_params`,
  :func:`idempotency_header`.
"""

import typing

from connectors.httpkit.auth import (
    Authenticator,
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    auth_from_options,
)
from connectors.httpkit.clients import PerThreadClient
from connectors.httpkit.paginators import (
    BodyCursor,
    GraphQLCursor,
    LinkHeader,
    Offset,
    Page,
    PageNumber,
    PageRequest,
    Paginator,
    QueryCursor,
    records_at,
)
from connectors.httpkit.responses import (
    GRAPHQL_TRANSIENT_CODES,
    decode_body,
    is_transient_status,
    raise_for_graphql_errors,
    raise_for_status,
    retry_after,
)
from connectors.httpkit.schema import connection_schema, lint_connection, tagged_schema
from connectors.httpkit.session import HttpSession, idempotency_header
from connectors.httpkit.urls import BaseUrl, Origin, query_params

if typing.TYPE_CHECKING:
    from connectors.httpkit.transport import DirectClient, StdlibTransport

__all__ = [
    "GRAPHQL_TRANSIENT_CODES",
    "Authenticator",
    "BaseUrl",
    "BasicAuth",
    "BearerAuth",
    "BodyCursor",
    "DirectClient",
    "GraphQLCursor",
    "HeaderAuth",
    "HttpSession",
    "LinkHeader",
    "Offset",
    "Origin",
    "Page",
    "PageNumber",
    "PageRequest",
    "Paginator",
    "PerThreadClient",
    "QueryCursor",
    "StdlibTransport",
    "auth_from_options",
    "connection_schema",
    "decode_body",
    "idempotency_header",
    "is_transient_status",
    "lint_connection",
    "query_params",
    "raise_for_graphql_errors",
    "raise_for_status",
    "records_at",
    "retry_after",
    "tagged_schema",
]


def __getattr__(name: str) -> typing.Any:
    """:class:`StdlibTransport` and :class:`DirectClient` on first use: they import httpx,
    which loading a flow does not."""
    if name in ("StdlibTransport", "DirectClient"):
        from connectors.httpkit import transport

        value = getattr(transport, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
