"""Retail filters and globals for flowyard templates.

Small, pure functions registered in the one Jinja environment (:mod:`engine.templates`)
and usable from Python as well. The rules they enforce:

- **Money is never a float.** JSON is read with ``Decimal`` for fractional numbers; the
  money filters accept ``str``, ``int`` and ``Decimal`` and refuse a ``float`` (``0.1``
  has no exact binary form). Rounding is ``ROUND_HALF_UP`` (``0.005`` -> ``0.01``,
  ``-0.005`` -> ``-0.01``), the rule of commercial invoices, not Python's banker's rounding.
- **Ids are strings.** Channel ids exceed 2**53, where a JSON float loses digits.
- **Timestamps are UTC** ``YYYY-MM-DDTHH:MM:SSZ``; a time without an offset is refused
  rather than guessed.

Every failure raises :class:`FilterError` (a ``ValueError``) with a message that names the
filter and the value's type; the template layer turns it into a record error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from jinja2 import Undefined

__all__ = [
    "FILTERS",
    "GLOBALS",
    "FilterError",
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
    "require_defined",
    "round_decimal",
    "tag_list",
    "three_way_match",
    "unit_code",
]


class FilterError(ValueError):
    """A filter was given a value it cannot convert; the message says which and why."""


# Wide enough for any amount a shop will see; quantize() fails beyond the precision.
_CTX = Context(prec=60, rounding=ROUND_HALF_UP)
_MAX_SAFE_INT = 2**53

# ISO 4217 (list one, current as of 2024): every active code, funds and metals included.
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
    IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD
    MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB
    PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD
    SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS
    VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA
    XXX YER ZAR ZMW ZWG ZWL
    """.split()
)

# ISO 4217 minor-unit exponents that are not 2.
_EXPONENTS = {
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}

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


def require_defined(value: Any) -> Any:
    """``value``, or the template's own "no field ..." error when it is an Undefined.

    Filters call it first, so a missing field is reported as missing rather than as a
    confusing type error.
    """
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def _type(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _to_decimal(value: Any, who: str) -> Decimal:
    # Ordered by how often each type arrives: JSON money is a string, then Decimal, int.
    kind = type(value)
    if kind is str:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise FilterError(f"{who}: {value!r} is not a decimal number") from None
    elif kind is Decimal:
        number = value
    elif kind is int:
        number = Decimal(value)
    else:
        return _to_decimal_other(value, who)
    if not number.is_finite():
        raise FilterError(f"{who}: {value!r} is not a finite number")
    return number


def _to_decimal_other(value: Any, who: str) -> Decimal:
    require_defined(value)
    if isinstance(value, bool):
        raise FilterError(f"{who}: expected an amount, got a bool ({value})")
    if isinstance(value, float):
        raise FilterError(
            f"{who}: refusing the float {value!r}: money must be exact; read JSON with "
            "Decimal (the built-in connectors do) or pass the amount as a string"
        )
    for exact in (str, Decimal, int):  # a subclass of one of them
        if isinstance(value, exact):
            return _to_decimal(exact(value), who)
    raise FilterError(f"{who}: expected an amount (str, int or Decimal), got {_type(value)}")


_QUANTUM = {places: Decimal(1).scaleb(-places) for places in range(0, 13)}


def _quantize(number: Decimal, places: int) -> Decimal:
    quantum = _QUANTUM.get(places) or Decimal(1).scaleb(-places)
    result = number.quantize(quantum, rounding=ROUND_HALF_UP, context=_CTX)
    return result.copy_abs() if result.is_zero() else result  # no "-0.00"


def round_decimal(value: Any, places: int = 2) -> Decimal:
    """The amount as a ``Decimal`` rounded HALF_UP to ``places``, for arithmetic in a template."""
    return _quantize(_to_decimal(value, "round_decimal"), places)


def decimal(value: Any, places: int = 2) -> str:
    """The amount as a decimal string with exactly ``places`` digits: ``"19.9"`` -> ``"19.90"``."""
    return str(_quantize(_to_decimal(value, "decimal"), places))


def currency_code(value: Any) -> str:
    """An ISO 4217 code, trimmed and upper-cased: ``" eur"`` -> ``"EUR"``; anything else fails."""
    require_defined(value)
    if not isinstance(value, str):
        raise FilterError(f"currency_code: expected a 3-letter code, got {_type(value)}")
    code = value.strip().upper()
    if code not in ISO_4217:
        raise FilterError(f"currency_code: {value!r} is not an ISO 4217 currency code")
    return code


def currency_exponent(currency: Any) -> int:
    """The number of minor-unit digits of an ISO 4217 currency (JPY 0, EUR 2, BHD 3)."""
    return _EXPONENTS.get(currency_code(currency), 2)


def minor_units(value: Any, currency: Any) -> int:
    """The amount in the currency's minor units: ``("19.90", "EUR")`` -> ``1990``.

    Digits beyond the currency's exponent are rounded HALF_UP (``"0.125"`` EUR -> ``13``).
    """
    number = _to_decimal(value, "minor_units")
    return int(_quantize(number.scaleb(currency_exponent(currency)), 0))


def from_minor_units(value: Any, currency: Any) -> str:
    """Minor units back to a decimal string: ``(1990, "EUR")`` -> ``"19.90"``.

    ``(500, "JPY")`` -> ``"500"``; ``(1234, "BHD")`` -> ``"1.234"``.
    """
    number = _to_decimal(value, "from_minor_units")
    if number != number.to_integral_value():
        raise FilterError(f"from_minor_units: {value!r} is not a whole number of minor units")
    places = currency_exponent(currency)
    return str(_quantize(number.scaleb(-places), places))


def money_sum(values: Any, attribute: str | None = None, places: int = 2) -> str:
    """The exact sum of amounts as a decimal string; ``attribute`` sums one key of each dict.

    ``line.tax_lines | money_sum('price')``; an empty list sums to ``"0.00"``.
    """
    if type(values) is not list:
        require_defined(values)
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise FilterError(f"money_sum: expected a list of amounts, got {_type(values)}")
    total = Decimal(0)
    for index, item in enumerate(values):
        if attribute is not None:
            try:
                item = item[attribute]
            except (KeyError, TypeError, IndexError):
                raise FilterError(f"money_sum: item {index} has no {attribute!r}") from None
        total += _to_decimal(item, "money_sum")
    return str(_quantize(total, places))


def _parse_time(value: Any, who: str) -> dt.datetime | dt.date:
    if isinstance(value, dt.date):  # datetime is a date too
        return value
    if not isinstance(value, str):
        require_defined(value)
        raise FilterError(f"{who}: expected an ISO 8601 string, got {_type(value)}")
    text = value.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{who}: {value!r} is not an ISO 8601 date or date-time") from None


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
        raise FilterError(f"iso_utc: {value!r} has no UTC offset; flowyard does not guess zones")
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
        raise FilterError(f"tag_list: expected a string or a list, got {_type(value)}")
    return [tag for tag in (str(part).strip() for part in parts) if tag]


def id_str(value: Any) -> str:
    """An id as an exact string: ``5234567890123456789`` -> ``"5234567890123456789"``.

    A float is refused when it cannot hold the id exactly (fractional or above 2**53).
    """
    require_defined(value)
    if value is None:
        raise FilterError("id_str: the id is missing (None)")
    if isinstance(value, bool):
        raise FilterError(f"id_str: expected an id, got a bool ({value})")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise FilterError("id_str: the id is an empty string")
        return text
    if isinstance(value, Decimal | float):
        try:
            whole = int(value)
        except (ValueError, OverflowError):  # NaN, infinity
            whole = None
        if whole is None or whole != value:
            raise FilterError(f"id_str: {value!r} is not a whole number")
        if isinstance(value, float) and abs(value) > _MAX_SAFE_INT:
            raise FilterError(
                f"id_str: the float {value!r} is above 2**53 and has lost digits; "
                "read JSON ids as integers or strings"
            )
        return str(whole)
    raise FilterError(f"id_str: expected an id (int or str), got {_type(value)}")


def gid_id(value: Any) -> str:
    """The id inside a GraphQL global id: ``"gid://shopify/Order/123"`` -> ``"123"``.

    A bare id (``123`` or ``"123"``) is returned as a string, so one mapping reads REST
    and GraphQL payloads alike.
    """
    require_defined(value)
    if isinstance(value, str) and value.startswith("gid://"):
        last = value.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if not last or last.startswith("gid:"):
            raise FilterError(f"gid_id: {value!r} has no id after the type")
        return last
    if isinstance(value, str) and "/" in value:
        raise FilterError(f"gid_id: {value!r} is not a gid:// id")
    return id_str(value)


def unit_code(value: Any) -> str:
    """A unit of measure as its UN/ECE Rec 20 code: ``"kg"`` -> ``"KGM"``, ``"pcs"`` -> ``C62``."""
    require_defined(value)
    if not isinstance(value, str):
        raise FilterError(f"unit_code: expected a unit name, got {_type(value)}")
    text = value.strip()
    code = _UNIT_SYNONYMS.get(text.lower())
    if code is None and text.upper() in _UNIT_CODES:
        code = text.upper()
    if code is None:
        raise FilterError(f"unit_code: unknown unit {value!r}")
    return code


def pick(value: Any, *keys: str) -> dict:
    """A new dict with only ``keys`` (those present): ``record | pick('id', 'email')``."""
    require_defined(value)
    if not isinstance(value, Mapping):
        raise FilterError(f"pick: expected an object, got {_type(value)}")
    return {key: value[key] for key in keys if key in value}


def omit(value: Any, *keys: str) -> dict:
    """A new dict without ``keys``: ``record | omit('erp_lookup')`` drops helper fields."""
    require_defined(value)
    if not isinstance(value, Mapping):
        raise FilterError(f"omit: expected an object, got {_type(value)}")
    return {key: item for key, item in value.items() if key not in keys}


def now_utc() -> str:
    """The current time as UTC ``YYYY-MM-DDTHH:MM:SSZ`` (a global: ``{{ now_utc() }}``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    "round_decimal": round_decimal,
    "tag_list": tag_list,
    "unit_code": unit_code,
}

GLOBALS = {"now_utc": now_utc}

# The supplier-invoice match is logic rather than a conversion, so it has its own module;
# it uses the helpers above, hence the import at the end.
from engine.matching import three_way_match  # noqa: E402

FILTERS["three_way_match"] = three_way_match
