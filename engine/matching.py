"""The three-way match of a supplier invoice: invoice against purchase order and receipts.

``three_way_match`` is a template filter (``{{ record | three_way_match(po_lines,
receipt_lines) }}``) and a plain function. For each invoice line it finds the purchase
order line the line bills (by ``po_line``, else by SKU), adds up what was received for
it, and compares, with tolerances:

=====================  =============================================================
quantity               invoiced (this line, earlier lines billing the same PO
                       line, and earlier invoices given as ``invoiced_lines``)
                       must not exceed the **received** quantity, nor the
                       **ordered** one, by more than ``qty_tol`` (2 %) of it;
                       billing less (a partial invoice) is fine
price                  the invoiced unit price may differ from the PO's by at most
                       ``price_tol`` (5 %) of it, either way
line total             when the line states one, it must be quantity x unit price
                       (rounded half up to the cent)
=====================  =============================================================

A difference of at most ``abs_tol`` (0.01) always passes, whatever the percentage, so
rounding never makes an exception. A line is ``matched`` when nothing differs,
``within_tolerance`` when something differs within the tolerances, ``exception`` when a
difference is beyond them or the line cannot be matched at all (unknown PO line, SKU
not on the order); the invoice takes its worst line's outcome. Every exception has a
reason a person in accounts payable can act on::

    line 2 SKU MUG-LOGO: invoiced qty 12 > received 10 beyond 2 %

Amounts and quantities are ``Decimal`` throughout (strings, integers and Decimals are
accepted; a float is refused, as by every money filter). Tolerances are ratios, not
money: ``0.05``, ``"0.05"`` and ``Decimal("0.05")`` all mean 5 %.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from engine.money import FilterError, require_defined, to_decimal

__all__ = ["three_way_match"]

_OUTCOMES = ("matched", "within_tolerance", "exception")
_CENT = Decimal("0.01")


def three_way_match(
    invoice: Any,
    po_lines: Any,
    receipt_lines: Any,
    price_tol: Any = "0.05",
    qty_tol: Any = "0.02",
    abs_tol: Any = "0.01",
    invoiced_lines: Any = None,
) -> dict[str, Any]:
    """Match each invoice line against the PO lines and the goods received for them.

    ``invoiced_lines`` are the quantities earlier invoices billed on this order (like
    receipt lines: ``po_line`` or ``sku``, and ``quantity``): goods received once are
    paid once, so they count against the received and ordered quantities too.

    Returns ``{"outcome", "reasons", "lines", "tolerances"}``: ``outcome`` is matched,
    within_tolerance or exception; ``reasons`` lists the exceptions, each naming the
    line and SKU; ``lines`` holds per line the quantities and prices compared (as
    decimal strings), its outcome and its reasons (exceptions and tolerated deviations).
    """
    tolerances = {
        "price": _ratio(price_tol, "price_tol"),
        "quantity": _ratio(qty_tol, "qty_tol"),
        "absolute": _ratio(abs_tol, "abs_tol"),
    }
    require_defined(invoice)
    if not isinstance(invoice, Mapping):
        raise FilterError(f"three_way_match: expected the invoice, got {type(invoice).__name__}")
    lines = _rows(invoice.get("lines"), "the invoice's lines")
    orders = [_po_line(row, i) for i, row in enumerate(_rows(po_lines, "po_lines"), 1)]
    receipts = [
        _receipt(row, f"receipt_lines[{i}]")
        for i, row in enumerate(_rows(receipt_lines, "receipt_lines"))
    ]
    earlier_invoices = [
        _receipt(row, f"invoiced_lines[{i}]")
        for i, row in enumerate(_rows(invoiced_lines, "invoiced_lines"))
    ]

    invoice_reasons: list[str] = []
    currency = invoice.get("currency")
    other = sorted({o["currency"] for o in orders if o["currency"] not in (None, currency)})
    if currency is not None and other:
        invoice_reasons.append(
            f"invoice in {currency}, but the purchase order is in {', '.join(other)}"
        )
    if not lines:
        invoice_reasons.append("the invoice has no lines")

    reference = invoice.get("po_reference")
    po = f"purchase order {reference}" if reference else "the purchase order"
    billed: dict[int, Decimal] = {}  # PO line index -> quantity invoiced so far
    results = []
    for position, line in enumerate(lines, 1):
        results.append(
            _match_line(line, position, orders, receipts, earlier_invoices, billed, tolerances, po)
        )

    outcome = "exception" if invoice_reasons else "matched"
    for result in results:
        outcome = max(outcome, result["outcome"], key=_OUTCOMES.index)
    reasons = [f"invoice: {r}" for r in invoice_reasons] + [
        reason
        for result in results
        if result["outcome"] == "exception"
        for reason in result["reasons"]
    ]
    return {
        "outcome": outcome,
        "reasons": reasons,
        "lines": results,
        "tolerances": {name: str(value) for name, value in tolerances.items()},
    }


def _match_line(
    line: Mapping[str, Any],
    position: int,
    orders: list[dict[str, Any]],
    receipts: list[dict[str, Any]],
    earlier_invoices: list[dict[str, Any]],
    billed: dict[int, Decimal],
    tol: dict[str, Decimal],
    po: str,
) -> dict[str, Any]:
    line_no = line.get("line_no", position)
    sku = line.get("sku")
    who = f"invoice line {line_no}"
    quantity = _number(_field(line, "quantity", who), f"{who} quantity")
    price = _number(_field(line, "unit_price", who), f"{who} unit_price")
    wanted_po_line = line.get("po_line")
    result: dict[str, Any] = {
        "line_no": line_no,
        "sku": sku,
        "po_line": None if wanted_po_line is None else str(wanted_po_line),
        "outcome": "matched",
        "invoiced_qty": str(quantity),
        "received_qty": None,
        "ordered_qty": None,
        "invoiced_before": None,
        "invoiced_price": str(price),
        "po_price": None,
        "reasons": [],
    }
    label = f"line {line_no} SKU {sku}"
    exceptions: list[str] = []
    tolerated: list[str] = []

    index, problem = _find_po_line(orders, wanted_po_line, sku, po)
    if problem:
        result.update(outcome="exception", reasons=[f"{label}: {problem}"])
        return result
    order = orders[index]
    received = sum((r["quantity"] for r in receipts if _receipt_for(r, order)), start=Decimal(0))
    before = sum(
        (r["quantity"] for r in earlier_invoices if _receipt_for(r, order)), start=Decimal(0)
    )
    billed[index] = billed.get(index, Decimal(0)) + quantity
    so_far = billed[index]
    result.update(
        po_line=order["po_line"],
        received_qty=str(received),
        ordered_qty=str(order["quantity"]),
        invoiced_before=str(before),
        po_price=str(order["unit_price"]),
    )
    earlier = "" if so_far == quantity else f" (with earlier lines: {_plain(so_far)})"
    if before:
        earlier += f" + {_plain(before)} on earlier invoices"

    for reference, what in ((received, "received"), (order["quantity"], "ordered")):
        excess = so_far + before - reference
        if excess <= 0:
            continue
        allowed = max(abs(reference) * tol["quantity"], tol["absolute"])
        text = f"invoiced qty {_plain(quantity)}{earlier} > {what} {_plain(reference)}"
        if excess > allowed:
            if what == "received" and reference == 0:
                text += ": nothing received yet"
            else:
                text += f" beyond {_percent(tol['quantity'])} %"
            exceptions.append(text)
        else:
            tolerated.append(f"{text}, within {_percent(tol['quantity'])} %")

    difference = price - order["unit_price"]
    if difference:
        allowed = max(abs(order["unit_price"]) * tol["price"], tol["absolute"])
        sign = ">" if difference > 0 else "<"
        text = f"invoiced price {price} {sign} PO price {order['unit_price']}"
        if abs(difference) > allowed:
            exceptions.append(f"{text} beyond {_percent(tol['price'])} %")
        else:
            tolerated.append(f"{text}, within {_percent(tol['price'])} %")

    if line.get("total") is not None:
        total = _number(line["total"], f"{who} total")
        expected = (quantity * price).quantize(_CENT, rounding=ROUND_HALF_UP)
        if abs(total - expected) > tol["absolute"]:
            exceptions.append(
                f"line total {total} is not qty {_plain(quantity)} x price {price} = {expected}"
            )

    if exceptions:
        result.update(outcome="exception", reasons=[f"{label}: {r}" for r in exceptions])
    elif tolerated:
        result.update(outcome="within_tolerance", reasons=[f"{label}: {r}" for r in tolerated])
    return result


def _find_po_line(
    orders: list[dict[str, Any]], wanted: Any, sku: Any, po: str
) -> tuple[int, str | None]:
    """The index of the PO line an invoice line bills, or a reason it has none."""
    if not orders:
        return -1, f"{po} has no lines"
    if wanted is not None:
        for index, order in enumerate(orders):
            if order["po_line"] == str(wanted):
                if sku is not None and order["sku"] is not None and order["sku"] != sku:
                    return index, f"PO line {wanted} is SKU {order['sku']}, not {sku}"
                return index, None
        return -1, f"PO line {wanted} is not on {po}"
    found = [i for i, order in enumerate(orders) if order["sku"] == sku]
    if not found:
        return -1, f"not on {po}"
    if len(found) > 1:
        numbers = ", ".join(orders[i]["po_line"] for i in found)
        return -1, f"SKU is on several PO lines ({numbers}); the invoice must name the PO line"
    return found[0], None


def _receipt_for(receipt: dict[str, Any], order: dict[str, Any]) -> bool:
    if receipt["po_line"] is not None:
        return bool(receipt["po_line"] == order["po_line"])
    return bool(receipt["sku"] == order["sku"])


def _po_line(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    who = f"po_lines[{position - 1}]"
    number = row.get("po_line", row.get("line_no", position))
    return {
        "po_line": str(number),
        "sku": row.get("sku"),
        "quantity": _number(_field(row, "quantity", who), f"{who} quantity"),
        "unit_price": _number(_field(row, "unit_price", who), f"{who} unit_price"),
        "currency": row.get("currency"),
    }


def _receipt(row: Mapping[str, Any], who: str) -> dict[str, Any]:
    po_line = row.get("po_line")
    if po_line is None and row.get("sku") is None:
        raise FilterError(f"three_way_match: {who} has neither po_line nor sku")
    return {
        "po_line": None if po_line is None else str(po_line),
        "sku": row.get("sku"),
        "quantity": _number(_field(row, "quantity", who), f"{who} quantity"),
    }


def _rows(value: Any, what: str) -> list[Mapping[str, Any]]:
    require_defined(value)
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
        raise FilterError(f"three_way_match: {what} must be a list of objects")
    return list(value)


def _field(row: Mapping[str, Any], name: str, who: str) -> Any:
    if row.get(name) is None:
        raise FilterError(f"three_way_match: {who} has no {name}")
    return row[name]


def _number(value: Any, what: str) -> Decimal:
    try:
        return to_decimal(value, "three_way_match")
    except FilterError as exc:
        raise FilterError(f"{exc} ({what})") from None


def _ratio(value: Any, name: str) -> Decimal:
    if isinstance(value, float):  # a ratio written in YAML (0.05); its shortest repr is exact
        value = repr(value)
    number = _number(value, name)
    if number < 0:
        raise FilterError(f"three_way_match: {name} must not be negative, got {value}")
    return number


def _plain(number: Decimal) -> str:
    """``Decimal("12.000")`` -> ``"12"``, ``Decimal("2.50")`` -> ``"2.5"`` (quantities)."""
    text = format(number.normalize(), "f")
    return text


def _percent(ratio: Decimal) -> str:
    return _plain(ratio * 100)
