"""Requests to one API: its origin only, redirects checked, every failure classified.

:class:`HttpSession` is what the http connector sends through, offered whole to connector
authors. A request goes only to the base URL's origin, with the connection's headers and
the authenticator's credentials; the client follows no redirect by itself: the session
follows one to the same origin (with the credentials), to an origin listed in
``redirect_origins`` (without them), and never one that would turn a POST into a GET
(301/302/303), which is an error, not a success. Failures are classified
(docs/connectors.md, "Errors: transient or permanent"):

* ``TransientError``: timeouts, connection errors, 408, 429, 5xx, and 409 when an
  ``Idempotency-Key`` was sent; ``retry_after`` from a ``Retry-After`` header.
* ``PermanentError``: every other 4xx, redirects that are not followed, a TLS
  certificate that cannot be verified, and requests that cannot be made (a bad URL,
  another origin, a body JSON has no form for).

Messages name the method and the URL path, never the query or a header value.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from connectors import _json
from connectors.errors import PermanentError, TransientError
from connectors.httpkit.auth import Authenticator, auth_from_options
from connectors.httpkit.clients import PerThreadClient
from connectors.httpkit.paginators import Page, PageRequest, Paginator, records_at
from connectors.httpkit.responses import decode_body, raise_for_status
from connectors.httpkit.urls import BaseUrl, Origin, path_of, query_params

if TYPE_CHECKING:
    from typing import TypeAlias

    import httpx

    from connectors.base import Connector
    from connectors.httpkit.transport import DirectClient

    #: what a session sends through: an ``httpx.Client``, or a :class:`DirectClient`
    Client: TypeAlias = httpx.Client | DirectClient

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TO_GET = frozenset({301, 302, 303})  # clients turn a POST into a GET on these
MAX_REDIRECTS = 10
# headers that may follow a redirect to another (listed) origin: no credentials
_CROSS_ORIGIN_HEADERS = frozenset({"content-type", "idempotency-key"})


class HttpSession:
    """Sends requests to the API at ``base_url``, one client per thread: a
    :class:`~connectors.httpkit.transport.DirectClient` on ``http.client``, or an
    ``httpx.Client`` with httpx's own transport where the environment sets a proxy.

    ``headers`` and ``auth``'s credentials go with every request to the base URL's
    origin; ``timeout`` is seconds to connect and for each read or write; ``verify`` is
    true, false or the path of a CA bundle; ``redirect_origins`` are other origins a
    redirect may lead to (followed without the credentials and the headers).
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: Authenticator | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
        verify: bool | str = True,
        redirect_origins: Iterable[str] = (),
    ):
        self.base = BaseUrl(base_url)
        self.auth = auth
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self.timeout = float(timeout)
        self.verify = verify
        self.redirect_origins = frozenset(Origin.of(str(url)) for url in redirect_origins)
        self._clients: PerThreadClient[Client] = PerThreadClient(self._new_client)
        self._context: ssl.SSLContext | None = None
        self._context_lock = threading.Lock()
        self._merged: tuple[Mapping[str, str] | None, dict[str, str]] = (None, self._headers)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], connector: Connector | None = None
    ) -> HttpSession:
        """A session from connection options as :func:`connection_schema
        <connectors.httpkit.connection_schema>` describes them; the credentials are declared
        secrets of ``connector``, so the engine masks them."""
        auth = auth_from_options(options.get("auth"))
        if auth is not None and connector is not None:
            for secret in auth.secrets():
                connector.declare_secret(secret)
        return cls(
            str(options.get("base_url", "")),
            auth=auth,
            headers=options.get("headers"),
            timeout=options.get("timeout", 30),
            verify=options.get("verify", True),
            redirect_origins=options.get("redirect_origins") or (),
        )

    @property
    def client(self) -> Client:
        """This thread's client (no credentials, follows no redirect), created on first use."""
        return self._clients.client

    def _new_client(self) -> Client:
        import httpx  # on the first request: loading a flow does not import it (start-up)

        from connectors.httpkit.transport import DirectClient, StdlibTransport

        context = self._ssl_context()
        headers = {"Accept": "application/json"}
        if _proxies_in_environment():  # which httpx follows only with its own transport
            return httpx.Client(
                headers=headers, timeout=self.timeout, verify=context, follow_redirects=False
            )
        return DirectClient(StdlibTransport(context), headers=headers, timeout=self.timeout)

    def _ssl_context(self) -> ssl.SSLContext:
        """The session's TLS settings, made once: loading the CA bundle costs ~30 ms of
        CPU, which a client per thread would otherwise pay each."""
        with self._context_lock:
            if self._context is None:
                try:
                    if isinstance(self.verify, str):
                        self._context = ssl.create_default_context(cafile=self.verify)
                    else:
                        import httpx

                        self._context = httpx.create_ssl_context(verify=bool(self.verify))
                except OSError as exc:  # the CA bundle named by verify
                    raise PermanentError(f"cannot load the CA bundle: {exc.strerror}") from None
            return self._context

    def close(self) -> None:
        """Close every thread's client; a later request opens a new one."""
        self._clients.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send one request and follow the redirects it may; an answer below 300 or a
        classified error.

        ``path`` is appended to the base URL (see :meth:`BaseUrl.join
        <connectors.httpkit.BaseUrl.join>`); ``params`` are merged into the query it has;
        ``headers`` go over the connection's; ``json`` (unless None) is the body, sent as
        ``application/json`` with ``Decimal`` digits kept; ``idempotency_key`` is sent as
        the ``Idempotency-Key`` header, and makes a 409 transient.
        """
        import httpx

        content = None
        if json is not None:
            try:
                content = _json.dumps(json).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise PermanentError(f"the body cannot be sent as JSON: {exc}") from None
        client = self.client
        url = path

        def where() -> str:  # for error messages only: never the query, which may hold secrets
            return f"{method} {path_of(url)}"

        try:
            try:
                url = self.base.join(path)
            except PermanentError as exc:
                raise PermanentError(f"{where()}: {exc}") from None
            query = query_params(params)
            if query:  # merged with the query the URL has (httpx's params would replace it)
                url = str(httpx.URL(url).copy_merge_params(query))
            sent = httpx.Headers(self._own_headers())
            if headers:
                sent.update({str(k): str(v) for k, v in headers.items()})
            if idempotency_key is not None:
                sent["Idempotency-Key"] = idempotency_header(idempotency_key)
            if content is not None and "Content-Type" not in sent:
                sent["Content-Type"] = "application/json"
            response = client.request(method, url, headers=sent, content=content)
            for _ in range(MAX_REDIRECTS):
                if response.status_code not in _REDIRECTS or "Location" not in response.headers:
                    break
                url, same_origin = self._redirect(method, response)
                if not same_origin:  # a listed origin: no credentials, no connection headers
                    sent = httpx.Headers(
                        {k: v for k, v in sent.items() if k.lower() in _CROSS_ORIGIN_HEADERS}
                    )
                response = client.request(method, url, headers=sent, content=content)
            else:
                if response.status_code in _REDIRECTS:
                    raise PermanentError(f"{where()}: more than {MAX_REDIRECTS} redirects")
        except httpx.TimeoutException:
            raise TransientError(f"{where()}: timed out") from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise PermanentError(f"{where()}: {type(exc).__name__}") from None
        except httpx.RequestError as exc:  # connection refused or reset, proxy, TLS, decoding
            certificate = certificate_failure(exc)
            if certificate is not None:
                raise PermanentError(
                    f"{where()}: the TLS certificate of {Origin.of(url)} cannot be "
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
        return raise_for_status(response, idempotent=idempotency_key is not None)

    def pages(
        self,
        first: PageRequest,
        paginator: Paginator | None = None,
        *,
        records: str | None = None,
        check: Callable[[Any], Any] | None = None,
    ) -> Iterator[Page]:
        """Send ``first``, then what ``paginator`` asks for after each page; one page at a time.

        ``records`` is the dotted path to the list of records in each body (the body
        itself when None); ``check`` is called with each decoded body first, to raise
        the errors an API reports in a 200 (:func:`raise_for_graphql_errors
        <connectors.httpkit.raise_for_graphql_errors>`). Without a paginator there is one
        page. A request that was sent already ends the pages (a server whose next link
        or cursor leads back).
        """
        request: PageRequest | None = paginator.start(first) if paginator else first
        sent: set[str] = set()
        while request is not None:
            sent.add(_fingerprint(request))
            response = self.send(
                request.method, request.path, params=request.params, json=request.body
            )
            body = decode_body(response)
            if check is not None:
                check(body)
            page = Page(request, response, body, records_at(body, records))
            yield page
            if paginator is None:
                return
            request = paginator.next_request(page)
            if request is not None and _fingerprint(request) in sent:
                return

    def _own_headers(self) -> dict[str, str]:
        """The connection's headers with the credentials: merged again only when the
        authenticator answers with another mapping (a static one never does)."""
        if self.auth is None:
            return self._headers
        credentials = self.auth.headers()
        seen, merged = self._merged
        if credentials is not seen:
            merged = {**self._headers, **credentials}
            self._merged = (credentials, merged)  # one assignment: safe between threads
        return merged

    def _redirect(self, method: str, response: httpx.Response) -> tuple[str, bool]:
        """Where a redirect leads and whether that is the base URL's own origin;
        a redirect that must not be followed raises ``PermanentError``."""
        status = response.status_code
        target = response.url.join(response.headers["Location"])
        what = f"{method} {response.url.path} -> {status} {response.reason_phrase}"
        if status in _TO_GET and method not in ("GET", "HEAD"):
            raise PermanentError(
                f"{what}, to {Origin.of(target)}{target.path}: following it would "
                f"turn the {method} into a GET, so it is not followed and the {method} is not "
                "taken as done"
                + (
                    " (a 303 usually means the target applied it: check there before replaying)"
                    if status == 303
                    else ""
                ),
                status=status,
            )
        origin, own = Origin.of(target), self.base.origin
        if origin == own:
            return str(target), True
        if origin in self.redirect_origins:
            return str(target), False
        if origin[:2] == ("https", own.host) and own.scheme == "http":
            hint = "the API moved to https: start base_url with https://"
        else:
            hint = f"list {origin} under redirect_origins to follow it, without credentials"
        raise PermanentError(
            f"{what}: redirected to {origin}, another origin than the connection's "
            f"({own}); not followed, since requests and credentials go only "
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


def certificate_failure(exc: BaseException) -> str | None:
    """Why the server's TLS certificate was refused, when that is what ``exc`` is about."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    return None


def _proxies_in_environment() -> bool:
    """Whether a proxy is set in the environment (which httpx's own transport follows)."""
    return any(
        os.environ.get(name) or os.environ.get(name.lower())
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    )


def _fingerprint(request: PageRequest) -> str:
    return repr((request.method, request.path, request.params, request.body))
