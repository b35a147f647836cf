"""A partner's application that embeds flowyard with a connector of its own.

The partner's point-of-sale system keeps its day's sales in memory (here: a list); the
application hands them to flowyard, which posts each sale once to a ledger through a
second connector of the partner's, and remembers what was posted in its state file.
Run it twice: the second run posts nothing.

    ../../.venv/bin/python pos_app.py [STATE_FILE]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from connectors import Connector, Item, PermanentError, Request, Response
from engine import Engine, FlowError

HERE = Path(__file__).resolve().parent

# The till's journal, as the partner's application holds it.
SALES = [
    {"receipt": "S1-0001", "store": "BER-01", "sku": "TEE-BLK-M", "qty": 2, "amount": "39.80"},
    {"receipt": "S1-0002", "store": "BER-01", "sku": "MUG-WHT", "qty": 1, "amount": "12.50"},
    {"receipt": "S1-0003", "store": "BER-01", "sku": "VOID", "qty": 0, "amount": "0.00"},
    {"receipt": "S1-0004", "store": "BER-01", "sku": "CAP-RED", "qty": 1, "amount": "-5.00"},
]


class TillJournal(Connector):
    """Source: the sales the application passes in its ``journal`` option."""

    name = "till"
    description = "Sales from the partner's point-of-sale journal."
    options_schema = {"type": "object", "additionalProperties": False, "properties": {}}
    read_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"store": {"type": "string", "description": "Only this store's sales."}},
    }

    def read(self, options: dict, cursor: Any = None) -> Iterator[Item]:
        for n, sale in enumerate(SALES, start=1):
            if sale["store"] == options.get("store", sale["store"]):
                yield Item(data=dict(sale), line=n)


class Ledger(Connector):
    """Action: books one sale in the partner's ledger (a dict standing in for its database)."""

    name = "ledger"
    description = "The partner's sales ledger."
    options_schema = {"type": "object", "additionalProperties": False, "properties": {}}
    call_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["entry"],
        "properties": {"entry": {"type": "object", "description": "The ledger entry."}},
    }
    booked: dict[str, dict] = {}

    def call(self, request: Request) -> Response:
        entry = request.options["entry"]
        if Decimal(entry["amount"]) < 0:
            raise PermanentError(f"negative amount {entry['amount']}: book it as a return")
        self.booked[request.idempotency_key] = entry
        return Response(body={"ledger_id": f"L-{len(self.booked):04d}"})


def main(state: str) -> int:
    events: list[dict] = []
    eng = Engine(state=state, listeners=[events.append])  # our own logging stays ours
    eng.register_connector("till", TillJournal)
    eng.register_connector("ledger", Ledger)
    try:
        flow = eng.load(HERE / "flow.yaml")
    except FlowError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    result = eng.run(flow, vars={"store": "BER-01"})
    print(f"{result.flow}: {result.status}; counts {result.counts}")
    store = eng.store()
    for letter in store.dead_letters(flow=flow.name):
        print(f"  dead letter {letter.id}: {letter.record_key} at {letter.step}: {letter.message}")
    store.close()
    sent = sum(1 for e in events if e["event"] == "attempt" and e["outcome"] == "ok")
    print(f"  ledger calls this run: {sent}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(HERE / ".flowyard" / "state.db")))
