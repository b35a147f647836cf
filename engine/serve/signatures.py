"""Webhook signatures, verified over the raw body before anything parses it.

A platform signs each delivery with a secret shared with the receiver; the receiver
recomputes the signature over the bytes it received, exactly as they arrived, and compares
the two in constant time (:func:`hmac.compare_digest`), so neither a changed body nor the
time a comparison takes tells an attacker anything. Three schemes:

- ``shopify``: ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the body; the event
  id is ``X-Shopify-Event-Id`` (else ``X-Shopify-Webhook-Id``), the topic
  ``X-Shopify-Topic``.
- ``woocommerce``: ``X-WC-Webhook-Signature`` is the base64 HMAC-SHA256 of the body; the
  event id ``X-WC-Webhook-Delivery-ID``, the topic ``X-WC-Webhook-Topic``.
- ``standard`` (Standard Webhooks): ``webhook-signature`` holds ``v1,<base64 HMAC-SHA256>``
  of ``<webhook-id>.<webhook-timestamp>.<body>`` keyed with the ``whsec_`` secret decoded;
  ``webhook-timestamp`` must be within the replay window; the event id is ``webhook-id``,
  the topic the body's ``type``.

(Standard Webhooks: https://www.standardwebhooks.com/, the specification several platforms
share.) Shopify's and WooCommerce's signatures cover the body only, not a time, so a
delivery captured and sent again later verifies: for them the replay defence is the event
id, which the inbox keeps (a replayed event is acknowledged and not processed again). An
event without an id is known by the SHA-256 of its body.

A :class:`SignatureError` says what is wrong in words safe to log: never the secret, nor
the signature received or expected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

SCHEMES = ("shopify", "woocommerce", "standard")
DEFAULT_TOLERANCE = 300.0  # seconds either way, the Standard Webhooks recommendation

# Headers kept with an event (lower case): the platform's ids, topic, shop and times; never
# a signature.
KEPT_HEADERS = {
    "shopify": (
        "x-shopify-topic",
        "x-shopify-shop-domain",
        "x-shopify-api-version",
        "x-shopify-webhook-id",
        "x-shopify-event-id",
        "x-shopify-triggered-at",
    ),
    "woocommerce": (
        "x-wc-webhook-source",
        "x-wc-webhook-topic",
        "x-wc-webhook-resource",
        "x-wc-webhook-event",
        "x-wc-webhook-id",
        "x-wc-webhook-delivery-id",
    ),
    "standard": ("webhook-id", "webhook-timestamp"),
}


class SignatureError(Exception):
    """A delivery that is unsigned or wrongly signed; ``str()`` says why, safely."""


@dataclass(frozen=True, slots=True)
class Verified:
    """A delivery whose signature holds: its event id, topic and the headers worth keeping."""

    event_id: str
    topic: str | None
    headers: dict[str, str] = field(default_factory=dict)


def lower_headers(headers: Mapping[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    """Header names in lower case (HTTP names are case-insensitive); the first value wins."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        out.setdefault(name.lower(), value)
    return out


def _hmac_b64(key: bytes, message: bytes) -> bytes:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest())


def _same(expected: bytes, given: str) -> bool:
    try:
        received = given.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, received)


def _body_id(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _kept(scheme: str, headers: dict[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in KEPT_HEADERS[scheme] if name in headers}


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` and base64 (the prefix is
    optional); a secret that is not base64 is used as its UTF-8 bytes."""
    text = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return secret.encode("utf-8")


def verify(
    scheme: str,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Verified:
    """Verify one delivery's signature over ``body`` (the raw bytes) with ``secret``;
    ``headers`` with lower-case names. Returns what the inbox keeps of it; raises
    :class:`SignatureError` when the signature is missing or wrong, or (``standard``) the
    delivery is older or newer than ``tolerance`` seconds."""
    if not secret:
        raise SignatureError("no secret to verify with")  # never accept unverified
    if scheme == "shopify":
        return _hmac_body(
            scheme,
            secret,
            headers,
            body,
            "x-shopify-hmac-sha256",
            ("x-shopify-event-id", "x-shopify-webhook-id"),
            "x-shopify-topic",
        )
    if scheme == "woocommerce":
        return _hmac_body(
            scheme,
            secret,
            headers,
            body,
            "x-wc-webhook-signature",
            ("x-wc-webhook-delivery-id",),
            "x-wc-webhook-topic",
        )
    if scheme == "standard":
        return _standard(secret, headers, body, time.time() if now is None else now, tolerance)
    raise ValueError(f"unknown signature scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def _hmac_body(
    scheme: str,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    signature_header: str,
    id_headers: tuple[str, ...],
    topic_header: str,
) -> Verified:
    given = headers.get(signature_header)
    if not given:
        raise SignatureError(f"no {signature_header} header: the delivery is not signed")
    if not _same(_hmac_b64(secret.encode("utf-8"), body), given):
        raise SignatureError(f"{signature_header} does not match the body")
    event_id = next((headers[h] for h in id_headers if headers.get(h)), None) or _body_id(body)
    return Verified(event_id, headers.get(topic_header), _kept(scheme, dict(headers)))


def _standard(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance: float
) -> Verified:
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not headers.get(name):
            raise SignatureError(f"no {name} header: the delivery is not signed")
    event_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    try:
        sent_at = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a number of seconds") from None
    content = f"{event_id}.{sent_at}.".encode() + body
    expected = _hmac_b64(standard_key(secret), content)
    # several signatures, space-separated ("v1,<base64>"), while a secret is being rotated
    candidates = [
        sig.partition(",")[2]
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    ]
    if not any(_same(expected, c) for c in candidates):
        raise SignatureError("webhook-signature does not match the body")
    # checked after the signature: the timestamp is only worth trusting once it is signed
    if abs(now - sent_at) > tolerance:
        raise SignatureError(
            f"webhook-timestamp is {abs(now - sent_at):.0f} s from now, outside the replay "
            f"window of {tolerance:.0f} s"
        )
    topic = None
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("type"), str):
        topic = parsed["type"]
    return Verified(event_id, topic, _kept("standard", dict(headers)))


def sign(
    scheme: str,
    secret: str,
    body: bytes,
    *,
    event_id: str,
    topic: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers a platform would send with ``body``: for tests, the example's shop and
    the benchmarks (a sender's side of :func:`verify`)."""
    if scheme == "shopify":
        headers = {
            "X-Shopify-Hmac-Sha256": _hmac_b64(secret.encode(), body).decode(),
            "X-Shopify-Event-Id": event_id,
            "X-Shopify-Webhook-Id": event_id,
        }
        if topic:
            headers["X-Shopify-Topic"] = topic
        return headers
    if scheme == "woocommerce":
        headers = {
            "X-WC-Webhook-Signature": _hmac_b64(secret.encode(), body).decode(),
            "X-WC-Webhook-Delivery-ID": event_id,
        }
        if topic:
            headers["X-WC-Webhook-Topic"] = topic
        return headers
    if scheme == "standard":
        stamp = int(time.time()) if timestamp is None else timestamp
        content = f"{event_id}.{stamp}.".encode() + body
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": "v1," + _hmac_b64(standard_key(secret), content).decode(),
        }
    raise ValueError(f"unknown signature scheme {scheme!r}; known: {', '.join(SCHEMES)}")
