"""JSON is written through msgspec where it writes the very text the standard library
writes, and through the standard library everywhere else: fingerprints hash this text
(engine/idempotency.py), so a send remembered by an earlier version must still match, and
the sqlite connector's JSON columns must keep their digits (docs/connectors.md)."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import _json
from engine import codec
from engine.idempotency import fingerprint


class Colour(enum.Enum):
    RED = "red"


class Size(enum.StrEnum):
    LARGE = "large"


# every kind of character: ASCII controls, DEL, accents, the astral planes, a lone surrogate
text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    max_size=12,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.just(-(10**4299))  # the longest int the interpreter writes
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=False, allow_infinity=False, places=2)
    | text
    | st.sampled_from(
        [
            dt.date(2024, 3, 1),
            dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC),
            b"bytes",
            Colour.RED,
            Size.LARGE,
            frozenset({"a"}),
            1e16,
            1e-5,
            -0.0,
        ]
    )
)
keys = text | st.integers(min_value=-5, max_value=5) | st.sampled_from([True, None, 1.5])
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(text, inner, max_size=5)
        | st.dictionaries(keys, inner, max_size=3)
    ),
    max_leaves=25,
)


def outcome(write, value):
    """What ``write`` makes of ``value``: its text, or the kind of error it raises."""
    try:
        return write(value)
    except Exception as exc:  # the same refusal either way
        return type(exc)


def connector_text_before(value):
    """connectors._json.dumps as it was before the fast path."""
    try:
        return _json._encode_plain(value)
    except TypeError:
        parts: list[str] = []
        _json._write(value, parts)
        return "".join(parts)


@settings(max_examples=500, deadline=None)
@given(values)
def test_the_store_and_fingerprints_write_the_standard_librarys_text(value):
    assert outcome(codec.dumps, value) == outcome(codec._dumps, value)
    assert outcome(codec.dumps_sorted, value) == outcome(codec._dumps_sorted, value)
    text = outcome(codec._dumps_sorted, value)
    if isinstance(text, str):
        assert codec.sorted_bytes(value) == text.encode()


@settings(max_examples=500, deadline=None)
@given(values)
def test_the_connectors_write_the_text_they_wrote_before(value):
    assert outcome(_json.dumps, value) == outcome(connector_text_before, value)


def test_a_fingerprint_is_the_one_an_earlier_version_stored():
    # the text an earlier version hashed: the standard library's, keys sorted, ASCII only
    options = {
        "table": "sales_orders",
        "row": {
            "total": Decimal("28.95"),
            "customer": "Zoë Ångström \U0001f600\x7f",
            "lines": [{"sku": "MUG", "qty": 2, "weight": 0.35}, {"sku": "TEE", "qty": 1}],
        },
        "key": ("order_id",),
    }
    assert _json.plain(options)  # the fast path writes it
    before = json.dumps(options, default=codec._default, sort_keys=True, separators=(",", ":"))

    assert fingerprint(options) == hashlib.sha256(before.encode()).hexdigest()[:32]


def test_values_msgspec_writes_its_own_way_go_the_standard_way():
    for value in (
        1e16,
        1e-5,
        float("nan"),
        Decimal("NaN"),
        dt.date(2024, 3, 1),
        b"x",
        {"a": Colour.RED},
        [Size.LARGE],
        {1: "a"},
        {"a": {"b"}},
    ):
        assert not _json.plain(value), value
    past_the_limit = {"n": 10**4400}  # both refuse an int past the interpreter's digit limit
    assert outcome(codec.dumps, past_the_limit) == outcome(codec._dumps, past_the_limit)
    assert outcome(_json.dumps, past_the_limit) == outcome(connector_text_before, past_the_limit)
    # web-shop ids past 2**63 (Shopify's line item ids) are plain: msgspec writes their digits
    assert _json.plain({"a": [1, "x", None, True, Decimal("1.50"), 12.5, (2, 3), 14 * 10**18]})
