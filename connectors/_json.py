"""JSON for connectors: money stays exact, and what cannot be held is refused on reading.

Numbers with a fraction are read as :class:`decimal.Decimal`, never ``float``, and a
``Decimal`` is written back as a JSON number with exactly its digits. Python ints are
unbounded, so ids above 2**53 round-trip as they are.

:func:`loads` refuses, with :class:`json.JSONDecodeError` like any other unreadable text
(so a source dead-letters the line with its raw text), what a record must not hold: values
nested deeper than :data:`MAX_DEPTH`, integers longer than :data:`MAX_DIGITS` digits,
``NaN`` and ``Infinity`` (not JSON; they would be stored as NULL or ``inf``), and a lone
UTF-16 surrogate such as ``"\\ud800"`` (no text encoding can write it).

Decoding takes msgspec's C decoder first (a 5 kB order in ~8 µs, against ~55 µs for the
standard library with ``Decimal`` fractions): it gives the same values, and refuses what
the checks above refuse (NaN, lone surrogates, integers past the digit limit). Whatever
it refuses is decoded again by the standard library, whose checks say why. Encoding takes
msgspec's C encoder likewise, for a value it writes exactly as the standard library does
(:func:`plain`), so the text is the same either way.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from decimal import Decimal
from typing import Any

import msgspec

#: Deepest nesting of arrays and objects a record may have. Retail payloads nest a handful
#: of levels; a thousand would exhaust the interpreter's stack in whatever walks it next.
MAX_DEPTH = 100
#: Longest integer, in digits: the interpreter's limit for converting text to int (4300).
MAX_DIGITS = sys.get_int_max_str_digits() or 4300

_BRACKETS_OR_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONG_INT = re.compile(rf"\d{{{MAX_DIGITS + 1},}}")

_encode_str = json.JSONEncoder(ensure_ascii=False).encode
# The C encoder, for values that hold only what JSON has natively (str, int, float, bool,
# None, dict, list, tuple): it writes exactly what _write would, ~10x faster.
_encode_plain = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# msgspec's C encoder, for values :func:`plain` accepts: the same text as the standard
# library's, ~5x faster, Decimals without a Python call each
_MSGSPEC_NUMBER = msgspec.json.Encoder(decimal_format="number")


def loads(text: str | bytes) -> Any:
    """Decode JSON text, fractional numbers as ``Decimal``; refuse what a record cannot hold.

    Raises :class:`json.JSONDecodeError` (a ``ValueError``) for invalid JSON and for the
    values listed in the module's docstring.
    """
    if _nesting(text) <= MAX_DEPTH or not _deeper_than(text, MAX_DEPTH):
        try:
            return _FAST.decode(text)
        except (msgspec.MsgspecError, UnicodeError):
            pass  # told below, by the standard library and the checks
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode(json.detect_encoding(text))
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"not valid text ({exc.reason})", "", exc.start) from None
    # cheap checks first: one C-speed count, a regex only where it can matter
    if _nesting(text) > MAX_DEPTH:
        _check_depth(text)
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", text, 0) from None
    except ValueError as exc:  # int() past the interpreter's digit limit, a NaN refused
        long = _LONG_INT.search(text)
        if isinstance(exc, _Refused) or long is None:
            raise json.JSONDecodeError(str(exc), text, getattr(exc, "pos", 0)) from None
        raise json.JSONDecodeError(
            f"a number of more than {MAX_DIGITS} digits", text, long.start()
        ) from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        _check_text(value, text)
    return value


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _check_depth(text: str) -> None:
    depth = 0
    for match in _BRACKETS_OR_STRINGS.finditer(text):
        token = match.group(0)
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise json.JSONDecodeError(
                    f"nested deeper than {MAX_DEPTH} levels", text, match.start()
                )
        elif token in "]}":
            depth -= 1


def _walk(value: Any) -> Any:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _check_text(value: Any, text: str) -> None:
    for item in _walk(value):
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                where = _SURROGATE_ESCAPE.search(text)
                raise json.JSONDecodeError(
                    "a lone UTF-16 surrogate (\\ud800-\\udfff) that no text can hold",
                    text,
                    where.start() if where else 0,
                ) from None


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constant)
_FAST = msgspec.json.Decoder(float_hook=Decimal)


# every byte but those that open or close arrays, objects and strings
_NOT_MARKS = bytes(b for b in range(256) if b not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*"')
_PAIR = re.compile(rb"\[\]|\{\}")  # one pass peels one level: new pairs wait for the next


def _deeper_than(text: str | bytes | bytearray, limit: int) -> bool:
    """Whether ``text``'s arrays and objects nest deeper than ``limit`` (brackets inside
    strings do not count). Made of C-speed passes over bytes: escapes out, every byte but
    brackets and quotes out, strings out, then one pass per level peeling ``[]`` and
    ``{}``: ~25 us for a 7 kB order, where a regex walk over the text took a millisecond."""
    try:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    except UnicodeError:
        return True  # the slow path tells what is wrong with it
    if b"\\" in data:  # escaped backslashes and quotes: neither opens nor closes a string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # an adjacent pair of quotes leaves every bracket inside or outside a string as it
    # was: most strings go with one C-speed replace, those holding brackets with a regex
    marks = data.translate(None, _NOT_MARKS).replace(b'""', b"")
    if b'"' in marks:
        marks = _STRING.sub(b"", marks)
    for _ in range(limit):
        if not marks:
            return False
        peeled = _PAIR.sub(b"", marks)
        if peeled == marks:
            return True  # unbalanced: not JSON; the slow path says where
        marks = peeled
    return bool(marks)


def _nesting(text: str | bytes | bytearray) -> int:
    """How many arrays and objects ``text`` may open at most (brackets in strings count)."""
    if isinstance(text, str):
        return text.count("[") + text.count("{")
    return text.count(b"[") + text.count(b"{")


def _plain_leaf(value: Any, kind: type) -> bool:
    if kind is Decimal:
        return bool(value.is_finite())
    if kind is float:
        # the standard library writes floats outside this range with an exponent
        # (1e+16, 1e-05), msgspec without one or another way; inside it both write repr()
        return bool(value == 0 or 1e-4 <= abs(value) < 1e16)
    return False


def plain(value: Any) -> bool:
    """Whether msgspec's JSON encoder writes ``value`` exactly as the standard library's
    does (``ensure_ascii=False``, compact; a Decimal as its ``str``, quoted or not).

    True for dicts with ``str`` keys, lists and tuples of such values, ``str``, ``int`` (of
    any size: both write its digits, and both refuse one past the interpreter's digit
    limit), ``bool``, None, finite Decimals and floats that ``repr`` writes without an
    exponent; exact types only (a ``str`` enum, a ``dict`` subclass, a date, bytes or a
    set go the standard library's way, as msgspec writes them differently). Checked
    before each fast encoding: about a third of what the standard library's encoding costs.
    """
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            kind = type(item)
            if kind is str or kind is int or item is None or kind is bool:
                continue
            if kind is dict or kind is list or kind is tuple:
                if item and not plain(item):  # an empty one is plain: no call for it
                    return False
            elif not _plain_leaf(item, kind):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:
            kind = type(item)
            if kind is str or kind is int or item is None or kind is bool:
                continue
            if kind is dict or kind is list or kind is tuple:
                if item and not plain(item):  # an empty one is plain: no call for it
                    return False
            elif not _plain_leaf(item, kind):
                return False
        return True
    return kind is str or kind is int or value is None or kind is bool or _plain_leaf(value, kind)


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON on one line; ``Decimal`` becomes a number, digit for digit.

    Dates and datetimes are written as ISO 8601 strings. Anything else that JSON has no
    form for raises ``TypeError``.
    """
    if plain(value):
        try:
            return _MSGSPEC_NUMBER.encode(value).decode("utf-8")
        except (TypeError, ValueError, OverflowError, UnicodeError):
            pass  # a lone surrogate, which no UTF-8 can hold: told below
    try:
        return _encode_plain(value)
    except TypeError:  # a Decimal, a date, a non-string key: the exact writer below
        pass
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None or isinstance(value, bool | int):
        out.append(json.dumps(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no JSON form")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(json.dumps(value, allow_nan=False))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(_encode_str(key if isinstance(key, str) else json.dumps(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dt.date | dt.time):
        out.append(_encode_str(value.isoformat()))
    else:
        raise TypeError(f"a {type(value).__name__} has no JSON form")


def dotted(value: Any, path: str | None) -> Any:
    """The value at a dotted path (``"data.orders"``); ``KeyError`` when a step is missing.

    An empty or None path is the value itself. A step into a list takes an index.
    """
    if not path:
        return value
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.lstrip("-").isdigit():
            try:
                value = value[int(step)]
            except IndexError:
                raise KeyError(path) from None
        else:
            raise KeyError(path)
    return value
