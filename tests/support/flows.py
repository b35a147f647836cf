"""Helpers for the retail flow tests: run a shipped flow against a test's Tryton, read the
ERP back over its own API, count what it holds.

The flows are the shipped files in ``flows/``, run unchanged: the test only sets their
vars (the ERP's URL, the input and output paths) as a user would with ``--var``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from connectors._json import dumps
from connectors.tryton import TrytonConnector
from engine import Engine
from engine.validation import compile_validator, load_schema

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "flows"
EXAMPLES = ROOT / "examples"
CANONICAL = ROOT / "mappings" / "canonical"

#: What a second run must leave exactly as it was.
ERP_MODELS = (
    "party.party",
    "party.address",
    "party.contact_mechanism",
    "sale.sale",
    "sale.line",
    "account.invoice",
    "account.invoice.line",
    "stock.move",
)


def read_ndjson(path: Path) -> list[dict]:
    """The records of an NDJSON file (money as Decimal), [] when it does not exist."""
    if not Path(path).exists():
        return []
    lines = Path(path).read_text().splitlines()
    return [json.loads(line, parse_float=Decimal) for line in lines if line.strip()]


def write_ndjson(path: Path, records: Iterable[dict]) -> Path:
    """Write records as NDJSON, a ``Decimal`` as a JSON number digit for digit."""
    Path(path).write_text("".join(dumps(r) + "\n" for r in records))
    return Path(path)


def example_records(relative: str, *names: str) -> list[dict]:
    """Records of an example's NDJSON file; with ``names``, those whose order name matches."""
    records = read_ndjson(EXAMPLES / relative)
    if not names:
        return records
    found = {r.get("name") or r.get("order_name"): r for r in records}
    return [found[name] for name in names]


def flow_vars(tryton: Any, out_dir: Path, **extra: Any) -> dict[str, Any]:
    """The vars that point a shipped flow at this test's Tryton and output folder."""
    return {
        "tryton_url": tryton.url,
        "tryton_database": tryton.database,
        "tryton_user": tryton.username,
        "out_dir": str(out_dir),
        **extra,
    }


def run_flow(name: str, state: Path, run_vars: dict[str, Any]):
    """Run ``flows/<name>.yaml`` through the library API; returns (engine, result)."""
    engine = Engine(state=state)
    return engine, engine.run(FLOWS / f"{name}.yaml", vars=run_vars)


def validator(model: str):
    """The per-record validator of a canonical schema."""
    schema, problems = load_schema(str(CANONICAL / f"{model}.schema.json"))
    assert problems == []
    return compile_validator(schema)


class Erp:
    """The test's Tryton, read over its JSON-RPC API (the connector, as the flows use it)."""

    def __init__(self, tryton: Any):
        self.connector = TrytonConnector(tryton.options())

    def search_read(
        self, model: str, domain: list, fields: list[str], order: list | None = None
    ) -> list[dict]:
        return self.connector.execute(
            model, "search_read", domain, 0, None, order or [["id", "ASC"]], fields
        )

    def read(self, model: str, ids: list[int], fields: list[str]) -> list[dict]:
        rows = {r["id"]: r for r in self.connector.execute(model, "read", ids, fields)}
        return [rows[i] for i in ids]

    def count(self, model: str, domain: list | None = None) -> int:
        return self.connector.execute(model, "search_count", domain or [])

    def counts(self, models: Iterable[str] = ERP_MODELS) -> dict[str, int]:
        return {model: self.count(model) for model in models}

    def sale(self, reference: str) -> dict:
        """The one sales order with this reference, with its lines and party."""
        [sale] = self.search_read(
            "sale.sale",
            [["reference", "=", reference]],
            [
                "number",
                "state",
                "party",
                "untaxed_amount",
                "tax_amount",
                "total_amount",
                "lines",
                "invoices",
                "shipments",
                "description",
            ],
        )
        sale["lines"] = self.read(
            "sale.line",
            sale["lines"],
            ["product", "product.code", "quantity", "unit_price", "amount", "taxes", "description"],
        )
        [sale["party"]] = self.read("party.party", [sale["party"]], ["name", "email", "addresses"])
        return sale

    def close(self) -> None:
        self.connector.close()

    def __enter__(self) -> Erp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def money(value: Any) -> Decimal:
    """An amount from a record or the ERP as a Decimal with 2 places, for comparisons."""
    return Decimal(str(value)).quantize(Decimal("0.01"))
