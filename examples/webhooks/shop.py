"""A local "shop" that sends its orders to ``flowyard serve`` as Shopify does: one signed
``orders/create`` webhook per order (base64 HMAC-SHA256 of the raw body in
``X-Shopify-Hmac-Sha256``, the event id in ``X-Shopify-Event-Id``, the topic in
``X-Shopify-Topic``), then, as a platform does, a few things a receiver must handle:

- the first order's event delivered again (a platform delivers at least once): the answer
  is ``duplicate`` and the ERP gets it once;
- an order signed with another secret: ``401``, nothing kept;
- with ``--broken``, an order without line items: acknowledged, then dead-lettered by the
  flow (the canonical order needs a line), which raises an alert.

::

    SHOP_WEBHOOK_SECRET=... python shop.py http://127.0.0.1:8080/webhooks/shop_orders [--broken]

Standard library only; the secret comes from the environment, as the server's does.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def signed(body: bytes, secret: str, event_id: str, topic: str) -> dict[str, str]:
    """The headers Shopify sends with a webhook."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Webhook-Id": event_id,
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "demo-shop.example.com",
    }


def deliver(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"{}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the flow's webhook URL")
    parser.add_argument("--orders", type=Path, default=HERE / "orders.ndjson")
    parser.add_argument("--broken", action="store_true", help="also send an order with no lines")
    args = parser.parse_args()
    secret = os.environ.get("SHOP_WEBHOOK_SECRET")
    if not secret:
        print("shop: set SHOP_WEBHOOK_SECRET (the same value flowyard serve has)", file=sys.stderr)
        return 2
    orders = [line.encode() for line in args.orders.read_text().splitlines() if line.strip()]
    deliveries = [(body, f"shop-event-{n}") for n, body in enumerate(orders, 1)]
    if args.broken:
        broken = json.loads(orders[0])
        broken.update(id=broken["id"] + 999, name="#9999", order_number=9999, line_items=[])
        deliveries.append((json.dumps(broken).encode(), "shop-event-broken"))
    unacknowledged = 0
    for body, event in deliveries:
        status, answer = deliver(args.url, body, signed(body, secret, event, "orders/create"))
        order = json.loads(body)["name"]
        print(f"{event} {order}: {status} {answer.get('status') or answer.get('error')}")
        unacknowledged += status != 200
    body, event = deliveries[0]
    status, answer = deliver(args.url, body, signed(body, secret, event, "orders/create"))
    print(f"{event} again: {status} {answer.get('status')}")
    status, answer = deliver(
        args.url, body, signed(body, "not-the-secret", "forged-1", "orders/create")
    )
    print(f"forged-1 (another secret): {status} {answer.get('error')}")
    return 1 if unacknowledged else 0


if __name__ == "__main__":
    sys.exit(main())
