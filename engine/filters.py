"""Retail filters and globals for flowyard templates.

Small, pure functions registered in the one Jinja environment (:mod:`engine.templates`)
and usable from Python as well. The rules they enforce:

- **Money is never a float** and rounds HALF_UP: the money filters live in
  :mod:`engine.money` (``decimal``, ``round_decimal``, ``money_sum``, ``minor_units``,
  ``prorate``, ``ratio``, ``totals_problems``, ``refund_problems`` ...) and are registered
  here with the others.
- **Ids are strings.** Channel ids exceed 2**53, where a JSON float loses digits.
- **Timestamps are UTC** ``YYYY-MM-DDTHH:MM:SSZ``; a time without an offset is refused
  rather than guessed.
- **Required means present and not empty**: ``line | required('sku')`` gives the value
  or fails naming the field, also when it is null or ``""``.

Every failure raises :class:`FilterError` (a ``ValueError``) with a message that names the
filter and the value's type; the template layer turns it into a record error that names
the record's field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from engine.matching import three_way_match
from engine.money import (
    FilterError,
    MissingValueError,
    currency_code,
    currency_exponent,
    decimal,
    from_minor_units,
    minor_units,
    money_sum,
    prorate,
    ratio,
    refund_problems,
    require_defined,
    round_decimal,
    totals_problems,
)

__all__ = [
    "FILTERS",
    "GLOBALS",
    "FilterError",
    "MissingValueError",
    "currency_code",
    "currency_exponent",
    "decimal",
    "from_minor_units",
    "gid_id",
    "id_str",
    "iso_date",
    "iso_utc",
    "minor_units",
    "money_sum",
    "now_utc",
    "omit",
    "pick",
    "prorate",
    "ratio",
    "refund_problems",
    "require_defined",
    "required",
    "round_decimal",
    "tag_list",
    "three_way_match",
    "totals_problems",
    "unit_code",
]


_MAX_SAFE_INT = 2**53

# Unit synonyms -> UN/ECE Recommendation 20 codes. Every way of saying "piece" (each, ea,
# EA, pcs ...) maps to C62 ("one"), the code EN 16931 / Peppol e-invoices use for counted
# items. Rec 20 codes themselves (KGM, H87 ...) are kept as given.
_UNIT_SYNONYMS = {
    **dict.fromkeys(
        ["each", "ea", "pc", "pcs", "piece", "pieces", "unit", "units", "st", "stk", "one"], "C62"
    ),
    **dict.fromkeys(["kg", "kgs", "kilogram", "kilograms"], "KGM"),
    **dict.fromkeys(["g", "gr", "gram", "grams"], "GRM"),
    **dict.fromkeys(["mg", "milligram", "milligrams"], "MGM"),
    **dict.fromkeys(["t", "tonne", "tonnes"], "TNE"),
    **dict.fromkeys(["lb", "lbs", "pound", "pounds"], "LBR"),
    **dict.fromkeys(["oz", "ounce", "ounces"], "ONZ"),
    **dict.fromkeys(["l", "lt", "ltr", "litre", "liter", "litres", "liters"], "LTR"),
    **dict.fromkeys(["ml", "millilitre", "milliliter"], "MLT"),
    **dict.fromkeys(["cl", "centilitre", "centiliter"], "CLT"),
    **dict.fromkeys(["m", "metre", "meter", "metres", "meters"], "MTR"),
    **dict.fromkeys(["cm", "centimetre", "centimeter"], "CMT"),
    **dict.fromkeys(["mm", "millimetre", "millimeter"], "MMT"),
    **dict.fromkeys(["km", "kilometre", "kilometer"], "KMT"),
    **dict.fromkeys(["m2", "sqm", "square metre", "square meter"], "MTK"),
    **dict.fromkeys(["m3", "cbm", "cubic metre", "cubic meter"], "MTQ"),
    **dict.fromkeys(["in", "inch", "inches"], "INH"),
    **dict.fromkeys(["ft", "foot", "feet"], "FOT"),
    **dict.fromkeys(["yd", "yard", "yards"], "YRD"),
    **dict.fromkeys(["pair", "pairs", "pr"], "PR"),
    **dict.fromkeys(["dozen", "dz", "doz"], "DZN"),
    **dict.fromkeys(["box", "boxes", "bx"], "BX"),
    **dict.fromkeys(["pack", "packs", "pk"], "PK"),
    **dict.fromkeys(["case", "cases", "cs"], "CS"),
    **dict.fromkeys(["set", "sets"], "SET"),
    **dict.fromkeys(["roll", "rolls"], "RO"),
    **dict.fromkeys(["h", "hr", "hour", "hours"], "HUR"),
    **dict.fromkeys(["day", "days"], "DAY"),
}
_UNIT_CODES = frozenset(_UNIT_SYNONYMS.values()) | {"EA", "H87"}


def _type(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _parse_time(value: Any, who: str) -> dt.datetime | dt.date:
    if isinstance(value, dt.date):  # datetime is a date too
        return value
    if not isinstance(value, str):
        require_defined(value)
        raise FilterError(f"{who}: expected an ISO 8601 string, got {_type(value)}", value=value)
    text = value.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"{who}: {value!r} is not an ISO 8601 date or date-time", value=value
        ) from None


def iso_utc(value: Any) -> str:
    """An ISO 8601 time with an offset as UTC ``YYYY-MM-DDTHH:MM:SSZ`` (fractions dropped).

    A bare date means its midnight UTC. A time without an offset is refused: the zone it
    was meant in cannot be known.
    """
    moment = _parse_time(value, "iso_utc")
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.combine(moment, dt.time(), dt.UTC)
    offset = moment.utcoffset()
    if offset is None:
        raise FilterError(
            f"iso_utc: {value!r} has no UTC offset; flowyard does not guess zones", value=value
        )
    # naive isoformat() is several times faster than strftime()
    return (moment.replace(tzinfo=None, microsecond=0) - offset).isoformat() + "Z"


def iso_date(value: Any) -> str:
    """The calendar date ``YYYY-MM-DD`` as written (in the value's own offset).

    For the UTC date of a time, chain ``| iso_utc | iso_date``.
    """
    moment = _parse_time(value, "iso_date")
    if isinstance(moment, dt.datetime):
        moment = moment.date()
    return moment.isoformat()


def tag_list(value: Any) -> list[str]:
    """A comma-separated tag string as a list, blanks dropped: ``"a, b,,c"`` -> ``[a, b, c]``."""
    require_defined(value)
    if value is None:
        return []
    if isinstance(value, str):
        parts: Iterable[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        parts = value
    else:
        raise FilterError(f"tag_list: expected a string or a list, got {_type(value)}", value=value)
    return [tag for tag in (str(part).strip() for part in parts) if tag]


def id_str(value: Any) -> str:
    """An id as an exact string: ``5234567890123456789`` -> ``"5234567890123456789"``.

    A float is refused when it cannot hold the id exactly (fractional or above 2**53).
    """
    require_defined(value)
    if value is None:
        raise FilterError("id_str: the id is missing (None)", value=value)
    if isinstance(value, bool):
        raise FilterError(f"id_str: expected an id, got a bool ({value})", value=value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise FilterError("id_str: the id is an empty string", value=value)
        return text
    if isinstance(value, Decimal | float):
        try:
            whole = int(value)
        except (ValueError, OverflowError):  # NaN, infinity
            whole = None
        if whole is None or whole != value:
            raise FilterError(f"id_str: {value!r} is not a whole number", value=value)
        if isinstance(value, float) and abs(value) > _MAX_SAFE_INT:
            raise FilterError(
                f"id_str: the float {value!r} is above 2**53 and has lost digits; "
                "read JSON ids as integers or strings",
                value=value,
            )
        return str(whole)
    raise FilterError(f"id_str: expected an id (int or str), got {_type(value)}", value=value)


def gid_id(value: Any) -> str:
    """The id inside a GraphQL global id: ``"gid://shopify/Order/123"`` -> ``"123"``.

    A bare id (``123`` or ``"123"``) is returned as a string, so one mapping reads REST
    and GraphQL payloads alike.
    """
    require_defined(value)
    if isinstance(value, str) and value.startswith("gid://"):
        last = value.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if not last or last.startswith("gid:"):
            raise FilterError(f"gid_id: {value!r} has no id after the type", value=value)
        return last
    if isinstance(value, str) and "/" in value:
        raise FilterError(f"gid_id: {value!r} is not a gid:// id", value=value)
    return id_str(value)


def unit_code(value: Any) -> str:
    """A unit of measure as its UN/ECE Rec 20 code: ``"kg"`` -> ``"KGM"``, ``"pcs"`` -> ``C62``."""
    require_defined(value)
    if not isinstance(value, str):
        raise FilterError(f"unit_code: expected a unit name, got {_type(value)}", value=value)
    text = value.strip()
    code = _UNIT_SYNONYMS.get(text.lower())
    if code is None and text.upper() in _UNIT_CODES:
        code = text.upper()
    if code is None:
        raise FilterError(f"unit_code: unknown unit {value!r}", value=value)
    return code


def pick(value: Any, *keys: str) -> dict[str, Any]:
    """A new dict with only ``keys`` (those present): ``record | pick('id', 'email')``."""
    require_defined(value)
    if not isinstance(value, Mapping):
        raise FilterError(f"pick: expected an object, got {_type(value)}", value=value)
    return {key: value[key] for key in keys if key in value}


def omit(value: Any, *keys: str) -> dict[str, Any]:
    """A new dict without ``keys``: ``record | omit('erp_lookup')`` drops helper fields."""
    require_defined(value)
    if not isinstance(value, Mapping):
        raise FilterError(f"omit: expected an object, got {_type(value)}", value=value)
    return {key: item for key, item in value.items() if key not in keys}


def now_utc() -> str:
    """The current time as UTC ``YYYY-MM-DDTHH:MM:SSZ`` (a global: ``{{ now_utc() }}``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def required(value: Any, key: str) -> Any:
    """``value[key]``, which must be there and not be null or ``""``: ``line | required('sku')``.

    Where a plain ``{{ line.sku }}`` fails only when the field is absent, this fails when
    it is empty too, naming the record's field (``line_items[2].sku is empty``).
    """
    require_defined(value)
    if not isinstance(value, Mapping):
        raise FilterError(f"required: expected an object, got {_type(value)}", value=value)
    if key not in value:
        raise MissingValueError(f"required: no field {key!r}", value=value, key=key)
    found = value[key]
    if found is None or (isinstance(found, str) and not found.strip()):
        raise MissingValueError(
            f"required: {key!r} is {'null' if found is None else 'empty'}",
            value=value,
            key=key,
            empty=True,
        )
    return found


FILTERS = {
    "currency_code": currency_code,
    "decimal": decimal,
    "from_minor_units": from_minor_units,
    "gid_id": gid_id,
    "id_str": id_str,
    "iso_date": iso_date,
    "iso_utc": iso_utc,
    "minor_units": minor_units,
    "money_sum": money_sum,
    "omit": omit,
    "pick": pick,
    "prorate": prorate,
    "ratio": ratio,
    "refund_problems": refund_problems,
    "required": required,
    "round_decimal": round_decimal,
    "tag_list": tag_list,
    "three_way_match": three_way_match,
    "totals_problems": totals_problems,
    "unit_code": unit_code,
}

GLOBALS = {"now_utc": now_utc}
