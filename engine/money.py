"""Money: exact amounts, currencies, and whether an order's figures add up.

The rules every amount in flowyard follows:

- **Never a float.** JSON is read with ``Decimal`` for fractional numbers; amounts are
  accepted as ``str``, ``int`` or ``Decimal`` and a ``float`` is refused (``0.1`` has no
  exact binary form). Rates (``0.0825``) are ratios, not money: :func:`ratio` reads a float
  by its shortest text.
- **Rounding is HALF_UP** (``0.005`` -> ``0.01``, ``-0.005`` -> ``-0.01``), the rule of
  commercial invoices, not Python's banker's rounding; a zero is never ``-0.00``.
- **Minor units follow ISO 4217** (JPY 0 digits, EUR 2, BHD 3).

:func:`totals_problems` and :func:`refund_problems` check a canonical order or return
against its own arithmetic and say, in figures, what does not add up; both are template
filters (``when: record | totals_problems``). This module is the bottom of the filter
stack: :mod:`engine.filters` and :mod:`engine.matching` import from it, never the other way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from jinja2 import Undefined

__all__ = [
    "ISO_4217",
    "FilterError",
    "MissingValueError",
    "currency_code",
    "currency_exponent",
    "decimal",
    "from_minor_units",
    "minor_units",
    "money_sum",
    "prorate",
    "ratio",
    "refund_problems",
    "require_defined",
    "round_decimal",
    "to_decimal",
    "totals_problems",
]

_NO_VALUE: Any = object()


class FilterError(ValueError):
    """A filter was given a value it cannot convert; the message says which and why.

    ``value`` is the offending value when the filter had one: the template layer looks it
    up in the record to name the record's field (``total_price is invalid``).
    """

    def __init__(self, message: str, *, value: Any = _NO_VALUE):
        super().__init__(message)
        self.value = value

    @property
    def has_value(self) -> bool:
        return self.value is not _NO_VALUE


class MissingValueError(FilterError):
    """A value a filter needs is absent (``key`` not in ``value``) or empty (null, ``""``)."""

    def __init__(self, message: str, *, value: Any, key: Any, empty: bool = False):
        super().__init__(message, value=value)
        self.key = key
        self.empty = empty


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


# -- amounts ---------------------------------------------------------------------------------

# Wide enough for any amount a shop will see; quantize() fails beyond the precision.
_CTX = Context(prec=60, rounding=ROUND_HALF_UP)


def to_decimal(value: Any, who: str = "amount") -> Decimal:
    """An amount as a finite ``Decimal``; ``who`` names the caller in the error."""
    # Ordered by how often each type arrives: JSON money is a string, then Decimal, int.
    kind = type(value)
    if kind is str:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise FilterError(f"{who}: {value!r} is not a decimal number", value=value) from None
    elif kind is Decimal:
        number = value
    elif kind is int:
        number = Decimal(value)
    else:
        return _to_decimal_other(value, who)
    if not number.is_finite():
        raise FilterError(f"{who}: {value!r} is not a finite number", value=value)
    return number


def _to_decimal_other(value: Any, who: str) -> Decimal:
    require_defined(value)
    if isinstance(value, bool):
        raise FilterError(f"{who}: expected an amount, got a bool ({value})", value=value)
    if isinstance(value, float):
        raise FilterError(
            f"{who}: refusing the float {value!r}: money must be exact; read JSON with "
            "Decimal (the built-in connectors do) or pass the amount as a string",
            value=value,
        )
    for exact in (str, Decimal, int):  # a subclass of one of them
        if isinstance(value, exact):
            return to_decimal(exact(value), who)
    raise FilterError(
        f"{who}: expected an amount (str, int or Decimal), got {_type(value)}", value=value
    )


_QUANTUM = {places: Decimal(1).scaleb(-places) for places in range(0, 13)}


def _quantize(number: Decimal, places: int) -> Decimal:
    quantum = _QUANTUM.get(places) or Decimal(1).scaleb(-places)
    result = number.quantize(quantum, rounding=ROUND_HALF_UP, context=_CTX)
    return result.copy_abs() if result.is_zero() else result  # no "-0.00"


def round_decimal(value: Any, places: int = 2) -> Decimal:
    """The amount as a ``Decimal`` rounded HALF_UP to ``places``, for arithmetic in a template."""
    return _quantize(to_decimal(value, "round_decimal"), places)


def decimal(value: Any, places: int = 2) -> str:
    """The amount as a decimal string with exactly ``places`` digits: ``"19.9"`` -> ``"19.90"``."""
    return str(_quantize(to_decimal(value, "decimal"), places))


def money_sum(values: Any, attribute: str | None = None, places: int = 2) -> str:
    """The exact sum of amounts as a decimal string; ``attribute`` sums one key of each dict.

    ``line.tax_lines | money_sum('price')``; an empty list sums to ``"0.00"``.
    """
    if type(values) is not list:
        require_defined(values)
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise FilterError(
                f"money_sum: expected a list of amounts, got {_type(values)}", value=values
            )
    total = Decimal(0)
    for index, item in enumerate(values):
        if attribute is not None:
            try:
                item = item[attribute]
            except (KeyError, TypeError, IndexError):
                raise MissingValueError(
                    f"money_sum: item {index} has no {attribute!r}", value=item, key=attribute
                ) from None
        total += to_decimal(item, "money_sum")
    return str(_quantize(total, places))


def prorate(value: Any, part: Any, whole: Any, places: int = 2) -> str:
    """``value x part / whole`` rounded HALF_UP, as a decimal string: a share of an amount.

    ``'3.00' | prorate(1, 3)`` -> ``"1.00"``: the tax of one of three units.
    """
    amount = to_decimal(value, "prorate")
    numerator, denominator = to_decimal(part, "prorate"), to_decimal(whole, "prorate")
    if not denominator:
        raise FilterError("prorate: the whole is zero", value=whole)
    return str(_quantize(amount * numerator / denominator, places))


def ratio(value: Any, percent: bool = False) -> str:
    """A rate as a plain decimal string: ``0.0825`` -> ``"0.0825"``, ``20`` percent -> ``"0.2"``.

    A rate is not money, so a float is read by its shortest text (``0.0825`` is
    ``"0.0825"``); ``percent=True`` divides by 100.
    """
    require_defined(value)
    if isinstance(value, float) and not isinstance(value, bool):
        value = repr(value)
    number = to_decimal(value, "ratio")
    if percent:
        number = number.scaleb(-2)
    text = format(number.normalize(_CTX), "f")
    return "0" if text in ("-0", "0") else text


# -- currencies ------------------------------------------------------------------------------

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


def currency_code(value: Any) -> str:
    """An ISO 4217 code, trimmed and upper-cased: ``" eur"`` -> ``"EUR"``; anything else fails."""
    require_defined(value)
    if not isinstance(value, str):
        raise FilterError(
            f"currency_code: expected a 3-letter code, got {_type(value)}", value=value
        )
    code = value.strip().upper()
    if code not in ISO_4217:
        raise FilterError(f"currency_code: {value!r} is not an ISO 4217 currency code", value=value)
    return code


def currency_exponent(currency: Any) -> int:
    """The number of minor-unit digits of an ISO 4217 currency (JPY 0, EUR 2, BHD 3)."""
    return _EXPONENTS.get(currency_code(currency), 2)


def minor_units(value: Any, currency: Any) -> int:
    """The amount in the currency's minor units: ``("19.90", "EUR")`` -> ``1990``.

    Digits beyond the currency's exponent are rounded HALF_UP (``"0.125"`` EUR -> ``13``).
    """
    number = to_decimal(value, "minor_units")
    return int(_quantize(number.scaleb(currency_exponent(currency)), 0))


def from_minor_units(value: Any, currency: Any) -> str:
    """Minor units back to a decimal string: ``(1990, "EUR")`` -> ``"19.90"``.

    ``(500, "JPY")`` -> ``"500"``; ``(1234, "BHD")`` -> ``"1.234"``.
    """
    number = to_decimal(value, "from_minor_units")
    if number != number.to_integral_value():
        raise FilterError(
            f"from_minor_units: {value!r} is not a whole number of minor units", value=value
        )
    places = currency_exponent(currency)
    return str(_quantize(number.scaleb(-places), places))


# -- does it add up? -------------------------------------------------------------------------


class _Figures:
    """Reads the amounts of one canonical record, naming the field when one is not money."""

    def __init__(self, who: str, record: Any):
        require_defined(record)
        if not isinstance(record, Mapping):
            raise FilterError(f"{who}: expected a canonical record, got {_type(record)}")
        self.who = who
        self.places = currency_exponent(record.get("currency"))
        self.unit = _QUANTUM[self.places]

    def amount(
        self, obj: Mapping[str, Any], key: str, where: str, default: Any = _NO_VALUE
    ) -> Decimal:
        value = obj.get(key, default) if isinstance(obj, Mapping) else default
        if value is _NO_VALUE or value is None:
            if default is not _NO_VALUE and default is not None:
                return to_decimal(default, self.who)
            raise FilterError(f"{self.who}: {where}{key} is missing")
        try:
            return to_decimal(value, self.who)
        except FilterError as exc:
            raise FilterError(f"{exc} ({where}{key})", value=value) from None

    def rows(self, obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        rows = obj.get(key) or []
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise FilterError(f"{self.who}: {key} must be a list of objects")
        return rows

    def text(self, number: Decimal) -> str:
        return str(_quantize(number, self.places))


def totals_problems(order: Any) -> list[str]:
    """What does not add up in a canonical order, in figures; ``[]`` when everything does.

    Checked, each within one minor unit of the currency per line involved (lines,
    shipping lines, fee lines; at least one): every line's total is quantity x unit price
    - discount, its discount the sum of its discount allocations and its tax the sum of
    its tax lines (where it states them); the lines' totals add up to the subtotal; the
    shipping lines to the shipping total; line and shipping discounts to the total
    discount; line, shipping and fee taxes (when any states tax) and the order's tax
    lines (when stated) to the total tax; and subtotal + shipping - shipping discounts +
    fees (+ tax, unless taxes are included) to the total.
    """
    figures = _Figures("totals_problems", order)
    money, text, unit = figures.amount, figures.text, figures.unit
    totals = order.get("totals")
    if not isinstance(totals, Mapping):
        raise FilterError("totals_problems: the order has no totals")
    lines = figures.rows(order, "lines")
    shipping_lines = figures.rows(order, "shipping_lines")
    fee_lines = figures.rows(order, "fee_lines")
    included = order.get("taxes_included") is True
    problems: list[str] = []

    def parts_add_up(
        label: str, stated: Decimal, rows: list[Mapping[str, Any]], what: str, figure: str
    ) -> None:
        """A line's stated figure against its parts (when it states parts)."""
        if rows:
            parts = sum((money(r, "amount", f"{label} {what}: ") for r in rows), Decimal(0))
            if abs(parts - stated) > unit:
                problems.append(
                    f"{label}: {what} add up to {text(parts)} but its {figure} is {text(stated)}"
                )

    line_sum = line_discounts = line_taxes = Decimal(0)
    tax_stated = False
    for position, line in enumerate(lines, 1):
        number = line.get("line_no", position)
        label = f"line {number}" + (f" ({line['sku']})" if line.get("sku") else "")
        where = f"lines[{position - 1}]."
        quantity = money(line, "quantity", where)
        price = money(line, "unit_price", where)
        discount = money(line, "discount", where, "0")
        tax = money(line, "tax", where, "0")
        total = money(line, "total", where)
        expected = quantity * price - discount
        if abs(total - expected) > unit:
            problems.append(
                f"{label}: total {text(total)} is not {format(quantity.normalize(), 'f')} x "
                f"{text(price)} - discount {text(discount)} = {text(expected)}"
            )
        allocations = figures.rows(line, "discount_allocations")
        parts_add_up(label, discount, allocations, "discount allocations", "discount")
        taxes = figures.rows(line, "tax_lines")
        parts_add_up(label, tax, taxes, "tax lines", "tax")
        tax_stated = tax_stated or bool(taxes) or bool(tax)
        line_sum += total
        line_discounts += discount
        line_taxes += tax

    shipping_sum = shipping_discounts = shipping_taxes = Decimal(0)
    for position, rate in enumerate(shipping_lines, 1):
        label = f"shipping line {position}" + (f" ({rate['title']})" if rate.get("title") else "")
        where = f"shipping_lines[{position - 1}]."
        tax = money(rate, "tax", where, "0")
        taxes = figures.rows(rate, "tax_lines")
        parts_add_up(label, tax, taxes, "tax lines", "tax")
        tax_stated = tax_stated or bool(taxes) or bool(tax)
        shipping_sum += money(rate, "price", where)
        shipping_discounts += money(rate, "discount", where, "0")
        shipping_taxes += tax

    fees = fee_taxes = Decimal(0)
    for position, fee in enumerate(fee_lines, 1):
        where = f"fee_lines[{position - 1}]."
        tax = money(fee, "tax", where, "0")
        tax_stated = tax_stated or bool(tax) or bool(figures.rows(fee, "tax_lines"))
        fees += money(fee, "amount", where)
        fee_taxes += tax

    tolerance = unit * max(1, len(lines) + len(shipping_lines) + len(fee_lines))
    subtotal = money(totals, "subtotal", "totals.")
    shipping = money(totals, "shipping", "totals.", "0")
    discount = money(totals, "discount", "totals.", "0")
    tax = money(totals, "tax", "totals.", "0")
    total = money(totals, "total", "totals.")

    def differs(parts: Decimal, stated: Decimal) -> bool:
        return abs(parts - stated) > tolerance

    if differs(line_sum, subtotal):
        problems.append(
            f"lines add up to {text(line_sum)} after discounts but subtotal is {text(subtotal)}"
        )
    if differs(shipping_sum, shipping):
        problems.append(
            f"shipping lines add up to {text(shipping_sum)} but shipping is {text(shipping)}"
        )
    if differs(line_discounts + shipping_discounts, discount):
        problems.append(
            f"line and shipping discounts add up to {text(line_discounts + shipping_discounts)}"
            f" but the total discount is {text(discount)}"
        )
    tax_sum = line_taxes + shipping_taxes + fee_taxes
    if tax_stated and differs(tax_sum, tax):
        problems.append(
            f"line, shipping and fee taxes add up to {text(tax_sum)} but total tax is {text(tax)}"
        )
    order_taxes = figures.rows(order, "tax_lines")
    if order_taxes:
        stated = sum((money(t, "amount", "tax_lines: ") for t in order_taxes), Decimal(0))
        if differs(stated, tax):
            problems.append(
                f"the order's tax lines add up to {text(stated)} but total tax is {text(tax)}"
            )

    expected = subtotal + shipping - shipping_discounts + fees + (0 if included else tax)
    if differs(expected, total):
        terms = f"subtotal {text(subtotal)} + shipping {text(shipping)}"
        if shipping_discounts:
            terms += f" - shipping discount {text(shipping_discounts)}"
        if fees:
            terms += f" + fees {text(fees)}"
        terms += " (taxes included)" if included else f" + tax {text(tax)}"
        problems.append(f"{terms} = {text(expected)} but total is {text(total)}")
    return problems


def refund_problems(refund: Any) -> list[str]:
    """What does not add up in a canonical return's refund; ``[]`` when everything does.

    The refunded lines (amount, plus tax unless taxes are included), shipping (plus its
    tax, likewise) and adjustments must add up to the refund's total, what was paid back,
    within one minor unit per line, adjustment and shipping.
    """
    figures = _Figures("refund_problems", refund)
    money, text = figures.amount, figures.text
    part = refund.get("refund")
    if not isinstance(part, Mapping):
        raise FilterError("refund_problems: the return has no refund")
    included = refund.get("taxes_included") is True
    lines = figures.rows(part, "lines")
    adjustments = figures.rows(part, "adjustments")
    goods = taxes = adjusted = Decimal(0)
    for position, line in enumerate(lines):
        goods += money(line, "amount", f"refund.lines[{position}].")
        taxes += money(line, "tax", f"refund.lines[{position}].", "0")
    for position, adjustment in enumerate(adjustments):
        where = f"refund.adjustments[{position}]."
        adjusted += money(adjustment, "amount", where)
        adjusted += money(adjustment, "tax", where, "0") * (0 if included else 1)
    shipping = money(part, "shipping", "refund.", "0")
    shipping_tax = money(part, "shipping_tax", "refund.", "0")
    total = money(part, "total", "refund.")
    if included:
        taxes = shipping_tax = Decimal(0)
    expected = goods + taxes + shipping + shipping_tax + adjusted
    tolerance = figures.unit * (len(lines) + len(adjustments) + 1)
    if abs(expected - total) <= tolerance:
        return []
    terms = f"refunded lines {text(goods)}"
    if taxes:
        terms += f" + tax {text(taxes)}"
    if shipping or shipping_tax:
        terms += f" + shipping {text(shipping + shipping_tax)}"
    if adjusted:
        terms += f" + adjustments {text(adjusted)}"
    if included:
        terms += " (taxes included)"
    return [f"{terms} = {text(expected)} but {text(total)} was paid back"]
