"""Create a product in the demo Tryton, as a person would in the Tryton client.

    python examples/order_to_erp/create_product.py X-1 "Sticker pack" 5.00
    python examples/order_to_erp/create_product.py --url http://127.0.0.1:8000 X-1 Stickers 5

The product's code is the SKU the web shop sells it under; it is salable, counted in
units, in the demo ERP's product category (with its accounts and customer tax). Then an
order dead-lettered for that unknown SKU goes through with `flowyard dlq replay`. The
admin password comes from $TRYTON_PASSWORD.
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from connectors.errors import ConnectorError  # noqa: E402
from connectors.tryton import TrytonConnector  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sku", help="the product's code: the web shop's SKU")
    parser.add_argument("name")
    parser.add_argument("price", help="list price, e.g. 5.00")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--database", default="flowyard")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--category", default="Retail goods", help="product category name")
    args = parser.parse_args(argv)
    try:
        price = Decimal(args.price)
    except InvalidOperation:
        parser.error(f"{args.price!r} is not a price")
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
            if erp.execute("product.product", "search", [["code", "=", args.sku]]):
                print(f"Tryton has a product with the code {args.sku} already", file=sys.stderr)
                return 1
            [unit] = erp.execute("product.uom", "search", [["name", "=", "Unit"]])
            categories = erp.execute("product.category", "search", [["name", "=", args.category]])
            if not categories:
                print(f"Tryton has no product category {args.category!r}", file=sys.stderr)
                return 1
            values = {
                "name": args.name,
                "code": args.sku,
                "type": "goods",
                "default_uom": unit,
                "salable": True,
                "sale_uom": unit,
                "list_price": price,
                "account_category": categories[0],
                "products": [["create", [{}]]],
            }
            [template] = erp.execute("product.template", "create", [values])
            [product] = erp.execute("product.product", "search", [["template", "=", template]])
    except ConnectorError as exc:
        print(f"Tryton refused the product: {exc}", file=sys.stderr)
        return 1
    print(f"created product {args.sku} ({args.name}, {price}) in Tryton, id {product}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
