"""The contract suite itself: MemoryConnector passes it, and it catches broken connectors."""

from __future__ import annotations

from typing import ClassVar

import pytest

from connectors.base import Connector, Item, Request
from connectors.errors import PermanentError, TransientError
from connectors.testing import ConnectorContract, MemoryConnector, _undescribed


class TestMemoryContract(ConnectorContract):
    connector_class = MemoryConnector
    registered = False

    def connection_options(self, tmp_path):
        return {"records": [{"id": 1}, {"id": 2}, {"id": 3}]}

    def bad_read_options(self, tmp_path):
        return {"records": [Item(error="not JSON", raw="{oops", line=1), {"id": 2}]}

    def read_options(self, tmp_path):
        return {}

    def call_options(self, tmp_path):
        return {"record": {"id": 1}}

    def received_idempotency_key(self, connector):
        return connector.calls[-1].idempotency_key


def test_memory_connector_plays_its_failure_script_in_order():
    memory = MemoryConnector({"id": "erp", "fail": ["transient", "permanent", "ok"]})
    assert MemoryConnector.instances["erp"] is memory
    with pytest.raises(TransientError):
        memory.call(Request({"n": 1}))
    with pytest.raises(PermanentError):
        memory.call(Request({"n": 2}))
    assert memory.call(Request({"n": 3})).status == 200
    assert memory.call(Request({"n": 4}, idempotency_key="k")).body["call"] == 4
    assert [call.options["n"] for call in memory.calls] == [1, 2, 3, 4]
    memory.close()
    assert memory.closed


def test_memory_connector_reads_after_a_cursor():
    memory = MemoryConnector({"records": ["a", "b", "c"]})
    assert [(item.position, item.data) for item in memory.read({}, 1)] == [(2, "b"), (3, "c")]


class Undocumented(Connector):
    name = "undocumented"
    description = "a connector whose authors forgot things"
    options_schema: ClassVar[dict] = {"type": "object", "properties": {"url": {"type": "string"}}}
    call_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {"auth": {"description": "ok", "properties": {"token": {}}}},
    }


def test_the_contract_finds_undescribed_properties_at_any_depth():
    assert _undescribed(Undocumented.options_schema) == ["url"]
    assert _undescribed(Undocumented.call_schema) == ["auth.token"]


def test_the_contract_fails_a_connector_that_breaks_it(tmp_path):
    class Contract(ConnectorContract):
        connector_class = Undocumented

        def call_options(self, tmp_path):
            return {}

    suite = Contract()
    for check in (
        suite.test_schemas_are_draft07_objects_with_every_property_described,
        suite.test_connection_options_reject_unknown_keys,
        suite.test_roles_match_the_overridden_methods,  # call_schema set, call() not written
    ):
        with pytest.raises(AssertionError):
            check()
