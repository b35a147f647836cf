"""What an http connection sends where, tested as the attacks of issue 11.

Two real servers on 127.0.0.1: the connection's own origin and another one (another
port is another origin). Whatever a record or a target does, the other origin must
receive nothing: not the credentials, not the connection's headers, not the body.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.base import Request
from connectors.errors import PermanentError
from connectors.http import HttpConnector
from engine import Engine
from tests.conftest import write_flow
from tests.support.local_server import LocalServer

AUTHS = {
    "bearer": ({"type": "bearer", "token": "tok-3f9a1c"}, "authorization", "Bearer tok-3f9a1c"),
    "basic": (
        {"type": "basic", "username": "shop", "password": "pw-77d2"},
        "authorization",
        "Basic " + base64.b64encode(b"shop:pw-77d2").decode(),
    ),
    "header": (
        {"type": "header", "name": "X-Api-Key", "value": "key-51e0"},
        "x-api-key",
        "key-51e0",
    ),
}


@pytest.fixture(scope="module")
def servers():
    with LocalServer() as own, LocalServer() as other:
        yield own, other


@pytest.fixture
def own(servers):
    servers[0].reset()
    return servers[0]


@pytest.fixture
def other(servers):
    servers[1].reset()
    return servers[1]


def connector(own: LocalServer, auth: str = "bearer", **options) -> HttpConnector:
    return HttpConnector(
        {
            "base_url": own.url + "/api",
            "auth": AUTHS[auth][0],
            "headers": {"X-Tenant": "berlin-7"},
            "timeout": 5,
            **options,
        }
    )


def call(http: HttpConnector, **options):
    return http.call(Request(options=options, idempotency_key="order:1"))


def port(server: LocalServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


# -- a path rendered from a record --------------------------------------------------------


@pytest.mark.parametrize("auth", sorted(AUTHS))
@pytest.mark.parametrize(
    "path",
    [
        "HTTP://127.0.0.1:{other}/collect",
        "HtTp://127.0.0.1:{other}/collect",
        "//127.0.0.1:{other}/collect",
        "http://127.0.0.1:{own}@127.0.0.1:{other}/collect",
        "http://127.0.0.1:{other}/api/orders",
    ],
)
def test_a_path_that_leads_to_another_origin_is_refused_and_nothing_leaves(own, other, auth, path):
    path = path.format(own=port(own), other=port(other))
    with connector(own, auth) as http, pytest.raises(PermanentError) as refused:
        call(http, path=path, body={"card": "4111-1111"})
    message = str(refused.value)
    assert f"http://127.0.0.1:{port(other)}" in message  # where it would have gone
    assert f"http://127.0.0.1:{port(own)}" in message  # where requests may go
    assert "another origin" in message
    assert other.seen == [] and own.seen == []


def test_a_url_of_the_connection_own_origin_in_other_letters_is_sent(own):
    own.on("POST", "/api/x", lambda req: (201, {}, {"ok": True}))
    with connector(own, "header") as http:
        assert call(http, path=f"HTTP://127.0.0.1:{port(own)}/api/x", body={}).status == 201
    assert own.seen[0].headers["x-api-key"] == "key-51e0"


# -- redirects ---------------------------------------------------------------------------


def redirect(status: int, location: str):
    return lambda req: (status, {"Location": location}, "")


@pytest.mark.parametrize("auth", sorted(AUTHS))
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_not_followed(own, other, auth, status):
    own.on("GET", "/api/customers/1", redirect(status, other.url + "/collect"))
    own.on("POST", "/api/orders", redirect(status, other.url + "/collect"))
    with connector(own, auth) as http:
        with pytest.raises(PermanentError) as lookup:
            call(http, method="GET", path="/customers/1")
        with pytest.raises(PermanentError) as send:
            call(http, method="POST", path="/orders", body={"card": "4111-1111"})
    assert other.seen == []
    assert f"redirected to http://127.0.0.1:{port(other)}" in str(lookup.value)
    assert lookup.value.status == status
    assert str(port(other)) in str(send.value)  # POST: another origin, or a POST made a GET


def test_a_post_that_a_redirect_would_turn_into_a_get_fails_instead_of_succeeding(own):
    own.on("POST", "/api/orders", redirect(302, "/api/login"))
    own.on("GET", "/api/login", lambda req: (200, {}, {"page": "please log in"}))
    with connector(own) as http, pytest.raises(PermanentError) as failed:
        call(http, path="/orders", body={"id": 1})
    assert "turn the POST into a GET" in str(failed.value)
    assert "not taken as done" in str(failed.value)
    assert [(seen.method, seen.path) for seen in own.seen] == [("POST", "/api/orders")]


def test_a_303_after_a_post_says_the_target_may_have_applied_it(own):
    own.on("POST", "/api/orders", redirect(303, "/api/orders/7"))
    with connector(own) as http, pytest.raises(PermanentError, match="usually means the target"):
        call(http, path="/orders", body={"id": 1})


def test_a_same_origin_307_is_followed_with_the_body_and_the_credentials(own):
    own.on("POST", "/api/orders", redirect(307, "/api/v2/orders"))
    own.on("POST", "/api/v2/orders", lambda req: (201, {}, {"id": 9}))
    with connector(own, "header") as http:
        response = call(http, path="/orders", body={"id": 1})
    assert (response.status, response.body) == (201, {"id": 9})
    moved = own.seen[1]
    assert (moved.path, moved.body) == ("/api/v2/orders", b'{"id":1}')
    assert moved.headers["x-api-key"] == "key-51e0"
    assert moved.headers["idempotency-key"] == own.seen[0].headers["idempotency-key"]


def test_a_listed_redirect_origin_is_followed_without_credentials(own, other):
    own.on("GET", "/api/exports/1", redirect(302, other.url + "/files/1.json"))
    other.on("GET", "/files/1.json", lambda req: (200, {}, {"rows": 3}))
    with connector(own, "header", redirect_origins=[other.url.upper()]) as http:
        assert call(http, method="GET", path="/exports/1").body == {"rows": 3}
    [download] = other.seen
    assert "x-api-key" not in download.headers and "x-tenant" not in download.headers
    assert "authorization" not in download.headers


def test_a_redirect_from_http_to_https_says_to_fix_base_url(own):
    own.on("GET", "/api/orders", redirect(301, f"https://127.0.0.1:{port(own)}/api/orders"))
    with connector(own) as http, pytest.raises(PermanentError, match="start base_url with https"):
        call(http, method="GET", path="/orders")
    assert len(own.seen) == 1


def test_a_redirect_loop_ends_in_a_permanent_error(own):
    own.on("GET", "/api/a", redirect(302, "/api/b"))
    own.on("GET", "/api/b", redirect(302, "/api/a"))
    with connector(own) as http, pytest.raises(PermanentError, match="more than 10 redirects"):
        call(http, method="GET", path="/a")


def test_a_paged_read_whose_link_leads_elsewhere_stops_with_an_error(own, other):
    link = f'<HTTP://127.0.0.1:{port(other)}/api/orders?page=2>; rel="next"'
    own.on("GET", "/api/orders", lambda req: (200, {"Link": link}, [{"id": 1}]))
    with connector(own) as http, pytest.raises(PermanentError, match="another origin"):
        list(http.read({"path": "/orders", "pagination": {"type": "link"}}))
    assert other.seen == []


# -- through the engine: nothing recorded as done -------------------------------------------

FLOW = """
flow: sends_elsewhere
connections:
  erp:
    connector: http
    base_url: "{{ vars.url }}/api"
    auth: {type: header, name: X-Api-Key, value: key-51e0}
    retry: {attempts: 2, backoff: 0.01}
source: {connector: file, path: none.ndjson}
steps:
  - name: post_order
    send:
      connection: erp
      path: "{{ record.path }}"
      body: {id: "{{ record.id }}"}
"""


def test_a_run_dead_letters_what_would_leak_or_was_redirected_and_records_none_done(
    tmp_path, own, other
):
    own.on("POST", "/api/orders", redirect(302, "/api/login"))
    own.on("POST", "/api/moved", redirect(307, other.url + "/orders"))
    flow = Engine(state=tmp_path / "state.db").load(write_flow(tmp_path, FLOW))
    records = [
        {"id": 1, "path": f"HTTP://127.0.0.1:{port(other)}/orders"},
        {"id": 2, "path": "/orders"},
        {"id": 3, "path": "/moved"},
    ]
    result = Engine(state=tmp_path / "state.db").run(flow, vars={"url": own.url}, records=records)
    assert result.counts["dead_lettered"] == 3 and result.counts["done"] == 0
    assert other.seen == []
    store = Engine(state=tmp_path / "state.db").store()
    letters = store.dead_letters(flow="sends_elsewhere")
    store.close()
    reasons = sorted(letter.message for letter in letters)
    assert any("another origin" in reason for reason in reasons)
    assert any("turn the POST into a GET" in reason for reason in reasons)
    assert sum(letter.attempts for letter in letters) == 3  # permanent: no retry


# -- TLS and base_url ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate made for the test."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path)
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", cert, seen
    httpd.shutdown()
    httpd.server_close()


def test_an_unverifiable_certificate_is_permanent_and_a_ca_bundle_fixes_it(tls_server):
    url, cert, seen = tls_server
    with HttpConnector({"base_url": url, "timeout": 5}) as http:
        with pytest.raises(PermanentError) as refused:
            call(http, path="/orders", body={})
    message = str(refused.value)
    assert "TLS certificate" in message and "self-signed" in message
    assert "not retried" in message and "verify" in message
    assert seen == []
    with HttpConnector({"base_url": url, "timeout": 5, "verify": str(cert)}) as http:
        assert call(http, path="/orders", body={}).status == 201
    assert seen == ["/orders"]


def test_a_query_in_base_url_is_kept_and_paths_are_joined_before_it(own):
    own.on("GET", "/api/v1/stock", lambda req: (200, {}, []))
    own.on("GET", "/api/v1", lambda req: (200, {}, []))
    options = {"base_url": own.url + "/api/v1?shop=berlin", "timeout": 5}
    with HttpConnector(options) as http:
        call(http, method="GET", path="/stock?live=1", params={"sku": "A-1"})
        call(http, method="GET", path="")
    assert own.seen[0].path == "/api/v1/stock"
    assert own.seen[0].query == {"shop": ["berlin"], "live": ["1"], "sku": ["A-1"]}
    assert (own.seen[1].path, own.seen[1].query) == ("/api/v1", {"shop": ["berlin"]})
