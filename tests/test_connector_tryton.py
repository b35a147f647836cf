"""The tryton connector against a real Tryton server (trytond on 127.0.0.1, SQLite).

Each test gets its own server over a fresh copy of the demo database (see
tests/support/tryton.py); the ids of the demo records are in ``tryton.ids``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.base import Request
from connectors.errors import PermanentError, TransientError
from connectors.testing import ConnectorContract
from connectors.tryton import TrytonConnector, _decode_object, _encode

pytest.register_assert_rewrite("tests.support.tryton")  # it is a plugin, imported here first
try:
    from tests.support.target import Target
    from tests.support.tryton import TrytonInstance, erp_setup
except ModuleNotFoundError:  # pytest started without the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.target import Target
    from tests.support.tryton import TrytonInstance, erp_setup

pytest_plugins = ["tests.support.tryton"]


def call(connector: TrytonConnector, **options) -> object:
    return connector.call(Request(options=options)).body


def sessions(tryton: TrytonInstance) -> int:
    return tryton.query("SELECT count(*) FROM ir_session")[0][0]


def sale_values(ids: dict, *, with_addresses: bool = True) -> dict:
    """A web-shop order as a Tryton sale: create runs no on_change, so send it all."""
    line = {
        "type": "line",
        "unit": ids["unit"],
        "taxes": [["add", [ids["tax"]]]],
    }
    values = {
        "party": ids["customer"],
        "payment_term": ids["payment_term"],
        "reference": "#1001",
        "lines": [
            [
                "create",
                [
                    {
                        **line,
                        "product": ids["products"]["TSHIRT-BLK-M"],
                        "quantity": 2,
                        "unit_price": Decimal("19.90"),
                    },
                    {
                        **line,
                        "product": ids["products"]["MUG-LOGO"],
                        "quantity": Decimal("1"),
                        "unit_price": Decimal("8.50"),
                    },
                ],
            ]
        ],
    }
    if with_addresses:
        values["invoice_address"] = values["shipment_address"] = ids["customer_address"]
    return values


# -- the wire format, no server needed ---------------------------------------------------


def test_values_travel_in_trytons_json_form_and_come_back_as_python_types():
    values = [
        Decimal("19.90"),
        dt.date(2026, 3, 1),
        dt.datetime(2026, 3, 1, 12, 30, 5, 7),
        dt.time(8, 15),
        dt.timedelta(minutes=90),
        b"\x00pdf",
    ]
    encoded = _encode({"values": values})
    assert encoded["values"][0] == {"__class__": "Decimal", "decimal": "19.90"}
    assert encoded["values"][1] == {"__class__": "date", "year": 2026, "month": 3, "day": 1}
    decoded = [_decode_object(item) for item in encoded["values"]]
    assert decoded == values
    assert isinstance(decoded[0], Decimal)


def test_an_unreachable_server_is_a_transient_error():
    options = {
        "url": f"http://127.0.0.1:{erp_setup.free_port()}",
        "database": "x",
        "username": "admin",
        "password": "unused",
        "timeout": 2,
    }
    with TrytonConnector(options) as connector, pytest.raises(TransientError):
        call(connector, model="party.party", method="search", args=[[]])


@pytest.mark.parametrize(("status", "retry_after"), [(503, 7), (500, None), (429, 3)])
def test_server_overload_is_a_transient_error(status, retry_after):
    with Target() as target:
        behaviour = {"status": status, "path": "/db/rpc/"}
        if retry_after:
            behaviour["retry_after"] = retry_after
        target.script([behaviour])
        options = {"url": target.url, "database": "db", "username": "admin", "password": "pw"}
        with TrytonConnector(options) as connector, pytest.raises(TransientError) as caught:
            call(connector, model="party.party", method="search", args=[[]])
    assert caught.value.status == status
    assert caught.value.retry_after == retry_after
    assert "pw" not in str(caught.value)


# -- against a real Tryton ---------------------------------------------------------------


@pytest.mark.tryton
def test_logs_in_once_and_reuses_the_session(tryton):
    before = sessions(tryton)
    with TrytonConnector(tryton.options()) as connector:
        for _ in range(3):
            assert call(connector, model="party.party", method="search", args=[[]])
        assert sessions(tryton) == before + 1
    assert sessions(tryton) == before  # close() logged out


@pytest.mark.tryton
def test_threads_share_one_login(tryton):
    before = sessions(tryton)
    connector = TrytonConnector(tryton.options())
    errors = []

    def work():
        try:
            call(connector, model="product.product", method="search", args=[[]])
        except Exception as exc:  # collected and checked below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sessions(tryton) == before + 1
    connector.close()


@pytest.mark.tryton
def test_logs_in_again_when_the_server_dropped_the_session(tryton):
    with TrytonConnector(tryton.options()) as connector:
        call(connector, model="party.party", method="search", args=[[]])
        # The session expires on the server (as after its timeout): delete it there.
        with sqlite3.connect(tryton.path) as db:
            db.execute("DELETE FROM ir_session")
        assert sessions(tryton) == 0
        found = call(
            connector,
            model="party.party",
            method="search",
            args=[[["id", "=", tryton.ids["customer"]]]],
        )
        assert found == [tryton.ids["customer"]]
        assert sessions(tryton) == 1
        # each session's token is declared a secret, so the engine masks it everywhere
        [(key,)] = tryton.query("SELECT key FROM ir_session")
        assert key in connector.secrets()
        assert tryton.options()["password"] in connector.secrets()


@pytest.mark.tryton
def test_a_wrong_password_is_a_permanent_error_that_does_not_show_the_password(tryton):
    options = tryton.options(password="not-the-password")
    with TrytonConnector(options) as connector, pytest.raises(PermanentError) as caught:
        call(connector, model="party.party", method="search", args=[[]])
    assert "refused the login of user 'admin'" in caught.value.message
    assert "not-the-password" not in str(caught.value)


@pytest.mark.tryton
def test_search_read_returns_products_by_sku(tryton):
    with TrytonConnector(tryton.options()) as connector:
        rows = call(
            connector,
            model="product.product",
            method="search_read",
            args=[
                [["code", "in", ["MUG-LOGO", "CAP-RED"]]],
                0,
                None,
                [["code", "ASC"]],
                ["code", "name", "template.list_price"],
            ],
        )
    assert [(r["code"], r["name"]) for r in rows] == [
        ("CAP-RED", "Red cap"),
        ("MUG-LOGO", "Logo mug"),
    ]
    assert rows[1]["template."]["list_price"] == Decimal("8.50")


@pytest.mark.tryton
def test_creates_a_party_with_an_address(tryton):
    with TrytonConnector(tryton.options()) as connector:
        body = call(
            connector,
            model="party.party",
            method="create",
            args=[
                [
                    {
                        "name": "Grace Buyer",
                        "code": "WEB-1002",
                        "addresses": [["create", [{"street": "2 Pier Road", "city": "Harbor"}]]],
                    }
                ]
            ],
            read_fields=["name", "code", "addresses"],
        )
        (party,) = body["records"]
        assert body["ids"] == [party["id"]]
        assert (party["name"], party["code"], len(party["addresses"])) == (
            "Grace Buyer",
            "WEB-1002",
            1,
        )
        (address,) = call(
            connector,
            model="party.address",
            method="read",
            args=[party["addresses"], ["street", "city"]],
        )
        assert (address["street"], address["city"]) == ("2 Pier Road", "Harbor")


@pytest.mark.tryton
def test_creates_a_sale_then_quotes_and_confirms_it(tryton):
    with TrytonConnector(tryton.options()) as connector:
        body = call(
            connector,
            model="sale.sale",
            method="create",
            args=[[sale_values(tryton.ids)]],
            then=["quote", "confirm"],
            read_fields=[
                "number",
                "state",
                "reference",
                "untaxed_amount",
                "tax_amount",
                "total_amount",
                "shipments",
                "invoices",
            ],
        )
        (sale,) = body["records"]
        assert sale["state"] == "processing"
        assert sale["number"] and sale["reference"] == "#1001"
        assert (sale["untaxed_amount"], sale["tax_amount"], sale["total_amount"]) == (
            Decimal("48.30"),
            Decimal("4.83"),
            Decimal("53.13"),
        )
        assert all(isinstance(sale[k], Decimal) for k in ("untaxed_amount", "total_amount"))
        assert len(sale["shipments"]) == 1 and len(sale["invoices"]) == 1
        # Read back on its own, as a later step of a flow would.
        (again,) = call(
            connector,
            model="sale.sale",
            method="search_read",
            args=[[["reference", "=", "#1001"]], 0, None, None, ["total_amount"]],
        )
        assert again == {"id": body["ids"][0], "total_amount": Decimal("53.13")}


@pytest.mark.tryton
def test_a_tryton_user_error_is_a_permanent_error_with_trytons_message(tryton):
    with TrytonConnector(tryton.options()) as connector:
        (sale_id,) = call(
            connector,
            model="sale.sale",
            method="create",
            args=[[sale_values(tryton.ids, with_addresses=False)]],
        )
        with pytest.raises(PermanentError) as caught:
            call(connector, model="sale.sale", method="quote", args=[[sale_id]])
    assert "you must enter an invoice address" in caught.value.message
    assert caught.value.response["type"] == "UserError"


@pytest.mark.tryton
def test_a_failing_then_step_names_the_records_it_left_behind(tryton):
    with TrytonConnector(tryton.options()) as connector:
        with pytest.raises(PermanentError) as caught:
            call(
                connector,
                model="sale.sale",
                method="create",
                args=[[sale_values(tryton.ids, with_addresses=False)]],
                then=["quote", "confirm"],
            )
        left = caught.value.response
        assert "you must enter an invoice address" in caught.value.message
        assert left["done"] == ["create"] and left["failed"] == "quote"
        (draft,) = call(connector, model="sale.sale", method="read", args=[left["ids"], ["state"]])
        assert draft["state"] == "draft"


@pytest.mark.tryton
def test_a_concurrent_update_is_a_transient_error(tryton):
    customer = tryton.ids["customer"]
    with TrytonConnector(tryton.options()) as connector, pytest.raises(TransientError) as caught:
        # The client says it read the party at a time that is not its last change.
        call(
            connector,
            model="party.party",
            method="write",
            args=[[customer], {"name": "Ada S."}],
            context={"_timestamp": {f"party.party,{customer}": "1"}},
        )
    assert "modified in the meanwhile" in caught.value.message


@pytest.mark.tryton
def test_an_unknown_method_is_a_permanent_error(tryton):
    with TrytonConnector(tryton.options()) as connector, pytest.raises(PermanentError) as caught:
        call(connector, model="sale.sale", method="no_such_method", args=[[1]])
    assert caught.value.status == 403


@pytest.mark.tryton
def test_stock_levels_per_product_and_location(tryton):
    with TrytonConnector(tryton.options()) as connector:
        items = list(connector.read({"locations": ["STO"], "domain": [["type", "=", "goods"]]}))
    assert {item.data["code"]: item.data["quantity"] for item in items} == {
        "TSHIRT-BLK-M": 100,
        "MUG-LOGO": 40,
        "CAP-RED": 25,
    }
    assert all(item.position is None for item in items)
    first = items[0].data
    assert first["location"] == tryton.ids["storage"] and first["location_code"] == "STO"
    assert first["product"] in tryton.ids["products"].values()


@pytest.mark.tryton
def test_stock_levels_fall_after_a_confirmed_sale_is_shipped_in_the_forecast(tryton):
    with TrytonConnector(tryton.options()) as connector:
        call(
            connector,
            model="sale.sale",
            method="create",
            args=[[sale_values(tryton.ids)]],
            then=["quote", "confirm"],
        )
        items = connector.read(
            {
                "locations": [tryton.ids["storage"]],
                "page_size": 1,
                "domain": [["code", "=", "TSHIRT-BLK-M"]],
            }
        )
        (item,) = [i.data for i in items]
    assert (item["quantity"], item["forecast_quantity"]) == (100, 98)
    assert item["location_code"] == "STO"


@pytest.mark.tryton
def test_an_unknown_location_code_is_a_permanent_error(tryton):
    with TrytonConnector(tryton.options()) as connector, pytest.raises(PermanentError) as caught:
        list(connector.read({"locations": ["NOPE"]}))
    assert "no stock location has the code 'NOPE'" in caught.value.message


# -- the contract every connector keeps ---------------------------------------------------


@pytest.mark.tryton
class TestTrytonContract(ConnectorContract):
    connector_class = TrytonConnector

    @pytest.fixture(autouse=True)
    def _server(self, tryton_for_class):
        self.tryton = tryton_for_class

    def connection_options(self, tmp_path):
        return self.tryton.options()

    def read_options(self, tmp_path):
        return {"locations": ["STO"], "domain": [["type", "=", "goods"]]}

    def call_options(self, tmp_path):
        return {"model": "product.product", "method": "search_read", "args": [[], 0, 10]}

    def failing_call_options(self, tmp_path):
        # A product template without its required name: Tryton refuses it.
        return {"model": "product.template", "method": "create", "args": [[{"type": "goods"}]]}
