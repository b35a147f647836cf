"""Create the purchasing database the invoice_match example matches invoices against.

    python examples/invoice_match/seed_purchasing.py                 # out/purchasing.db
    python examples/invoice_match/seed_purchasing.py /tmp/purchasing.db --fresh
    python examples/invoice_match/seed_purchasing.py --late-order    # purchasing catches up

A small SQLite database standing in for the purchasing side of an ERP: purchase orders
with their lines (what we ordered, at what price) and goods receipts (what the warehouse
counted in), plus the accounts-payable tables ``approved_invoices`` and ``approved_invoice_lines``
that the flow fills.
Money and quantities are stored as decimal TEXT, never REAL, so they stay exact.
Re-running it adds what is missing and changes nothing else; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS purchase_orders (
    po_number   TEXT PRIMARY KEY,
    supplier_id TEXT NOT NULL,
    currency    TEXT NOT NULL,
    ordered_on  TEXT NOT NULL,
    status      TEXT NOT NULL            -- open, received, closed
);
CREATE TABLE IF NOT EXISTS po_lines (
    po_number   TEXT NOT NULL REFERENCES purchase_orders,
    line_no     INTEGER NOT NULL,
    sku         TEXT NOT NULL,
    description TEXT NOT NULL,
    quantity    TEXT NOT NULL,           -- decimal text
    unit        TEXT NOT NULL,           -- UN/ECE Rec 20 code
    unit_price  TEXT NOT NULL,           -- decimal text, net
    PRIMARY KEY (po_number, line_no)
);
CREATE TABLE IF NOT EXISTS goods_receipts (
    receipt_number TEXT NOT NULL,
    po_number      TEXT NOT NULL REFERENCES purchase_orders,
    po_line        INTEGER NOT NULL,
    sku            TEXT NOT NULL,
    quantity       TEXT NOT NULL,        -- decimal text: what was counted in
    received_on    TEXT NOT NULL,
    PRIMARY KEY (receipt_number, po_line)
);
CREATE TABLE IF NOT EXISTS approved_invoices (
    invoice_id     TEXT PRIMARY KEY,     -- <supplier id>:<invoice number>
    supplier_id    TEXT,
    invoice_number TEXT,
    po_number      TEXT,
    currency       TEXT,
    total          TEXT,
    due_date       TEXT,
    outcome        TEXT,                 -- matched or within_tolerance
    notes          TEXT,                 -- JSON list of tolerated deviations
    approved_at    TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS approved_invoice_lines (
    invoice_id     TEXT NOT NULL,        -- what approved invoices billed, per PO line:
    line_no        INTEGER NOT NULL,     -- a later invoice cannot bill it again
    po_number      TEXT NOT NULL,
    po_line        INTEGER,
    sku            TEXT NOT NULL,
    quantity       TEXT NOT NULL,
    unit_price     TEXT NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);
"""

#: po_number -> (supplier, currency, ordered on, status, lines: (sku, description, qty, price))
PURCHASE_ORDERS = {
    "PO-1001": (
        "SUP-ACME",
        "USD",
        "2026-02-10",
        "received",
        [
            ("TSHIRT-BLK-M", "T-shirt black M, blank", "200", "7.40"),
            ("TSHIRT-WHT-L", "T-shirt white L, blank", "100", "7.40"),
        ],
    ),
    "PO-1002": (
        "SUP-NORD",
        "USD",
        "2026-02-12",
        "received",
        [
            ("MUG-LOGO", "Stoneware mug, logo print", "120", "3.10"),
            ("MUG-PLAIN", "Stoneware mug, plain", "60", "2.80"),
        ],
    ),
    "PO-1003": (
        "SUP-CAPS",
        "USD",
        "2026-02-14",
        "open",
        [
            ("CAP-RED", "Baseball cap red", "50", "4.20"),
            ("CAP-BLUE", "Baseball cap blue", "50", "4.20"),
        ],
    ),
    "PO-1004": (
        "SUP-ACME",
        "USD",
        "2026-02-20",
        "received",
        [("TOTE-NAT", "Tote bag, natural cotton", "300", "1.95")],
    ),
    "PO-1005": (
        "SUP-NORD",
        "USD",
        "2026-02-21",
        "received",
        [("VASE-BLU", "Glazed vase blue", "24", "6.50")],
    ),
}

#: the order an invoice in the inbox refers to but purchasing had not entered (--late-order)
LATE_ORDER = {
    "PO-1099": (
        "SUP-ACME",
        "USD",
        "2026-02-28",
        "received",
        [("TSHIRT-BLK-S", "T-shirt black S, blank", "50", "7.40")],
    )
}
LATE_RECEIPTS = [("GR-5010", "PO-1099", 1, "TSHIRT-BLK-S", "50", "2026-03-04")]

#: (receipt, po_number, po_line, sku, quantity counted in, received on)
GOODS_RECEIPTS = [
    ("GR-5001", "PO-1001", 1, "TSHIRT-BLK-M", "200", "2026-02-24"),
    ("GR-5001", "PO-1001", 2, "TSHIRT-WHT-L", "100", "2026-02-24"),
    ("GR-5002", "PO-1002", 1, "MUG-LOGO", "118", "2026-02-25"),  # 2 arrived broken
    ("GR-5002", "PO-1002", 2, "MUG-PLAIN", "60", "2026-02-25"),
    ("GR-5003", "PO-1003", 1, "CAP-RED", "40", "2026-02-26"),  # 10 still to come
    ("GR-5003", "PO-1003", 2, "CAP-BLUE", "50", "2026-02-26"),
    ("GR-5004", "PO-1004", 1, "TOTE-NAT", "300", "2026-03-02"),
    ("GR-5005", "PO-1005", 1, "VASE-BLU", "24", "2026-03-03"),
]


def seed(path: Path, fresh: bool = False, late_order: bool = False) -> Path:
    """Create (or complete) the purchasing database at ``path``; add PO-1099 if asked."""
    orders = {**PURCHASE_ORDERS, **(LATE_ORDER if late_order else {})}
    receipts = GOODS_RECEIPTS + (LATE_RECEIPTS if late_order else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path)
    try:
        with db:
            db.executescript(SCHEMA)
            for number, (supplier, currency, ordered, status, lines) in orders.items():
                db.execute(
                    "INSERT OR IGNORE INTO purchase_orders VALUES (?, ?, ?, ?, ?)",
                    (number, supplier, currency, ordered, status),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO po_lines VALUES (?, ?, ?, ?, ?, 'C62', ?)",
                    [(number, n, *line) for n, line in enumerate(lines, start=1)],
                )
            db.executemany(
                "INSERT OR IGNORE INTO goods_receipts VALUES (?, ?, ?, ?, ?, ?)", receipts
            )
    finally:
        db.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent / "out" / "purchasing.db"
    parser.add_argument("path", nargs="?", type=Path, default=default)
    parser.add_argument("--fresh", action="store_true", help="delete the database first")
    parser.add_argument(
        "--late-order",
        action="store_true",
        help="also enter PO-1099, which an invoice in the inbox bills (and its receipt)",
    )
    args = parser.parse_args(argv)
    print(f"purchasing database: {seed(args.path, args.fresh, args.late_order)}")
    if args.late_order:
        print("  PO-1099 entered (50 T-shirts black S at 7.40, received GR-5010)")
    else:
        print(
            f"  {len(PURCHASE_ORDERS)} purchase orders, "
            f"{sum(len(po[4]) for po in PURCHASE_ORDERS.values())} lines, "
            f"{len(GOODS_RECEIPTS)} goods receipt lines"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
