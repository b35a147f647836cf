"""JSON for connectors: money stays exact.

Numbers with a fraction are read as :class:`decimal.Decimal`, never ``float``, and a
``Decimal`` is written back as a JSON number with exactly its digits. Python ints are
unbounded, so ids above 2**53 round-trip as they are.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

_encode_str = json.JSONEncoder(ensure_ascii=False).encode
# The C encoder, for values that hold only what JSON has natively (str, int, float, bool,
# None, dict, list, tuple): it writes exactly what _write would, ~10x faster.
_encode_plain = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def loads(text: str | bytes) -> Any:
    """Decode JSON text, fractional numbers as ``Decimal``."""
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON on one line; ``Decimal`` becomes a number, digit for digit.

    Dates and datetimes are written as ISO 8601 strings. Anything else that JSON has no
    form for raises ``TypeError``.
    """
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
