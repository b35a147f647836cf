"""flows/replenishment.yaml against a real Tryton: store signals become a transfer request
(an internal shipment from the warehouse) within the limits, an approval above them, or an
item in the planners' queue with the facts and the open purchase orders; once each.

Each test gets its own trytond over a fresh copy of the demo database
(tests/support/tryton.py), which holds the stores ST01 and ST02 and open purchase orders
for CAP-RED and MUG-LOGO (examples/tryton/erp_setup.py).
"""

from __future__ import annotations

import datetime
import json

import pytest

from engine import Engine
from tests.conftest import flowyard
from tests.support.flows import EXAMPLES, Erp, flow_vars, run_flow

pytest_plugins = ["tests.support.tryton"]
pytestmark = pytest.mark.tryton

SIGNALS = EXAMPLES / "replenishment" / "signals.ndjson"


def transfers(erp: Erp) -> dict[str, dict]:
    shipments = erp.search_read(
        "stock.shipment.internal",
        [],
        ["reference", "state", "from_location", "to_location", "moves"],
    )
    for shipment in shipments:
        shipment["moves"] = erp.read(
            "stock.move", shipment["moves"], ["product", "quantity", "from_location", "to_location"]
        )
    return {s["reference"]: s for s in shipments}


def test_signals_become_a_transfer_an_approval_or_the_planners_queue(tryton, tmp_path):
    state = tmp_path / "state.db"
    run_vars = flow_vars(tryton, tmp_path / "out", signals=str(SIGNALS))
    ids = tryton.ids
    with Erp(tryton) as erp:
        eng, result = run_flow("replenishment", state, run_vars)
        counts = result.counts
        assert (counts["done"], counts["review"], counts["filtered"], counts["dead_lettered"]) == (
            1,
            2,
            1,
            1,
        ), result

        # sig-5001: ST01 needs 32 T-shirts (14 days at 2.5 a day, 3 on hand); the warehouse
        # can spare 90 (100 less the reserve of 10): a transfer request, within the limit
        made = transfers(erp)
        assert set(made) == {"sig-5001"}
        [move] = made["sig-5001"]["moves"]
        assert made["sig-5001"]["state"] == "draft"
        assert made["sig-5001"]["to_location"] == ids["stores"]["ST01"]
        assert made["sig-5001"]["from_location"] == ids["storage"]
        assert (move["product"], move["quantity"]) == (ids["products"]["TSHIRT-BLK-M"], 32)

        # sig-5002: ST01 needs 26 caps, the warehouse can spare 15: the planners' queue,
        # with the open purchase order and its delivery date
        [held] = eng.reviews(queue="planners")
        assert (held.record_key, held.owner, held.category) == (
            "sig-5002",
            "planning",
            "warehouse_cannot_cover",
        )
        due = (datetime.date.today() + datetime.timedelta(days=12)).isoformat()
        purchase = ids["purchases"]["CAP-RED"]["number"]
        assert held.figures == {
            "store": "ST01",
            "sku": "CAP-RED",
            "on_hand": 2,
            "days_of_cover": 1.0,
            "needed": 26,
            "warehouse_can_spare": 15,
            "open_purchases": [purchase],
            "open_purchase_dates": [due],
            "incoming": 60,
        }
        assert f"open purchase orders: {purchase} due {due}, 60 units in all" in held.reason

        # sig-5003: ST02 is out and needs 70: more than the limit of 40, an approval
        [approval] = eng.approvals()
        assert (approval.record_key, approval.queue, approval.owner) == (
            "sig-5003",
            "transfers",
            "planning-lead",
        )
        assert approval.figures["quantity"] == 70
        # sig-5005: a store the ERP does not know
        [letter] = eng.dead_letters()
        assert letter.step == "unknown_store" and "ST09" in letter.message

        # the lead approves from the command line: the transfer is made at once
        approved = flowyard(
            "approvals", "approve", approval.id, "--by", "lea", "--state", state, "-o", "json"
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert json.loads(approved.stdout)["run"]["counts"]["done"] == 1
        made = transfers(erp)
        assert set(made) == {"sig-5001", "sig-5003"}
        [move] = made["sig-5003"]["moves"]
        assert made["sig-5003"]["to_location"] == ids["stores"]["ST02"] and move["quantity"] == 70

        # a second run makes nothing twice
        _, again = run_flow("replenishment", state, run_vars)
        assert again.counts["skipped"] == 2 and again.counts["review"] == 1, again
        assert set(transfers(erp)) == {"sig-5001", "sig-5003"}
    # stats group the exceptions by store
    [figures] = Engine(state=state).stats().flows
    assert figures.exceptions_by_label == {"store": {"ST01": 1, "ST02": 1, "ST09": 1}}
