"""The tryton connector's `confirm_warnings`: a call answers Yes to the Tryton warnings it
names, as a person in the Tryton client does, and to no other.

Against the real Tryton (tests/support/tryton.py): an invoice whose lines carry the
order's taxes rather than their products' defaults makes Tryton warn before posting it
("does not have the default taxes"), which return_to_refund's credit notes always do.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.base import Request
from connectors.errors import PermanentError
from connectors.tryton import TrytonConnector

pytest_plugins = ["tests.support.tryton"]
pytestmark = pytest.mark.tryton


def invoice_with_the_orders_tax(connector: TrytonConnector, ids: dict, reference: str) -> int:
    """A confirmed sale taxed 6 % (the category's default is 10 %); its draft invoice."""
    values = {
        "party": ids["customer"],
        "invoice_address": ids["customer_address"],
        "shipment_address": ids["customer_address"],
        "reference": reference,
        "lines": [
            [
                "create",
                [
                    {
                        "type": "line",
                        "product": ids["products"]["MUG-LOGO"],
                        "quantity": 1,
                        "unit": ids["unit"],
                        "unit_price": Decimal("8.50"),
                        "taxes": [["add", [ids["taxes"]["State tax 6%"]]]],
                    }
                ],
            ]
        ],
    }
    [sale] = connector.execute("sale.sale", "create", [values])
    connector.execute("sale.sale", "quote", [sale])
    connector.execute("sale.sale", "confirm", [sale])
    [read] = connector.execute("sale.sale", "read", [sale], ["invoices"])
    [invoice] = read["invoices"]
    return invoice


def post(connector: TrytonConnector, invoice: int, **options) -> dict:
    request = Request(
        options={
            "model": "account.invoice",
            "method": "post",
            "args": [[invoice]],
            "read_fields": ["state", "tax_amount"],
            **options,
        }
    )
    return connector.call(request).body


def test_a_call_confirms_the_warnings_it_names_once_and_no_other(tryton):
    connector = TrytonConnector(tryton.options())
    try:
        first = invoice_with_the_orders_tax(connector, tryton.ids, "#W1")
        with pytest.raises(PermanentError) as refused:
            post(connector, first)
        assert str(refused.value).startswith("Tryton warning needs a person to confirm it: ")
        assert "does not have the default taxes" in str(refused.value)
        assert refused.value.response["key"].endswith(".invoice_taxes")

        with pytest.raises(PermanentError):  # another warning's name confirms nothing
            post(connector, first, confirm_warnings=["invoice_similar"])

        answer = post(connector, first, confirm_warnings=["invoice_taxes"])
        assert answer["records"] == [
            {"id": first, "state": "posted", "tax_amount": Decimal("0.51")}
        ]

        # the Yes was for that invoice, once: the next one warns again
        second = invoice_with_the_orders_tax(connector, tryton.ids, "#W2")
        with pytest.raises(PermanentError):
            post(connector, second)
        [state] = connector.execute("account.invoice", "read", [second], ["state"])
        assert state["state"] == "draft"
    finally:
        connector.close()
