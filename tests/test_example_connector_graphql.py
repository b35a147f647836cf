"""The GraphQL connector of examples/connector_graphql (the one docs/connectors.md walks
through) against a GraphQL-like shop on 127.0.0.1: the contract suite, paging by POST-body
cursor, errors, and incremental runs through the engine."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest

from connectors.errors import PermanentError, TransientError
from connectors.testing import ConnectorContract
from engine import Engine
from tests.conftest import ROOT
from tests.support.graphql_shop import TOKEN, TOKEN_HEADER, GraphQLShop

EXAMPLE = ROOT / "examples" / "connector_graphql"


def _load_example():
    name = "flowyard_example_shop_orders"
    if name not in sys.modules:  # examples/ is no package: load the module from its file
        spec = importlib.util.spec_from_file_location(name, EXAMPLE / "shop_orders.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ShopOrders = _load_example().ShopOrders


@pytest.fixture
def shop():
    with GraphQLShop(orders=5) as running:
        yield running


def options(shop: GraphQLShop, token: str = TOKEN) -> dict:
    return {
        "base_url": shop.url + "/admin/api/2025-10",
        "auth": {"type": "header", "name": TOKEN_HEADER, "value": token},
        "timeout": 5,
    }


class TestShopOrdersContract(ConnectorContract):
    connector_class = ShopOrders
    registered = False  # registered by hand (Engine.register_connector), not an entry point

    @pytest.fixture(autouse=True)
    def _shop(self, shop):  # a GraphQLShop, started for the test
        self.shop = shop

    def connection_options(self, tmp_path):
        return {
            "base_url": self.shop.url + "/admin/api/2025-10",
            "auth": {"type": "header", "name": "X-Shopify-Access-Token", "value": TOKEN},
        }

    def read_options(self, tmp_path):
        return {"page_size": 2}  # five orders: three pages


def test_the_docs_show_the_example_file_as_it_is():
    docs = (ROOT / "docs" / "connectors.md").read_text()
    marker = "<!-- examples/connector_graphql/shop_orders.py -->"
    assert marker in docs
    block = re.search(r"```python\n(.*?)```", docs[docs.index(marker) :], re.S).group(1)
    assert block == (EXAMPLE / "shop_orders.py").read_text()


def test_pages_are_posted_with_the_last_end_cursor_until_there_is_no_next_page(shop):
    with ShopOrders(options(shop)) as connector:
        items = list(connector.read({"page_size": 2}))
    assert [item.data["name"] for item in items] == ["#1001", "#1002", "#1003", "#1004", "#1005"]
    assert [r["variables"]["after"] for r in shop.requests] == [
        None,
        items[1].position,
        items[3].position,
    ]
    assert all(r["headers"]["content-type"] == "application/json" for r in shop.requests)
    first = items[0].data
    assert first["legacyResourceId"] == "9007199254740994"  # above 2**53, kept as it came
    assert first["totalPriceSet"] == {"shopMoney": {"amount": "39.80", "currencyCode": "EUR"}}
    assert set(first) == {
        "id",
        "legacyResourceId",
        "name",
        "email",
        "updatedAt",
        "displayFinancialStatus",
        "totalPriceSet",
    }  # what the query selects, and the shop's schema has


def test_a_throttled_query_is_transient(shop):
    shop.throttle(times=1)
    with ShopOrders(options(shop)) as connector, pytest.raises(TransientError) as caught:
        list(connector.read({}))
    assert "Throttled" in str(caught.value)
    assert caught.value.response[0]["extensions"]["code"] == "THROTTLED"


def test_a_query_the_shop_refuses_is_permanent_with_the_shops_message(shop):
    with ShopOrders(options(shop)) as connector, pytest.raises(PermanentError) as caught:
        list(connector.read({"page_size": 500}))
    assert "first must be between 1 and 250" in str(caught.value)


def test_a_wrong_token_is_permanent_and_never_shown(shop):
    with ShopOrders(options(shop, token="shpat-wrong")) as connector:
        with pytest.raises(PermanentError) as caught:
            list(connector.read({}))
    assert caught.value.status == 401
    assert "shpat-wrong" not in str(caught.value)


def test_a_flow_reads_each_order_once_and_the_next_run_resumes_after_the_last(
    tmp_path, shop, monkeypatch
):
    monkeypatch.setenv("SHOP_TOKEN", TOKEN)
    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text((EXAMPLE / "flow.yaml").read_text())
    engine = Engine(state=tmp_path / "state.db")
    engine.register_connector("shop_orders", ShopOrders)
    flow = engine.load(flow_file)

    first = engine.run(flow, vars={"shop": shop.url})
    shop.add_order(name="#1006", total="12.00", status="PENDING")
    second = engine.run(flow, vars={"shop": shop.url})

    assert (first.counts["read"], first.counts["done"]) == (5, 5)
    assert (second.counts["read"], second.counts["done"]) == (1, 1)
    lines = (tmp_path / "out" / "orders.ndjson").read_text().splitlines()
    assert [json.loads(line)["order"] for line in lines] == [f"#{n}" for n in range(1001, 1007)]
    assert json.loads(lines[-1]) == {
        "id": "9007199254740999",
        "order": "#1006",
        "updated_at": "2026-03-01T10:06:00+01:00",
        "status": "PENDING",
        "total": "12.00",
        "currency": "EUR",
    }
    assert TOKEN not in (tmp_path / "state.db").read_bytes().decode("latin-1")
