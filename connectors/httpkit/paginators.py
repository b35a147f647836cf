"""How to ask for the next page: link header, page number, offset, or a cursor from the body.

:meth:`HttpSession.pages <connectors.httpkit.HttpSession.pages>` sends a
:class:`PageRequest`, decodes the answer into a :class:`Page` and asks the paginator for
the request of the page after it, until the paginator says there is none (or would ask
for a page it asked for already: a server that links a page to itself).

============================  ==========================================================
paginator                     the next page is asked for with
============================  ==========================================================
:class:`LinkHeader`           the URL of the ``Link`` header's ``rel="next"`` (RFC 8288)
:class:`PageNumber`           the page number + 1 in a query parameter, until a page is empty
:class:`Offset`               the offset + the records received, until a page is empty
:class:`QueryCursor`          a cursor from the body in a query parameter (GET)
:class:`BodyCursor`           a cursor from the body in the JSON request body (POST)
:class:`GraphQLCursor`        ``variables.after`` = ``pageInfo.endCursor`` while
                              ``pageInfo.hasNextPage`` (a GraphQL connection)
============================  ==========================================================

Paginators keep no state between pages: everything they need is in the page (the
request that fetched it, the answer, the records), so one instance may serve any number
of reads, from any number of threads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from connectors import _json
from connectors.errors import PermanentError

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One request for a page: ``path`` appended to the base URL (or a URL of its origin),
    query ``params``, and for a POST the JSON ``body``."""

    path: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    method: str = "GET"
    body: Any = None


@dataclass(frozen=True, slots=True)
class Page:
    """A page as received: the request that fetched it, the answer, the decoded body and
    the list of records found in it."""

    request: PageRequest
    response: httpx.Response
    body: Any
    records: list[Any]


class Paginator:
    """Base class: override :meth:`next_request`, and :meth:`start` when the first
    request needs something of the paginator's (a page number, a page size)."""

    def start(self, request: PageRequest) -> PageRequest:
        """The first request, from the one the reader made."""
        return request

    def next_request(self, page: Page) -> PageRequest | None:
        """The request for the page after ``page``; None when ``page`` was the last."""
        raise NotImplementedError


class LinkHeader(Paginator):
    """Follows the ``Link`` header's ``rel="next"`` URL (resolved against the page's URL)
    until there is none; the URL must have the connection's origin."""

    def next_request(self, page: Page) -> PageRequest | None:
        link = page.response.links.get("next", {}).get("url")
        if not link:
            return None
        return replace(page.request, path=str(page.response.url.join(link)), params={})


class PageNumber(Paginator):
    """Numbered pages from ``start`` in the query parameter ``param``, with ``size`` sent as
    ``size_param`` when both are given; stops after a page without records."""

    def __init__(
        self,
        param: str = "page",
        start: int = 1,
        size_param: str | None = None,
        size: int | None = None,
    ):
        self.param, self.first = param, start
        self.size = {size_param: size} if size_param and size else {}

    def start(self, request: PageRequest) -> PageRequest:
        return replace(request, params={**request.params, self.param: self.first, **self.size})

    def next_request(self, page: Page) -> PageRequest | None:
        if not page.records:
            return None
        params = page.request.params
        return replace(page.request, params={**params, self.param: params[self.param] + 1})


class Offset(Paginator):
    """An offset from ``start`` in ``param``, advanced by the number of records each page
    had, with ``size`` sent as ``size_param`` when given; stops after an empty page."""

    def __init__(
        self,
        param: str = "offset",
        start: int = 0,
        size_param: str | None = "limit",
        size: int | None = None,
    ):
        self.param, self.first = param, start
        self.size = {size_param: size} if size_param and size else {}

    def start(self, request: PageRequest) -> PageRequest:
        return replace(request, params={**request.params, self.param: self.first, **self.size})

    def next_request(self, page: Page) -> PageRequest | None:
        if not page.records:
            return None
        params = page.request.params
        following = params[self.param] + len(page.records)
        return replace(page.request, params={**params, self.param: following})


class QueryCursor(Paginator):
    """The value at the dotted path ``next`` in the body, sent as the query parameter
    ``param``; stops when it is missing, null or empty."""

    def __init__(self, param: str, next: str):
        self.param, self.next = param, next

    def next_request(self, page: Page) -> PageRequest | None:
        token = _at(page.body, self.next)
        if token in (None, ""):
            return None
        return replace(page.request, params={**page.request.params, self.param: token})


class BodyCursor(Paginator):
    """The value at the dotted path ``next`` in the answer, put at the dotted path ``field``
    of the JSON request body (a POST); stops when it is missing, null or empty, or when
    the boolean at ``has_more`` (if given) is not true."""

    def __init__(self, next: str, field: str, has_more: str | None = None):
        self.next, self.field, self.has_more = next, field.split("."), has_more

    def next_request(self, page: Page) -> PageRequest | None:
        if self.has_more is not None and _at(page.body, self.has_more) is not True:
            return None
        token = _at(page.body, self.next)
        if token in (None, ""):
            return None
        body = copy.deepcopy(page.request.body) if page.request.body is not None else {}
        where = body
        for step in self.field[:-1]:
            where = where.setdefault(step, {})
        where[self.field[-1]] = token
        return replace(page.request, body=body)


class GraphQLCursor(BodyCursor):
    """A GraphQL connection's pages: the request body is ``{query, variables}`` and the
    connection at the dotted path ``connection`` (e.g. ``data.orders``) answers
    ``pageInfo { hasNextPage endCursor }``; the end cursor goes to ``variables.<variable>``."""

    def __init__(self, connection: str, variable: str = "after"):
        info = f"{connection}.pageInfo"
        super().__init__(f"{info}.endCursor", f"variables.{variable}", f"{info}.hasNextPage")


def records_at(body: Any, path: str | None) -> list[Any]:
    """The list of records at the dotted ``path`` of a body (the body itself when no path);
    ``null`` is no records, a missing path or a value that is not a list is permanent."""
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


def _at(body: Any, path: str) -> Any:
    try:
        return _json.dotted(body, path)
    except KeyError:
        return None
