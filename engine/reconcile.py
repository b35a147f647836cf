"""Checking money: amounts the source stated against the amounts a target reported back.

An ERP computes its own taxes and totals; what it confirms can differ from what the shop
charged. A ``reconcile`` step compares each pair as :class:`~decimal.Decimal`, never as
floats. Accepted as amounts: decimal strings, ints and Decimals. Anything else on either
side (nothing at all, a float, text that is not a number, a boolean) is a difference in
itself: a target that reported nothing, or a number that went through a float, cannot be
trusted with money.

:func:`compare` returns the figures of every amount and, for those that differ beyond the
tolerance, one sentence a person can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.errors import RecordError


@dataclass
class Comparison:
    """The result of reconciling a record's amounts."""

    figures: dict[str, dict[str, Any]]  # name -> expected, actual, difference, tolerance
    differences: list[str]  # one sentence per amount that does not match

    @property
    def matches(self) -> bool:
        return not self.differences


def amount(value: Any) -> Decimal | None:
    """``value`` as an exact amount, or None when it is not one (a float included)."""
    if isinstance(value, bool) or isinstance(value, float):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            return None
        return parsed if parsed.is_finite() else None
    return None


def tolerance(value: Any, name: str) -> Decimal:
    """A tolerance: a decimal of 0 or more (None: 0). A float is read by its shortest
    decimal form (``0.01`` is 0.01); anything else is the flow's mistake, not the record's."""
    if value is None or value == "":
        return Decimal(0)
    if isinstance(value, float):
        value = repr(value)
    found = amount(value)
    if found is None or found < 0:
        raise RecordError(
            f"reconcile: the tolerance of {name} must be a decimal of 0 or more, such as "
            f'"0.01"; got {_shown(value)}'
        )
    return found


def compare(pairs: list[tuple[str, Any, Any, Decimal]]) -> Comparison:
    """Compare ``(name, expected, actual, tolerance)`` pairs; see the module docstring."""
    figures: dict[str, dict[str, Any]] = {}
    differences: list[str] = []
    for name, expected_value, actual_value, allowed in pairs:
        expected, actual = amount(expected_value), amount(actual_value)
        figure: dict[str, Any] = {
            "expected": _figure(expected, expected_value),
            "actual": _figure(actual, actual_value),
            "difference": None,
            "tolerance": str(allowed),
        }
        figures[name] = figure
        if expected is None or actual is None:
            said = (
                f"the source says {expected}"
                if expected is not None
                else f"the source stated {_unusable(expected_value)}"
            )
            reported = (
                f"the target {actual}"
                if actual is not None
                else f"the target reported {_unusable(actual_value)}"
            )
            differences.append(f"{name}: {said}, {reported}; it cannot be checked")
            continue
        difference = actual - expected
        figure["difference"] = str(difference)
        if abs(difference) > allowed:
            within = f" (tolerance {allowed})" if allowed else ""
            differences.append(
                f"{name}: the source says {expected}, the target {actual}, a difference of "
                f"{difference}{within}"
            )
    return Comparison(figures, differences)


def _figure(parsed: Decimal | None, raw: Any) -> Any:
    """How an amount is kept in the figures: its exact digits as text, or what it was
    instead (a float stays a JSON number, so that it is told apart from text)."""
    if parsed is not None:
        return str(parsed)
    if raw is None or isinstance(raw, str | bool | float):
        return raw
    return _shown(raw)


def _unusable(value: Any) -> str:
    if value is None or value == "":
        return "nothing"
    if isinstance(value, float):
        return f"the float {value!r}, which is not exact"
    return f"{_shown(value)}, which is not an amount"


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, dict | list):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return repr(value)
