"""JSON text as flowyard writes it: in the state store, the run log and ``--output json``.

Money must survive the trip: a :class:`~decimal.Decimal` is written as its exact string
and read back (:func:`loads`) as a ``Decimal``, never as a float. Sets and tuples become
lists, bytes become text; anything else JSON cannot hold is written as ``str(value)``.

:func:`dumps` and :func:`dumps_sorted` take msgspec's C encoder for a value it writes exactly
as the standard library does (:func:`connectors._json.plain` checks), and the standard
library's otherwise: the same text either way, byte for byte.

:func:`canonical` is for digests only: the same value, with its keys in the same order,
always gives the same bytes, made by msgspec's C encoder (about five times faster than
:func:`dumps_sorted`). Idempotency fingerprints keep :func:`dumps_sorted`'s text
(:func:`sorted_bytes`): it must stay what earlier versions stored and sent
(engine/idempotency.py).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import msgspec

from connectors._json import plain


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# built once: json.dumps with options builds an encoder on every call
_dumps = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":")).encode
_dumps_sorted = json.JSONEncoder(default=_default, sort_keys=True, separators=(",", ":")).encode


# msgspec's C encoders write what the two above write, for values that
# connectors._json.plain accepts (the reference flow's fingerprints: about 30 % less CPU,
# the check included); anything else goes the standard library's way. Fingerprints hash
# this text: it must not change by a byte.
_FAST = msgspec.json.Encoder(decimal_format="string")
_FAST_SORTED = msgspec.json.Encoder(decimal_format="string", order="sorted")
# what ensure_ascii escapes beyond msgspec: DEL and everything past ASCII
_NOT_ASCII = re.compile("[\x7f-\U0010ffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as the standard library writes it
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


def dumps(value: Any) -> str:
    """JSON for the store and the run log: Decimals as exact strings, never floats."""
    if plain(value):
        try:
            return _FAST.encode(value).decode("utf-8")
        except (TypeError, ValueError, OverflowError, UnicodeError):
            pass  # a lone surrogate: the standard library writes it
    return _dumps(value)


def dumps_sorted(value: Any) -> str:
    """The same value always gives the same text (keys sorted): for hashes and comparisons."""
    if plain(value):
        try:
            text = _FAST_SORTED.encode(value).decode("utf-8")
        except (TypeError, ValueError, OverflowError, UnicodeError):
            return _dumps_sorted(value)  # a lone surrogate: the standard library escapes it
        if not text.isascii() or "\x7f" in text:
            text = _NOT_ASCII.sub(_escape, text)
        return text
    return _dumps_sorted(value)


def sorted_bytes(value: Any) -> bytes:
    """:func:`dumps_sorted`'s text as UTF-8 bytes (ASCII: it escapes the rest), for
    hashing; from msgspec's bytes as they come when they are ASCII already."""
    if plain(value):
        try:
            data = _FAST_SORTED.encode(value)
        except (TypeError, ValueError, OverflowError, UnicodeError):
            return _dumps_sorted(value).encode()
        if data.isascii() and b"\x7f" not in data:
            return data
        return _NOT_ASCII.sub(_escape, data.decode("utf-8")).encode()
    return _dumps_sorted(value).encode()


def loads(text: str | None) -> Any:
    """Text written by :func:`dumps` back to values, numbers with a fraction as Decimals;
    None stays None."""
    return None if text is None else json.loads(text, parse_float=Decimal)


_CANONICAL = msgspec.json.Encoder(decimal_format="number", enc_hook=str)


def canonical(value: Any) -> bytes:
    """Bytes that stand for ``value``: the same value with its keys in the same order gives
    the same bytes. For digests of records read twice from the same source, whose keys come
    in the same order each time (a record whose keys moved only gets a new digest: it goes
    through its steps once more); not the text of :func:`dumps`, not meant to be read back."""
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError, OverflowError):  # what msgspec cannot write
        return dumps_sorted(value).encode("utf-8", "surrogatepass")
