"""The http connector against a real server on 127.0.0.1: paging, errors, headers, numbers."""

from __future__ import annotations

import base64
import email.utils
import json
import socket
import threading
import time
from decimal import Decimal

import pytest
from jsonschema import Draft7Validator

from connectors.base import Request
from connectors.errors import PermanentError, TransientError
from connectors.http import HttpConnector, idempotency_header, retry_after
from connectors.testing import ConnectorContract
from tests.support.local_server import LocalServer, Seen

ORDERS = [{"id": n, "total": Decimal(f"{n}.10")} for n in range(1, 6)]


@pytest.fixture(scope="module")
def running_server():
    with LocalServer() as running:
        yield running


@pytest.fixture
def server(running_server):
    running_server.reset()
    return running_server


@pytest.fixture
def http(server):
    with HttpConnector({"base_url": server.url + "/api", "timeout": 5}) as connector:
        yield connector


def call(connector: HttpConnector, key: str | None = None, **options) -> object:
    return connector.call(Request(options=options, idempotency_key=key))


class TestHttpContract(ConnectorContract):
    connector_class = HttpConnector

    @pytest.fixture(autouse=True)
    def _target(self, server):
        def orders(req: Seen):
            since = req.param("since")
            return 200, {}, [o for o in ORDERS if since is None or o["id"] > int(since)]

        server.on("GET", "/orders", orders)
        server.on("POST", "/orders", lambda req: (201, {}, {"created": True}))
        server.on("POST", "/refused", lambda req: (422, {}, {"error": "sku unknown"}))
        self.server = server

    def connection_options(self, tmp_path):
        return {"base_url": self.server.url, "timeout": 5}

    def read_options(self, tmp_path):
        return {"path": "/orders", "cursor_param": "since", "cursor_field": "id"}

    def call_options(self, tmp_path):
        return {"path": "/orders", "body": {"id": 1}}

    def failing_call_options(self, tmp_path):
        return {"path": "/refused", "body": {"id": 1}}

    def received_idempotency_key(self, connector):
        return json.loads(self.server.seen[-1].headers["idempotency-key"])


def test_option_mistakes_get_precise_validation_messages():
    options = Draft7Validator(HttpConnector.options_schema)
    typo = {"base_url": "http://x", "auth": {"type": "bearer", "tokn": "t"}}
    assert sorted(e.message for e in options.iter_errors(typo)) == [
        "'token' is a required property",
        "Additional properties are not allowed ('tokn' was unexpected)",
    ]
    read = Draft7Validator(HttpConnector.read_schema)
    [error] = read.iter_errors({"pagination": {"type": "cursor", "param": "after"}})
    assert error.message == "'next' is a required property"


# -- reading -------------------------------------------------------------------


def test_link_pagination_follows_rel_next_until_there_is_none(server, http):
    def page(req: Seen):
        n = int(req.param("page") or 1)
        links = {
            1: f'<{server.url}/api/orders?page=2>; rel="next"',
            2: '</api/orders?page=3>; rel="next"',
        }
        headers = {"Link": links[n]} if n in links else {}
        return 200, headers, [{"id": n}]

    server.on("GET", "/api/orders", page)
    items = list(http.read({"path": "/orders", "pagination": {"type": "link"}}))
    assert [item.data["id"] for item in items] == [1, 2, 3]
    assert len(server.seen) == 3


def test_cursor_pagination_passes_the_body_cursor_until_it_is_null(server, http):
    pages = {None: ([{"id": 1}, {"id": 2}], "c2"), "c2": ([{"id": 3}], "c3"), "c3": ([], None)}

    def page(req: Seen):
        records, following = pages[req.param("after")]
        return 200, {}, {"data": {"orders": records}, "meta": {"next": following}}

    server.on("GET", "/api/orders", page)
    options = {
        "path": "/orders",
        "records": "data.orders",
        "pagination": {"type": "cursor", "param": "after", "next": "meta.next"},
    }
    assert [item.data["id"] for item in http.read(options)] == [1, 2, 3]
    assert [req.param("after") for req in server.seen] == [None, "c2", "c3"]


def test_page_pagination_counts_pages_until_an_empty_one(server, http):
    def page(req: Seen):
        n, size = int(req.param("p")), int(req.param("per_page"))
        return 200, {}, {"orders": ORDERS[(n - 1) * size : n * size]}

    server.on("GET", "/api/orders", page)
    pagination = {"type": "page", "param": "p", "size_param": "per_page", "size": 2}
    items = list(http.read({"path": "/orders", "records": "orders", "pagination": pagination}))
    assert [item.data["id"] for item in items] == [1, 2, 3, 4, 5]
    assert [req.param("p") for req in server.seen] == ["1", "2", "3", "4"]


def test_incremental_read_sends_the_cursor_only_once_there_is_one(server, http):
    server.on("GET", "/api/orders", lambda req: (200, {}, ORDERS[:2]))
    options = {"path": "/orders", "cursor_param": "updated_after", "cursor_field": "id"}
    first = list(http.read(options, None))
    list(http.read(options, 2))
    assert [item.position for item in first] == [1, 2]
    assert [req.param("updated_after") for req in server.seen] == [None, "2"]


def test_money_is_read_as_decimal_and_big_ids_exactly(server, http):
    body = b'[{"id": 9007199254740993, "total": 19.99, "qty": 2}]'
    server.on("GET", "/api/orders", lambda req: (200, {}, body))
    [item] = http.read({"path": "/orders"})
    assert item.data == {"id": 9007199254740993, "total": Decimal("19.99"), "qty": 2}
    assert isinstance(item.data["total"], Decimal)


def test_a_missing_records_path_is_a_permanent_error_naming_it(server, http):
    server.on("GET", "/api/orders", lambda req: (200, {}, {"items": []}))
    with pytest.raises(PermanentError, match="'orders'"):
        list(http.read({"path": "/orders", "records": "orders"}))


def test_a_failing_page_raises_instead_of_ending_the_read(server, http):
    server.on("GET", "/api/orders", lambda req: (503, {}, {"error": "down"}))
    with pytest.raises(TransientError):
        list(http.read({"path": "/orders"}))


# -- calling -------------------------------------------------------------------


def test_body_is_sent_as_json_with_exact_decimals_and_big_ints(server, http):
    server.on("POST", "/api/orders", lambda req: (201, {}, req.body))
    order = {
        "id": 2**63 + 1,
        "total": Decimal("1234567890.01"),
        "lines": [{"price": Decimal("0.10")}],
    }
    response = call(http, path="/orders", body=order)
    assert server.seen[0].body == (
        b'{"id":9223372036854775809,"total":1234567890.01,"lines":[{"price":0.10}]}'
    )
    assert server.seen[0].headers["content-type"] == "application/json"
    assert response.status == 201
    assert response.body == order


def test_idempotency_key_is_sent_quoted_and_only_when_set(server, http):
    server.on("PUT", "/api/orders/1042", lambda req: (200, {}, {}))
    call(http, "order:1042", method="PUT", path="/orders/1042", body={})
    call(http, None, method="PUT", path="/orders/1042", body={})
    assert server.seen[0].headers["idempotency-key"] == '"order:1042"'
    assert "idempotency-key" not in server.seen[1].headers


def test_idempotency_header_escapes_what_a_header_cannot_carry():
    assert idempotency_header('a"b\\c') == '"a\\"b\\\\c"'
    assert idempotency_header("café 1") == '"caf%C3%A9 1"'
    assert idempotency_header("100%") == '"100%25"'


def test_a_400_is_permanent_and_keeps_the_decoded_error_body(server, http):
    server.on("POST", "/api/orders", lambda req: (400, {}, {"error": "qty must be > 0"}))
    with pytest.raises(PermanentError) as caught:
        call(http, path="/orders", body={})
    assert caught.value.status == 400
    assert caught.value.response == {"error": "qty must be > 0"}


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_overload_and_server_errors_are_transient(server, http, status):
    server.on("POST", "/api/orders", lambda req: (status, {}, "busy"))
    with pytest.raises(TransientError) as caught:
        call(http, path="/orders", body={})
    assert caught.value.status == status
    assert caught.value.response == "busy"


def test_409_is_transient_with_an_idempotency_key_and_permanent_without(server, http):
    server.on("POST", "/api/orders", lambda req: (409, {}, {"error": "in progress"}))
    with pytest.raises(TransientError):
        call(http, "order:1", path="/orders", body={})
    with pytest.raises(PermanentError):
        call(http, None, path="/orders", body={})


def test_retry_after_seconds_and_http_date_are_parsed(server, http):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.on("POST", "/api/a", lambda req: (503, {"Retry-After": "7"}, {}))
    server.on("POST", "/api/b", lambda req: (429, {"Retry-After": when}, {}))
    with pytest.raises(TransientError) as seconds:
        call(http, path="/a")
    with pytest.raises(TransientError) as date:
        call(http, path="/b")
    assert seconds.value.retry_after == 7
    assert 25 <= date.value.retry_after <= 31


def test_retry_after_parsing_rules():
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after("120") == 120
    assert retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now=now) == 60
    assert retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0  # in the past
    assert retry_after("soon") is None
    assert retry_after("-5") is None
    assert retry_after(None) is None


def test_a_slow_target_times_out_as_transient(server):
    server.on("POST", "/slow", lambda req: (server.pause(5), (200, {}, {}))[1])
    with HttpConnector({"base_url": server.url, "timeout": 0.2}) as slow:
        started = time.monotonic()
        with pytest.raises(TransientError, match="timed out"):
            call(slow, path="/slow", body={})
    assert time.monotonic() - started < 2


def test_a_refused_connection_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with HttpConnector({"base_url": f"http://127.0.0.1:{port}"}) as closed:
        with pytest.raises(TransientError, match="ConnectError"):
            call(closed, path="/orders", body={})


@pytest.mark.parametrize(
    ("auth", "header", "expected"),
    [
        ({"type": "bearer", "token": "s3cret"}, "authorization", "Bearer s3cret"),
        (
            {"type": "basic", "username": "shop", "password": "pw"},
            "authorization",
            "Basic " + base64.b64encode(b"shop:pw").decode(),
        ),
        ({"type": "header", "name": "X-Api-Key", "value": "k-123"}, "x-api-key", "k-123"),
    ],
)
def test_auth_is_sent_with_every_request(server, auth, header, expected):
    server.on("POST", "/orders", lambda req: (401, {}, {"error": "who?"}))
    options = {"base_url": server.url, "auth": auth, "headers": {"X-Shop": "berlin"}}
    with HttpConnector(options) as connector, pytest.raises(PermanentError) as caught:
        call(connector, path="/orders", body={})
    assert server.seen[0].headers[header] == expected
    assert server.seen[0].headers["x-shop"] == "berlin"
    assert "s3cret" not in str(caught.value) and "k-123" not in str(caught.value)


def test_credentials_are_never_sent_to_another_origin(server, http):
    with pytest.raises(PermanentError, match="another origin"):
        call(http, path="http://example.invalid/steal", body={})
    server.on(
        "GET",
        "/api/orders",
        lambda req: (200, {"Link": '<http://example.invalid/p2>; rel="next"'}, [{"id": 1}]),
    )
    with pytest.raises(PermanentError, match="another origin"):
        list(http.read({"path": "/orders", "pagination": {"type": "link"}}))


def test_a_text_response_is_returned_as_text(server, http):
    server.on("GET", "/api/ping", lambda req: (200, {}, "pong"))
    assert call(http, method="GET", path="/ping").body == "pong"


def test_query_params_keep_decimal_digits(server, http):
    server.on("GET", "/api/stock", lambda req: (200, {}, []))
    call(
        http,
        method="GET",
        path="/stock",
        params={"min": Decimal("0.10"), "live": True, "sku": ["a", "b"]},
    )
    assert server.seen[0].query == {"min": ["0.10"], "live": ["true"], "sku": ["a", "b"]}


def test_close_then_call_opens_a_new_client(server, http):
    server.on("POST", "/api/orders", lambda req: (201, {}, {}))
    call(http, path="/orders", body={})
    http.close()
    assert call(http, path="/orders", body={}).status == 201


def test_each_thread_sends_over_its_own_kept_alive_connection(server, http):
    server.on("POST", "/api/orders", lambda req: (201, {}, {}))

    def lane(n: int) -> None:
        for _ in range(3):
            call(http, path="/orders", body=n)

    for n in range(4):  # one after another: a shared pool would reuse one connection
        thread = threading.Thread(target=lane, args=(n,))
        thread.start()
        thread.join()
    ports: dict[int, set[int]] = {}
    for seen in server.seen:
        ports.setdefault(int(seen.body), set()).add(seen.peer_port)
    assert sorted(ports) == [0, 1, 2, 3]
    assert all(len(p) == 1 for p in ports.values()), ports  # kept alive within a thread
    assert len(set.union(*ports.values())) == 4, ports  # never shared between threads

    http.close()  # closes every thread's client: the next call opens a new connection
    call(http, path="/orders", body=9)
    assert server.seen[-1].peer_port not in set.union(*ports.values())


def test_credentials_are_declared_secrets_so_the_engine_masks_them():
    basic = HttpConnector(
        {"base_url": "http://x", "auth": {"type": "basic", "username": "shop", "password": "pw"}}
    )
    assert basic.secrets() == ["pw", base64.b64encode(b"shop:pw").decode()]
    header = HttpConnector(
        {"base_url": "http://x", "auth": {"type": "header", "name": "X-Key", "value": "k-1"}}
    )
    assert header.secrets() == ["k-1"]
    assert HttpConnector({"base_url": "http://x", "headers": {"X-Tenant": "b"}}).secrets() == []


def test_a_cookie_the_api_sets_goes_back_with_the_next_requests(server, http):
    server.on("POST", "/api/login", lambda req: (200, {"Set-Cookie": "session=s-1; Path=/"}, {}))
    server.on("POST", "/api/orders", lambda req: (201, {}, {}))
    call(http, path="/orders", body={})
    call(http, path="/login", body={})
    call(http, path="/orders", body={})
    assert "cookie" not in server.seen[0].headers
    assert server.seen[2].headers["cookie"] == "session=s-1"
    # and what any httpx client sends: its defaults, the connection's Accept over them
    assert server.seen[0].headers["accept"] == "application/json"
    assert server.seen[0].headers["accept-encoding"] == "gzip, deflate"
    assert server.seen[0].headers["user-agent"].startswith("python-httpx/")
