"""Write the item map (SKU -> the shop's ids) that inventory_sync reads, from the shop itself.

    python examples/inventory_sync/item_map_from_shop.py                   # Shopify
    python examples/inventory_sync/item_map_from_shop.py --woocommerce     # WooCommerce
    python examples/inventory_sync/item_map_from_shop.py --shop-url https://<shop>.myshopify.com \\
        --out /srv/sync/shop_items.csv

Shopify: reads every product with its variants (GET /admin/api/<version>/products.json,
250 a page, following the Link header) with the token in $WEBSHOP_TOKEN, and writes
``sku,inventory_item_id,product_id,variant_id,title``. WooCommerce: reads every product
and the variations of the variable ones (GET /wp-json/wc/v3/products, 100 a page) with
$WOO_CONSUMER_KEY and $WOO_CONSUMER_SECRET, and writes
``sku,product_id,variation_id,title`` (variation_id empty for a simple product).

The file is replaced whole (written next to it, then renamed), so a sync running at the
same time reads the old map or the new one, never half of one. Variants without an SKU
are left out, and an SKU on several variants is reported: the sync dead-letters such an
SKU until one row is left. Run it again whenever products are added in the shop.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def pages(client: httpx.Client, url: str, params: dict) -> Iterator[httpx.Response]:
    """Every page of a listing, following ``Link: <...>; rel="next"``."""
    response = client.get(url, params=params)
    while True:
        response.raise_for_status()
        yield response
        following = response.links.get("next", {}).get("url")
        if not following:
            return
        response = client.get(following)


def shopify_rows(client: httpx.Client, base: str, version: str) -> Iterator[dict]:
    url = f"{base}/admin/api/{version}/products.json"
    for page in pages(client, url, {"limit": 250}):
        for product in page.json()["products"]:
            for variant in product["variants"]:
                title = product["title"]
                if variant.get("title") not in (None, "", "Default Title"):
                    title = f"{title} / {variant['title']}"
                yield {
                    "sku": variant.get("sku") or "",
                    "inventory_item_id": variant["inventory_item_id"],
                    "product_id": product["id"],
                    "variant_id": variant["id"],
                    "title": title,
                }


def woocommerce_rows(client: httpx.Client, base: str) -> Iterator[dict]:
    url = f"{base}/wp-json/wc/v3/products"
    for page in pages(client, url, {"per_page": 100}):
        for product in page.json():
            if product.get("type") != "variable":
                yield {
                    "sku": product.get("sku") or "",
                    "product_id": product["id"],
                    "variation_id": "",
                    "title": product.get("name", ""),
                }
                continue
            for listing in pages(client, f"{url}/{product['id']}/variations", {"per_page": 100}):
                for variation in listing.json():
                    yield {
                        "sku": variation.get("sku") or "",
                        "product_id": product["id"],
                        "variation_id": variation["id"],
                        "title": variation.get("name") or product.get("name", ""),
                    }


def write_atomically(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shop-url", default="http://127.0.0.1:8100", help="the shop's address")
    parser.add_argument(
        "--woocommerce", action="store_true", help="read a WooCommerce shop (default: Shopify)"
    )
    parser.add_argument("--api-version", default="2025-10", help="Shopify Admin API version")
    parser.add_argument(
        "--out",
        type=Path,
        help="the map to write (default: out/shop_items.csv, or out/woo_items.csv with "
        "--woocommerce, next to this script, where the flows look by default)",
    )
    args = parser.parse_args(argv)
    base = args.shop_url.rstrip("/")
    if args.woocommerce:
        key, secret = os.environ.get("WOO_CONSUMER_KEY"), os.environ.get("WOO_CONSUMER_SECRET")
        if not key or not secret:
            parser.error("set WOO_CONSUMER_KEY and WOO_CONSUMER_SECRET")
        client = httpx.Client(auth=(key, secret), timeout=30)
        out = args.out or HERE / "out" / "woo_items.csv"
        columns = ["sku", "product_id", "variation_id", "title"]
    else:
        token = os.environ.get("WEBSHOP_TOKEN")
        if not token:
            parser.error("set WEBSHOP_TOKEN to the shop's Admin API access token")
        client = httpx.Client(headers={"X-Shopify-Access-Token": token}, timeout=30)
        out = args.out or HERE / "out" / "shop_items.csv"
        columns = ["sku", "inventory_item_id", "product_id", "variant_id", "title"]
    try:
        with client:
            if args.woocommerce:
                found = list(woocommerce_rows(client, base))
            else:
                found = list(shopify_rows(client, base, args.api_version))
    except httpx.HTTPStatusError as exc:
        answer = exc.response.text[:300]
        print(f"the shop answered {exc.response.status_code}: {answer}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"cannot read the shop at {base}: {exc}", file=sys.stderr)
        return 1
    rows = [row for row in found if row["sku"]]
    write_atomically(out, rows, columns)
    shown = out.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    print(f"wrote {len(rows)} items to {shown}")
    if len(rows) < len(found):
        print(f"left out {len(found) - len(rows)} without an SKU", file=sys.stderr)
    for sku, count in sorted(Counter(row["sku"] for row in rows).items()):
        if count > 1:
            print(f"SKU {sku} is on {count} items in the shop: keep one row", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
