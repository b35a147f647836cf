"""Record a stock count in the demo Tryton: a confirmed stock.inventory on one location.

    python examples/inventory_sync/count_stock.py MUG-LOGO=33 CAP-RED=3
    python examples/inventory_sync/count_stock.py --url http://127.0.0.1:8000 CAP-RED=0

Each SKU=QUANTITY sets the quantity Tryton holds for that product (by its code) on the
location, as a warehouse clerk's count would; the next inventory_sync run sends exactly
the levels that changed. The admin password comes from $TRYTON_PASSWORD.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from connectors.errors import ConnectorError  # noqa: E402
from connectors.tryton import TrytonConnector  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", nargs="+", metavar="SKU=QUANTITY")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--database", default="flowyard")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--location", default="STO", help="stock location code")
    args = parser.parse_args(argv)
    counts = {}
    for pair in args.counts:
        sku, _, quantity = pair.partition("=")
        try:
            counts[sku] = float(quantity)
        except ValueError:
            parser.error(f"{pair!r} is not SKU=QUANTITY")
    if "TRYTON_PASSWORD" not in os.environ:
        parser.error("set TRYTON_PASSWORD (see examples/tryton/README.md)")
    options = {
        "url": args.url,
        "database": args.database,
        "username": args.user,
        "password": os.environ["TRYTON_PASSWORD"],
    }
    try:
        with TrytonConnector(options) as erp:
            [location] = erp.execute(
                "stock.location", "search", [["code", "=", args.location]], context={}
            ) or [None]
            if location is None:
                print(f"Tryton has no stock location {args.location!r}", file=sys.stderr)
                return 1
            products = erp.execute(
                "product.product",
                "search_read",
                [["code", "in", list(counts)]],
                0,
                None,
                None,
                ["code"],
            )
            ids = {p["code"]: p["id"] for p in products}
            unknown = sorted(set(counts) - set(ids))
            if unknown:
                print(f"Tryton has no product with the code {', '.join(unknown)}", file=sys.stderr)
                return 1
            lines = [{"product": ids[sku], "quantity": q} for sku, q in counts.items()]
            [inventory] = erp.execute(
                "stock.inventory", "create", [{"location": location, "lines": [["create", lines]]}]
            )
            erp.execute("stock.inventory", "confirm", [inventory])
    except ConnectorError as exc:
        print(f"Tryton refused the count: {exc}", file=sys.stderr)
        return 1
    done = ", ".join(f"{sku} {q:g}" for sku, q in counts.items())
    print(f"counted on {args.location}: {done} (stock.inventory {inventory}, confirmed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
