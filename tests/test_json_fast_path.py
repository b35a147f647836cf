"""connectors/_json.py decodes with msgspec first and the standard library after: the two
must give the same values, and refuse the same inputs (docs/connectors.md, "Numbers")."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import _json
from engine.codec import canonical

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.decimals(allow_nan=False, allow_infinity=False, places=4)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def slow(text):
    """The standard library's answer, with the module's checks (the fast path bypassed)."""
    return _json._DECODER.decode(text)


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0, nor Decimal(1))."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and (not isinstance(a, Decimal) or a.as_tuple() == b.as_tuple())


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_fast_path_reads_what_the_standard_library_reads(value):
    text = _json.dumps(value)  # Decimals as numbers, digit for digit
    assert same(_json.loads(text), slow(text))
    assert same(_json.loads(text.encode()), slow(text))


@pytest.mark.parametrize(
    "text, says",
    [
        ("NaN", "NaN"),
        ('{"a": Infinity}', "Infinity"),
        ('"\\ud800"', "surrogate"),
        ("1" * 4301, "digits"),
        ("[" * 101 + "]" * 101, "nested deeper"),
        ('{"a": 1,}', "Expecting"),
        ("\ufeff{}", "Expecting"),
    ],
)
def test_what_the_fast_path_refuses_is_told_by_the_slow_one(text, says):
    with pytest.raises(json.JSONDecodeError, match=says):
        _json.loads(text)


def test_utf8_with_a_byte_order_mark_and_utf16_are_still_read():
    assert _json.loads('{"a": 1.5}'.encode("utf-8-sig")) == {"a": Decimal("1.5")}
    assert _json.loads('{"a": [1, 2]}'.encode("utf-16")) == {"a": [1, 2]}


def test_a_digest_encoding_tells_different_values_apart():
    one = {"b": 1, "a": [Decimal("1.50")]}
    assert canonical(one) == canonical({"b": 1, "a": [Decimal("1.50")]})
    assert canonical({"a": Decimal("1.50")}) != canonical({"a": "1.50"})
    assert canonical({"a": Decimal("1.50")}) != canonical({"a": Decimal("1.5")})
    assert canonical({"a": 1, "b": None}) != canonical({"a": 1})
    assert canonical([{"é": 2**70}]) != canonical([{"e": 2**70}])
    assert canonical({1: "x"}) != canonical({2: "x"})


@pytest.mark.parametrize(
    "value, deep",
    [
        ({"lines": [{"tax": [{"a": 1}]} for _ in range(60)]}, False),  # many brackets, shallow
        ({"note": "[[[[" * 40, "x": [[1]]}, False),  # brackets in a string do not nest
        ({"q": 'a\\"[{' * 40, "r": "\\\\"}, False),  # nor behind escaped quotes
        (json.loads("[" * 100 + "]" * 100), False),  # exactly the limit
        (json.loads("[" * 101 + "]" * 101), True),
        ([{"s": "]]]]" * 30}] + json.loads("[" * 101 + "]" * 101), True),
    ],
)
def test_depth_is_told_by_nesting_not_by_how_many_brackets(value, deep):
    text = json.dumps(value)
    assert _json._deeper_than(text, _json.MAX_DEPTH) is deep
    if deep:
        with pytest.raises(json.JSONDecodeError, match="nested deeper"):
            _json.loads(text)
    else:
        assert _json.loads(text) == value
