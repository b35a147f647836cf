"""connectors.httpkit, the pieces connector authors build on, used directly against real
servers on 127.0.0.1 (the http connector's own tests cover them through YAML options)."""

from __future__ import annotations

import email.utils
import inspect
import json
import threading
import time

import pytest

from connectors import Connector, httpkit
from connectors.errors import PermanentError, TransientError
from connectors.httpkit import (
    Authenticator,
    BasicAuth,
    BodyCursor,
    HttpSession,
    Offset,
    PageRequest,
    PerThreadClient,
    raise_for_graphql_errors,
)
from connectors.tryton import TrytonConnector
from tests.support.local_server import LocalServer, Seen
from tests.support.target import Target

ROWS = [{"sku": f"SKU-{n}"} for n in range(1, 8)]


@pytest.fixture(scope="module")
def servers():
    with LocalServer() as own, LocalServer() as other:
        yield own, other


@pytest.fixture
def server(servers):
    servers[0].reset()
    return servers[0]


@pytest.fixture
def other(servers):
    servers[1].reset()
    return servers[1]


def test_every_public_name_is_exported_and_documented():
    for name in httpkit.__all__:  # the names imported on first use, too
        getattr(httpkit, name)
    public = {
        name
        for name, value in vars(httpkit).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(httpkit.__all__)
    for name in httpkit.__all__:
        assert getattr(httpkit, name).__doc__, name


def test_offset_pages_advance_by_the_records_received_until_a_page_is_empty(server):
    def rows(req: Seen):
        offset, limit = int(req.param("offset")), int(req.param("limit"))
        return 200, {}, {"rows": ROWS[offset : offset + min(limit, 2)]}  # serves 2 at most

    server.on("GET", "/stock", rows)
    session = HttpSession(server.url)
    first = PageRequest("/stock", {"store": "B1"})
    pages = list(session.pages(first, Offset(size=3), records="rows"))
    session.close()
    assert [row["sku"] for page in pages for row in page.records] == [r["sku"] for r in ROWS]
    assert [req.param("offset") for req in server.seen] == ["0", "2", "4", "6", "7"]
    assert {req.param("store") for req in server.seen} == {"B1"}


def test_a_cursor_travels_in_the_post_body_at_the_field_given(server):
    def search(req: Seen):
        body = json.loads(req.body)
        after = body["page"].get("after")
        start = 0 if after is None else int(after)
        following = str(start + 3) if start + 3 < len(ROWS) else None
        return 200, {}, {"hits": ROWS[start : start + 3], "meta": {"next": following}}

    server.on("POST", "/search", search)
    first = PageRequest("/search", method="POST", body={"filter": {"store": "B1"}, "page": {}})
    with_session = HttpSession(server.url)
    paginator = BodyCursor(next="meta.next", field="page.after")
    pages = list(with_session.pages(first, paginator, records="hits"))
    with_session.close()
    assert sum(len(page.records) for page in pages) == len(ROWS)
    sent = [json.loads(req.body) for req in server.seen]
    assert [body["page"] for body in sent] == [{}, {"after": "3"}, {"after": "6"}]
    assert all(body["filter"] == {"store": "B1"} for body in sent)
    assert first.body == {"filter": {"store": "B1"}, "page": {}}  # the caller's is untouched


def test_a_cursor_that_leads_back_to_a_page_already_read_ends_the_read(server):
    server.on("POST", "/search", lambda req: (200, {}, {"hits": ROWS[:1], "next": "same"}))
    session = HttpSession(server.url)
    first = PageRequest("/search", method="POST", body={})
    pages = list(session.pages(first, BodyCursor(next="next", field="after"), records="hits"))
    session.close()
    assert len(pages) == 2 and len(server.seen) == 2  # {} then {"after": "same"}, once


def test_graphql_errors_in_a_200_are_classified():
    assert raise_for_graphql_errors({"data": {"orders": None}}) == {"data": {"orders": None}}
    throttled = {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}
    with pytest.raises(TransientError, match="Throttled"):
        raise_for_graphql_errors(throttled)
    refused = {"errors": [{"message": "Field 'x' doesn't exist"}, {"message": "and 'y'"}]}
    with pytest.raises(PermanentError, match="Field 'x' doesn't exist; and 'y'") as caught:
        raise_for_graphql_errors(refused)
    assert caught.value.response == refused["errors"]


class RotatingToken(Authenticator):
    """A token that changes (as an expiring one would be renewed): asked for per request."""

    def __init__(self) -> None:
        self.issued = 0

    def headers(self):
        self.issued += 1
        return {"Authorization": f"Token t-{self.issued}"}


def test_an_authenticator_is_asked_for_each_request_and_only_for_the_own_origin(server, other):
    server.on("GET", "/export", lambda req: (302, {"Location": other.url + "/f.json"}, ""))
    other.on("GET", "/f.json", lambda req: (200, {}, {"rows": 1}))
    server.on("GET", "/ping", lambda req: (200, {}, "pong"))
    session = HttpSession(server.url, auth=RotatingToken(), redirect_origins=[other.url])
    session.send("GET", "/ping")
    assert session.send("GET", "/export").json() == {"rows": 1}
    session.close()
    assert [req.headers["authorization"] for req in server.seen] == ["Token t-1", "Token t-2"]
    assert "authorization" not in other.seen[0].headers


def test_from_options_declares_the_credentials_as_the_connectors_secrets(server):
    connector = Connector()
    auth = {"type": "basic", "username": "shop", "password": "pw-1"}
    session = HttpSession.from_options({"base_url": server.url, "auth": auth}, connector)
    assert connector.secrets() == ["pw-1", session.auth.pair]
    assert isinstance(session.auth, BasicAuth)


def test_each_thread_gets_its_own_client_and_close_closes_them_all():
    made = []

    def factory():
        import httpx

        made.append(httpx.Client())
        return made[-1]

    holder = PerThreadClient(factory)
    mine = holder.client
    assert holder.client is mine
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(holder.client))
    thread.start()
    thread.join()
    assert theirs[0] is not mine and len(made) == 2
    holder.close()
    assert all(client.is_closed for client in made)
    assert holder.client is not mine  # a new one after close


def test_tryton_reads_retry_after_as_an_http_date_too():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    with Target() as target:
        target.script([{"status": 503, "path": "/db/rpc/", "retry_after": when}])
        options = {"url": target.url, "database": "db", "username": "admin", "password": "pw"}
        with TrytonConnector(options) as connector, pytest.raises(TransientError) as caught:
            connector.execute("party.party", "search", [])
    assert 25 <= caught.value.retry_after <= 31


# -- the transport on http.client ----------------------------------------------------------------
def test_a_kept_alive_connection_the_server_closed_while_idle_is_replaced_before_use():
    # a server that closes each connection a moment after answering, as an API's idle
    # timeout does, without saying so: the next request must go out on a new connection
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    connections = []

    def serve() -> None:
        for _ in range(3):
            conn, _ = listener.accept()
            connections.append(conn)
            conn.recv(65536)
            body = b'{"ok": true}'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            time.sleep(0.05)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    session = HttpSession(f"http://127.0.0.1:{port}")
    try:
        for _ in range(3):
            assert session.send("GET", "/ping").json() == {"ok": True}
            time.sleep(0.2)  # idle: the server closes the connection meanwhile
    finally:
        session.close()
        listener.close()
    assert len(connections) == 3


def test_a_proxy_in_the_environment_is_followed(server, monkeypatch):
    # httpx follows HTTP_PROXY only with its own transport: the session uses that one then
    server.on("GET", "/ping", lambda req: (200, {}, {"via": "proxy", "host": req.headers["host"]}))
    monkeypatch.setenv("HTTP_PROXY", server.url)
    session = HttpSession("http://shop.invalid")
    try:
        assert session.send("GET", "/ping").json() == {"via": "proxy", "host": "shop.invalid"}
    finally:
        session.close()
