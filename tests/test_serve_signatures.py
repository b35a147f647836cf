"""Webhook signatures, each scheme: valid, wrong secret, tampered body, replayed outside the
window, missing header. Verified over the raw bytes; a refused delivery is answered 401
and nothing of it is kept (Engine.accept on a real state file)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from engine import Engine
from engine.serve.signatures import SignatureError, lower_headers, sign, verify
from tests.support.files import write_flow

SECRET = "shpss_test_5ecret_value"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"a standard webhooks signing key").decode()
BODY = json.dumps(
    {"id": 5234567890123456789, "name": "#1001", "total_price": "104.00", "currency": "EUR"}
).encode()
SCHEMES = {"shopify": SECRET, "woocommerce": SECRET, "standard": STANDARD_SECRET}
SIGNATURE_HEADER = {
    "shopify": "x-shopify-hmac-sha256",
    "woocommerce": "x-wc-webhook-signature",
    "standard": "webhook-signature",
}


def signed(scheme: str, body: bytes = BODY, secret: str | None = None, **kw) -> dict[str, str]:
    return lower_headers(
        sign(scheme, secret or SCHEMES[scheme], body, event_id="ev-1", topic="orders/create", **kw)
    )


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_a_valid_signature_is_accepted_with_its_event_id_and_topic(scheme):
    verified = verify(scheme, SCHEMES[scheme], signed(scheme), BODY)
    assert verified.event_id == "ev-1"
    if scheme != "standard":
        assert verified.topic == "orders/create"
    assert all("signature" not in h and "hmac" not in h for h in verified.headers)


def test_shopify_signature_is_the_base64_hmac_sha256_of_the_body():
    # computed here by hand, as Shopify documents it, not with the code under test
    digest = base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    headers = {"x-shopify-hmac-sha256": digest, "x-shopify-webhook-id": "w-1"}
    assert verify("shopify", SECRET, headers, BODY).event_id == "w-1"


def test_standard_webhooks_signs_id_timestamp_and_body_with_the_decoded_key():
    now = int(time.time())
    key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
    content = f"msg_1.{now}.".encode() + BODY
    signature = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        # a rotated secret: several signatures, one of them good
        "webhook-signature": f"v1,{base64.b64encode(b'old').decode()} v1,{signature}",
    }
    topic_body = json.dumps({"type": "order.created", "data": {"id": 1}}).encode()
    content = f"msg_1.{now}.".encode() + topic_body
    good = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert verify("standard", STANDARD_SECRET, headers, BODY).event_id == "msg_1"
    headers["webhook-signature"] = f"v1,{good}"
    assert verify("standard", STANDARD_SECRET, headers, topic_body).topic == "order.created"


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_a_wrong_secret_is_refused(scheme):
    other = "whsec_" + base64.b64encode(b"another key").decode() if scheme == "standard" else "x"
    with pytest.raises(SignatureError, match="does not match"):
        verify(scheme, SCHEMES[scheme], signed(scheme, secret=other + "0"), BODY)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_a_tampered_body_is_refused(scheme):
    tampered = BODY.replace(b"104.00", b"1.00")
    with pytest.raises(SignatureError, match="does not match"):
        verify(scheme, SCHEMES[scheme], signed(scheme), tampered)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_a_missing_signature_header_is_refused(scheme):
    headers = signed(scheme)
    del headers[SIGNATURE_HEADER[scheme]]
    with pytest.raises(SignatureError, match="not signed"):
        verify(scheme, SCHEMES[scheme], headers, BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp"])
def test_standard_webhooks_needs_its_id_and_timestamp(missing):
    headers = signed("standard")
    del headers[missing]
    with pytest.raises(SignatureError, match=f"no {missing}"):
        verify("standard", STANDARD_SECRET, headers, BODY)


def test_standard_webhooks_refuses_a_delivery_replayed_outside_the_window():
    old = int(time.time()) - 600
    headers = signed("standard", timestamp=old)
    assert verify("standard", STANDARD_SECRET, headers, BODY, now=old + 10).event_id == "ev-1"
    with pytest.raises(SignatureError, match="outside the replay window of 300 s"):
        verify("standard", STANDARD_SECRET, headers, BODY)
    with pytest.raises(SignatureError, match="outside the replay window"):  # from the future
        verify("standard", STANDARD_SECRET, headers, BODY, now=old - 400)


def test_no_secret_never_verifies():
    with pytest.raises(SignatureError):
        verify("shopify", "", signed("shopify", secret="x"), BODY)


# -- through Engine.accept, on a real state ------------------------------------------------------
FLOW = """
flow: shop_orders_{scheme}
source:
  webhook:
    scheme: {scheme}
    secret: ${{env:HOOK_SECRET}}
  key: "{{{{ record.id }}}}"
connections:
  out: {{connector: file}}
steps:
  - send: {{connection: out, path: out.ndjson, record: "{{{{ record }}}}"}}
"""


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_refused_deliveries_are_answered_401_and_nothing_is_kept(tmp_path, monkeypatch, scheme):
    monkeypatch.setenv("HOOK_SECRET", SCHEMES[scheme])
    eng = Engine(state=tmp_path / "state.db")
    flow = eng.load(write_flow(tmp_path, FLOW.format(scheme=scheme)))
    good = signed(scheme)
    unsigned = {k: v for k, v in good.items() if k != SIGNATURE_HEADER[scheme]}
    refused = [
        eng.accept(flow, signed(scheme, secret=SCHEMES[scheme] + "x"), BODY),
        eng.accept(flow, good, BODY.replace(b"104", b"105")),
        eng.accept(flow, unsigned, BODY),
    ]
    if scheme == "standard":
        refused.append(eng.accept(flow, signed(scheme, timestamp=int(time.time()) - 3600), BODY))
    assert [a.status for a in refused] == [401] * len(refused)
    assert all(a.outcome == "unauthorized" for a in refused)
    assert all(SCHEMES[scheme] not in json.dumps(a.body) for a in refused)
    with eng.store() as store:
        assert store.inbox_events() == []
    accepted = eng.accept(flow, good, BODY)
    replayed = eng.accept(flow, good, BODY)  # the same delivery again: a duplicate
    assert (accepted.status, accepted.body["status"]) == (200, "accepted")
    assert (replayed.status, replayed.body["status"]) == (200, "duplicate")
    with eng.store() as store:
        [kept] = store.inbox_events()
    assert kept.body == BODY and kept.deliveries == 2 and kept.scheme == scheme
    eng.close()
