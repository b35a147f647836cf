"""The benchmarks' baseline: bench/reference_flow.yaml's work, written by hand with no engine.

    .venv/bin/python bench/baseline.py --orders ORDERS.ndjson --erp ERP.db --state STATE.db
        [--log RUN.jsonl] [--validator engine|fastjsonschema|jsonschema]
        [--log-records] [--commit-every N]

The plain baseline (the defaults) is what a competent script writer would do with json,
sqlite3, a compiled JSON Schema validator and hashlib:

- read the NDJSON file line by line; a line that is not JSON is dead-lettered;
- map each Shopify order to the canonical order with a hand-written function, the same
  mapping as ``mappings/shopify_order_to_canonical.yaml``;
- validate it against ``mappings/canonical/order.schema.json`` with the validator the
  engine uses (``engine.validation.compile_validator``: fastjsonschema, the schema's
  ``$ref``s inlined, compiled once), so validation costs both sides the same; a failure is
  dead-lettered. ``--validator fastjsonschema`` compiles the schema as it is,
  ``--validator jsonschema`` validates with a ``Draft7Validator`` (25x slower);
- route pickup orders to the ``pickups`` table, the others to ``shipments``, and upsert
  every order into ``sales_orders``: the same rows, columns and JSON text as the
  engine's sqlite connector writes;
- remember each write's key (``pickup:<order_id>`` ...) with a SHA-256 fingerprint of the
  row in a ``keys`` table, so a re-run skips what it already wrote, and a changed order is
  dead-lettered as a conflict (the engine's default);
- log each dead letter as a JSON line (``--log-records``: one line per record);
- commit both databases every 500 records (``--commit-every``), one transaction each, so
  a crash repeats at most that many upserts, which are idempotent. ``--commit-every 1``
  is the durable-per-record baseline: each record's writes committed before the next.

It prints a JSON summary (counts, seconds) on stdout. It does not do what the engine adds
on top: per-record traces for ``flowyard trace``, digests of unchanged records, retries,
replay, leases, secrets masking, a state that another process can read while it runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sqlite3
import sys
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "mappings" / "canonical" / "order.schema.json"
COMMIT_EVERY = 500
CENT = Decimal("0.01")
METHODS = {"PICK_UP": "pickup", "LOCAL": "local"}

# -- the mapping, by hand --------------------------------------------------------------------


def money(value) -> str:
    """An amount (string or int) as a string with two decimals, rounded half up."""
    amount = Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)
    return str(abs(amount) if amount.is_zero() else amount)


def money_sum(items: list, key: str) -> Decimal:
    return sum((Decimal(item[key]) for item in items), Decimal(0)).quantize(CENT, ROUND_HALF_UP)


def utc(text: str) -> str:
    moment = dt.datetime.fromisoformat(text)
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return (moment.replace(tzinfo=None, microsecond=0) - offset).isoformat() + "Z"


def address(a: dict | None) -> dict:
    return {
        "name": a.get("name"),
        "company": a.get("company") or None,
        "line1": a["address1"],
        "line2": a.get("address2") or None,
        "city": a["city"],
        "region": a.get("province_code") or None,
        "postal_code": a.get("zip") or None,
        "country": a["country_code"],
        "phone": a.get("phone") or None,
    }


def rate_text(value) -> str | None:
    """A tax rate as a plain fraction: 0.0625 -> "0.0625" (a float by its shortest text)."""
    if value is None:
        return None
    text = format(Decimal(repr(value) if isinstance(value, float) else str(value)).normalize(), "f")
    return "0" if text in ("0", "-0") else text


def taxes(items: list | None) -> list[dict]:
    return [
        {"title": t.get("title"), "rate": rate_text(t.get("rate")), "amount": money(t["price"])}
        for t in items or []
    ]


def pairs(items: list | None) -> list[dict]:
    return [
        {"name": str(p["name"]), "value": None if p.get("value") is None else str(p["value"])}
        for p in items or []
    ]


def ident(value) -> str | None:
    return None if value is None else str(value)


def application(applications: list, allocation: dict) -> str | None:
    index = allocation.get("discount_application_index", -1)
    if index < 0:
        return None
    found = (applications[index] if index < len(applications) else None) or {}
    return found.get("code") or found.get("title")


def line(i: int, item: dict, applications: list) -> dict:
    allocations = item.get("discount_allocations") or []
    discount = money_sum(allocations, "amount")
    price = Decimal(item["price"]).quantize(CENT, ROUND_HALF_UP)
    if not str(item.get("sku") or "").strip():
        raise ValueError(f"line_items[{i - 1}].sku is missing or empty")
    return {
        "line_no": i,
        "external_id": ident(item.get("id")),
        "product_id": ident(item.get("product_id")),
        "variant_id": ident(item.get("variant_id")),
        "sku": item["sku"],
        "gtin": None,
        "title": item.get("name") or item.get("title") or item.get("sku") or "",
        "quantity": item["quantity"],
        "unit_price": money(item["price"]),
        "discount": money(discount),
        "discount_allocations": [
            {"amount": money(a["amount"]), "code": application(applications, a)}
            for a in allocations
        ],
        "tax": money(money_sum(item.get("tax_lines") or [], "price")),
        "tax_lines": taxes(item.get("tax_lines")),
        "total": money(price * item["quantity"] - discount),
        "properties": pairs(item.get("properties")),
        "gift_card": item.get("gift_card") or False,
    }


def method_of(r: dict, rates: list) -> tuple[str, str | None]:
    """The fulfillment method and pickup store, as the mapping decides them."""
    orders = r.get("fulfillment_orders") or []
    if orders:
        method_type = orders[0]["delivery_method"]["method_type"]
        store = str(orders[0]["assigned_location_id"]) if method_type == "PICK_UP" else None
        return METHODS.get(method_type, "ship"), store
    hint = " ".join(str(x.get("code", "")) for x in rates) + " "
    hint = (hint + " ".join(str(x.get("title", "")) for x in rates)).lower()
    if "pickup" in hint.replace("-", " ").replace("pick up", "pickup"):
        return "pickup", None
    if "local delivery" in hint.replace("_", " "):
        return "local", None
    return "ship", None


def to_canonical(r: dict) -> dict:
    """mappings/shopify_order_to_canonical.yaml, written by hand."""
    customer = r.get("customer")
    currency = r["currency"].strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise ValueError(f"{r['currency']!r} is not a currency code")
    if not str(r.get("name") or "").strip():
        raise ValueError("name is missing or empty")
    status = r.get("financial_status")
    rates = r.get("shipping_lines") or []
    applications = r.get("discount_applications") or []
    items = r["line_items"]
    method, store = method_of(r, rates)
    shipping_set = r.get("total_shipping_price_set")
    tip = r.get("total_tip_received") or "0"
    return {
        "order_id": f"shopify:{r['id']}",
        "external_ids": {"channel_id": str(r["id"]), "erp_sales_order": None},
        "channel": "store" if r.get("source_name", "web") == "pos" else "web",
        "order_number": r["name"],
        "created_at": utc(r["created_at"]),
        "updated_at": utc(r.get("updated_at") or r["created_at"]),
        "status": {
            "financial": "voided" if status == "expired" else status or "pending",
            "fulfillment": r.get("fulfillment_status") or "unfulfilled",
            "state": "cancelled"
            if r.get("cancelled_at")
            else "closed"
            if r.get("closed_at")
            else "open",
        },
        "currency": currency,
        "taxes_included": r.get("taxes_included") or False,
        "customer": {
            "id": str(customer["id"]) if customer else None,
            "email": r.get("email")
            or r.get("contact_email")
            or ((customer.get("email") or None) if customer else None),
            "name": (
                " ".join(n for n in (customer.get("first_name"), customer.get("last_name")) if n)
                or None
            )
            if customer
            else None,
            "phone": r.get("phone") or ((customer.get("phone") or None) if customer else None),
        },
        "bill_to": address(r["billing_address"])
        if (r.get("billing_address") or {}).get("address1")
        else None,
        "ship_to": address(r["shipping_address"]) if r.get("shipping_address") else None,
        "lines": [line(i, item, applications) for i, item in enumerate(items, 1)],
        "shipping_lines": [
            {
                "code": rate.get("code") or None,
                "title": rate.get("title") or rate.get("code") or "Shipping",
                "price": money(rate["price"]),
                "discount": money(money_sum(rate.get("discount_allocations") or [], "amount")),
                "tax": money(money_sum(rate.get("tax_lines") or [], "price")),
                "tax_lines": taxes(rate.get("tax_lines")),
            }
            for rate in rates
        ],
        "totals": {
            "subtotal": money(r["subtotal_price"]),
            "discount": money(r["total_discounts"])
            if r.get("total_discounts") is not None
            else money(
                money_sum(
                    [a for x in items + rates for a in x.get("discount_allocations", [])],
                    "amount",
                )
            ),
            "shipping": money(shipping_set["shop_money"]["amount"])
            if shipping_set
            else money(money_sum(rates, "price")),
            "tax": money(r["total_tax"])
            if r.get("total_tax") is not None
            else money(
                money_sum([t for x in items + rates for t in x.get("tax_lines", [])], "price")
            ),
            "total": money(r["total_price"]),
        },
        "fulfillment": {"method": method, "pickup_store": store},
        "tags": [t.strip() for t in (r.get("tags") or "").split(",") if t.strip()],
        "note": r.get("note") or None,
        "note_attributes": pairs(r.get("note_attributes")),
        "discount_codes": [
            {"code": c["code"], "amount": money(c["amount"]), "type": c.get("type")}
            for c in r.get("discount_codes") or []
        ],
        "tax_lines": taxes(r.get("tax_lines")),
        "fee_lines": [{"title": "Tip", "amount": money(tip), "tax": "0.00", "tax_lines": []}]
        if Decimal(tip) != 0
        else [],
        "payment_methods": [g for g in r.get("payment_gateway_names") or [] if g],
    }


# -- the writes -------------------------------------------------------------------------------


def text(value):
    """A value as the engine's sqlite connector stores it: objects and lists as JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def writes(order: dict) -> list[tuple[str, str, dict]]:
    """(key, table, row) for each upsert an order needs: pickup or shipment, then sales order."""
    oid = order["order_id"]
    if order["fulfillment"]["method"] == "pickup":
        first = (
            f"pickup:{oid}",
            "pickups",
            {
                "order_id": oid,
                "order_number": order["order_number"],
                "store": order["fulfillment"]["pickup_store"],
                "customer": order["customer"]["name"],
                "lines": len(order["lines"]),
            },
        )
    else:
        first = (
            f"shipment:{oid}",
            "shipments",
            {
                "order_id": oid,
                "method": order["fulfillment"]["method"],
                "ship_to": text(order["ship_to"]),
                "lines": text(order["lines"]),
            },
        )
    totals = order["totals"]
    sales = (
        f"sales_order:{oid}",
        "sales_orders",
        {
            "order_id": oid,
            "order_number": order["order_number"],
            "customer_email": order["customer"]["email"],
            "currency": order["currency"],
            "subtotal": totals["subtotal"],
            "tax": totals["tax"],
            "total": totals["total"],
            "fulfillment": order["fulfillment"]["method"],
            "created_at": order["created_at"],
            "lines": text(order["lines"]),
        },
    )
    return [first, sales]


TABLES = {
    "pickups": ["order_id", "order_number", "store", "customer", "lines"],
    "shipments": ["order_id", "method", "ship_to", "lines"],
    "sales_orders": [
        "order_id",
        "order_number",
        "customer_email",
        "currency",
        "subtotal",
        "tax",
        "total",
        "fulfillment",
        "created_at",
        "lines",
    ],
}


def upsert_sql(table: str, columns: list[str]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "order_id")
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT (order_id) DO UPDATE SET {updates}"
    )


def open_databases(erp_path: Path, state_path: Path) -> tuple[sqlite3.Connection, ...]:
    erp = sqlite3.connect(erp_path)
    erp.execute("PRAGMA journal_mode=WAL")
    for table, columns in TABLES.items():
        erp.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)}, PRIMARY KEY (order_id))"
        )
    state = sqlite3.connect(state_path)
    state.execute("PRAGMA journal_mode=WAL")
    state.execute("PRAGMA synchronous=NORMAL")
    state.execute(
        "CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
        "response TEXT, at REAL NOT NULL)"
    )
    state.execute(
        "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY, record_key TEXT, "
        "line INTEGER, step TEXT, error TEXT, record TEXT, at REAL NOT NULL)"
    )
    erp.commit()
    state.commit()
    return erp, state


class Invalid(Exception):
    """A record the schema refuses."""


def make_validator(schema: dict, library: str):
    """A function that raises :class:`Invalid` with the library's message."""
    if library == "engine":
        sys.path.insert(0, str(ROOT))
        from engine.errors import RecordValidationError
        from engine.validation import compile_validator

        check_record = compile_validator(schema)

        def validate_engine(order: dict) -> None:
            try:
                check_record(order)
            except RecordValidationError as exc:
                raise Invalid(str(exc)) from None

        return validate_engine
    if library == "fastjsonschema":
        import fastjsonschema

        check = fastjsonschema.compile(schema)

        def validate_fast(order: dict) -> None:
            try:
                check(order)
            except fastjsonschema.JsonSchemaValueException as exc:
                raise Invalid(exc.message) from None

        return validate_fast
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)

    def validate(order: dict) -> None:
        try:
            validator.validate(order)
        except jsonschema.ValidationError as exc:
            raise Invalid(exc.message) from None

    return validate


def run(
    orders: Path,
    erp_path: Path,
    state_path: Path,
    log_path: Path,
    library: str = "engine",
    log_records: bool = False,
    commit_every: int = COMMIT_EVERY,
) -> dict:
    schema = json.loads(SCHEMA.read_text())
    validate = make_validator(schema, library)
    erp, state = open_databases(erp_path, state_path)
    sql = {table: upsert_sql(table, columns) for table, columns in TABLES.items()}
    counts = {"read": 0, "done": 0, "skipped": 0, "dead_lettered": 0}
    log = open(log_path, "a", encoding="utf-8")

    def dead(key, number, step, error, record) -> None:
        counts["dead_lettered"] += 1
        state.execute(
            "INSERT INTO dead_letters (record_key, line, step, error, record, at) "
            "VALUES (?,?,?,?,?,?)",
            (key, number, step, error, record, time.time()),
        )
        log.write(
            json.dumps(
                {
                    "record_key": key,
                    "outcome": "dead_lettered",
                    "step": step,
                    "error": error,
                    "ts": time.time(),
                }
            )
            + "\n"
        )

    with open(orders, encoding="utf-8") as source:
        for number, raw in enumerate(source, 1):
            if not raw.strip():
                continue
            counts["read"] += 1
            if counts["read"] % commit_every == 0:
                erp.commit()
                state.commit()
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                dead(f"line:{number}", number, "source", str(exc), raw.rstrip("\n"))
                continue
            key = str(record["id"])
            try:
                order = to_canonical(record)
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                dead(key, number, "map", f"{type(exc).__name__}: {exc}", raw.rstrip("\n"))
                continue
            try:
                validate(order)
            except Invalid as exc:
                dead(key, number, "validate", str(exc), json.dumps(order))
                continue
            outcome = "skipped"
            for write_key, table, row in writes(order):
                fingerprint = hashlib.sha256(
                    json.dumps([table, row], sort_keys=True).encode()
                ).hexdigest()
                known = state.execute(
                    "SELECT fingerprint FROM keys WHERE key = ?", (write_key,)
                ).fetchone()
                if known is not None:
                    if known[0] != fingerprint:
                        outcome = "conflict"
                        break
                    continue
                cur = erp.execute(sql[table], list(row.values()))
                response = json.dumps({"rowid": cur.lastrowid, "changes": cur.rowcount})
                state.execute(
                    "INSERT INTO keys VALUES (?, ?, ?, ?)",
                    (write_key, fingerprint, response, time.time()),
                )
                outcome = "done"
            if outcome == "conflict":
                dead(key, number, write_key, "sent before with other content", json.dumps(order))
                continue
            counts[outcome] += 1
            if log_records:
                log.write(
                    json.dumps({"record_key": key, "outcome": outcome, "ts": time.time()}) + "\n"
                )
    erp.commit()
    state.commit()
    erp.close()
    state.close()
    log.close()
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=Path, required=True)
    parser.add_argument("--erp", type=Path, required=True, help="the target database")
    parser.add_argument("--state", type=Path, required=True, help="keys and dead letters")
    parser.add_argument("--log", type=Path, help="run log [default: next to --state]")
    parser.add_argument(
        "--validator",
        choices=["engine", "fastjsonschema", "jsonschema"],
        default="engine",
        help="engine: the engine's compiled validator [default]",
    )
    parser.add_argument("--log-records", action="store_true", help="a log line per record")
    parser.add_argument(
        "--commit-every", type=int, default=COMMIT_EVERY, help="records per transaction"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    log = args.log or args.state.with_suffix(".log")
    counts = run(
        args.orders,
        args.erp,
        args.state,
        log,
        args.validator,
        args.log_records,
        max(1, args.commit_every),
    )
    seconds = time.perf_counter() - started
    json.dump({"counts": counts, "seconds": round(seconds, 3)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
