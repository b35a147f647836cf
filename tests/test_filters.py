"""The retail filters: money stays exact, ids stay strings, times become UTC."""

from __future__ import annotations

import ast
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from engine.filters import (
    FilterError,
    currency_code,
    currency_exponent,
    decimal,
    from_minor_units,
    gid_id,
    id_str,
    iso_date,
    iso_utc,
    minor_units,
    money_sum,
    now_utc,
    pick,
    round_decimal,
    tag_list,
    unit_code,
)
from engine.templates import compile_value, make_environment

ROOT = Path(__file__).resolve().parent.parent

# -- money -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        ("19.9", 2, "19.90"),
        ("19.90", 2, "19.90"),
        (" 7 ", 2, "7.00"),
        (42, 2, "42.00"),
        (Decimal("3.14159"), 3, "3.142"),
        ("0.005", 2, "0.01"),  # HALF_UP, not banker's rounding (which gives 0.00)
        ("0.015", 2, "0.02"),
        ("2.5", 0, "3"),
        ("-0.005", 2, "-0.01"),  # half away from zero on both sides
        ("-19.999", 2, "-20.00"),
        ("-0.001", 2, "0.00"),  # never "-0.00"
        ("123456789012345678901234567890.125", 2, "123456789012345678901234567890.13"),
    ],
)
def test_decimal_formats_amounts_with_half_up_rounding(value, places, expected):
    assert decimal(value, places) == expected


@pytest.mark.parametrize("value", [19.9, 0.1, float("nan")])
def test_decimal_refuses_floats_because_money_must_be_exact(value):
    with pytest.raises(FilterError, match="float"):
        decimal(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "not a decimal number"),
        ("1,234.50", "not a decimal number"),
        ("NaN", "not a finite number"),
        ("Infinity", "not a finite number"),
        (None, "got None"),
        (True, "bool"),
        ([1], "got list"),
    ],
)
def test_decimal_names_what_is_wrong_with_a_bad_amount(value, reason):
    with pytest.raises(FilterError, match=reason):
        decimal(value)


def test_round_decimal_gives_a_number_for_arithmetic():
    assert round_decimal("2.675") == Decimal("2.68")
    assert round_decimal("24.90") * 3 == Decimal("74.70")
    assert round_decimal(5, 0) == Decimal("5")


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("19.90", "EUR", 1990),
        ("19.9", "usd", 1990),
        ("-5.25", "USD", -525),
        ("0.125", "EUR", 13),  # rounded HALF_UP to the currency's exponent
        ("1500", "JPY", 1500),
        ("1500.5", "JPY", 1501),
        ("1.234", "BHD", 1234),
        ("1.2345", "KWD", 1235),
        ("10", "TND", 10000),
        ("1", "KRW", 1),
    ],
)
def test_minor_units_uses_the_iso_4217_exponent(amount, currency, expected):
    assert minor_units(amount, currency) == expected


@pytest.mark.parametrize(
    ("units", "currency", "expected"),
    [(1990, "EUR", "19.90"), (500, "JPY", "500"), (1234, "BHD", "1.234"), (-5, "USD", "-0.05")],
)
def test_from_minor_units_gives_back_the_decimal_string(units, currency, expected):
    assert from_minor_units(units, currency) == expected


def test_from_minor_units_refuses_fractions_of_a_minor_unit():
    with pytest.raises(FilterError, match="whole number"):
        from_minor_units("19.5", "EUR")


def test_currency_exponents_follow_iso_4217():
    assert [currency_exponent(c) for c in ("EUR", "JPY", "KRW", "BHD", "OMR", "JOD")] == [
        2,
        0,
        0,
        3,
        3,
        3,
    ]


def test_money_sum_adds_exactly():
    assert money_sum(["0.10", "0.20"]) == "0.30"  # 0.1 + 0.2 != 0.3 in floats
    assert money_sum(["1.005", "0"]) == "1.01"
    assert money_sum([]) == "0.00"
    assert money_sum(["-5", "2.50"]) == "-2.50"


def test_money_sum_sums_one_key_of_each_object():
    tax_lines = [{"price": "1.20"}, {"price": "0.35"}]
    assert money_sum(tax_lines, "price") == "1.55"


def test_money_sum_says_which_item_lacks_the_key():
    with pytest.raises(FilterError, match="item 1 has no 'price'"):
        money_sum([{"price": "1"}, {"amount": "2"}], "price")


def test_money_sum_refuses_a_string_or_a_float_item():
    with pytest.raises(FilterError, match="list of amounts"):
        money_sum("1.00")
    with pytest.raises(FilterError, match="float"):
        money_sum(["1.00", 2.5])


# -- codes -----------------------------------------------------------------------------------


def test_currency_code_normalises_and_checks_iso_4217():
    assert currency_code(" eur ") == "EUR"
    for bad in ("EURO", "US$", "ABC", "", 978):
        with pytest.raises(FilterError):
            currency_code(bad)


@pytest.mark.parametrize(
    ("unit", "code"),
    [
        ("each", "C62"),
        ("EA", "C62"),  # every way of saying "piece" is C62
        ("H87", "H87"),  # a Rec 20 code is kept as given
        ("pcs", "C62"),
        ("Piece", "C62"),
        ("kg", "KGM"),
        ("g", "GRM"),
        ("l", "LTR"),
        ("Litre", "LTR"),
        ("ml", "MLT"),
        ("m", "MTR"),
        ("KGM", "KGM"),
        ("pair", "PR"),
    ],
)
def test_unit_code_maps_synonyms_to_un_ece_rec_20(unit, code):
    assert unit_code(unit) == code


def test_unit_code_refuses_an_unknown_unit():
    with pytest.raises(FilterError, match="unknown unit 'bushel-ish'"):
        unit_code("bushel-ish")


# -- ids -------------------------------------------------------------------------------------


def test_id_str_keeps_ids_above_2_53_exact():
    big = 2**63 - 1
    assert id_str(big) == "9223372036854775807"
    assert id_str("  00123 ") == "00123"  # leading zeros are part of the id
    assert id_str(Decimal("5234567890123456789")) == "5234567890123456789"
    assert id_str(42.0) == "42"


def test_id_str_refuses_floats_that_lost_digits():
    with pytest.raises(FilterError, match="2\\*\\*53"):
        id_str(float(2**60))
    with pytest.raises(FilterError, match="whole number"):
        id_str(1.5)
    with pytest.raises(FilterError, match="missing"):
        id_str(None)
    with pytest.raises(FilterError, match="bool"):
        id_str(True)


def test_gid_id_takes_the_id_out_of_a_graphql_global_id():
    assert gid_id("gid://shopify/Order/5234567890123456789") == "5234567890123456789"
    assert gid_id("gid://shopify/LineItem/77?variant=1") == "77"
    assert gid_id(5234567890123456789) == "5234567890123456789"  # REST ids pass through
    with pytest.raises(FilterError):
        gid_id("https://example.com/Order/1")


# -- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-04T23:30:00-05:00", "2024-03-05T04:30:00Z"),
        ("2024-03-05T01:30:00+01:00", "2024-03-05T00:30:00Z"),
        ("2024-03-05T00:30:00Z", "2024-03-05T00:30:00Z"),
        ("2024-03-05T00:30:00.987+00:00", "2024-03-05T00:30:00Z"),  # fractions dropped
        ("2024-03-05", "2024-03-05T00:00:00Z"),
        (
            dt.datetime(2024, 3, 5, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-03-05T10:00:00Z",
        ),
    ],
)
def test_iso_utc_converts_to_utc_seconds(value, expected):
    assert iso_utc(value) == expected


def test_iso_utc_refuses_a_time_without_an_offset():
    with pytest.raises(FilterError, match="no UTC offset"):
        iso_utc("2024-03-05T10:00:00")
    with pytest.raises(FilterError, match="not an ISO 8601"):
        iso_utc("05/03/2024")


def test_iso_date_keeps_the_date_as_written():
    assert iso_date("2024-03-04T23:30:00-05:00") == "2024-03-04"
    assert iso_date(iso_utc("2024-03-04T23:30:00-05:00")) == "2024-03-05"
    assert iso_date(dt.date(2024, 2, 29)) == "2024-02-29"


def test_now_utc_is_a_utc_timestamp():
    stamp = now_utc()
    assert stamp.endswith("Z") and iso_utc(stamp) == stamp


# -- lists and objects -----------------------------------------------------------------------


def test_tag_list_splits_and_drops_blanks():
    assert tag_list("a, b,,c") == ["a", "b", "c"]
    assert tag_list("") == []
    assert tag_list(None) == []
    assert tag_list([" vip ", ""]) == ["vip"]


def test_pick_keeps_only_the_named_keys_that_exist():
    assert pick({"id": 1, "email": "a@b.c", "note": "x"}, "id", "email", "phone") == {
        "id": 1,
        "email": "a@b.c",
    }
    with pytest.raises(FilterError):
        pick(["id"], "id")


# -- from templates --------------------------------------------------------------------------


def test_filters_and_globals_are_available_in_templates():
    env = make_environment()
    value = compile_value(
        env,
        {
            "total": "{{ record.total | decimal }}",
            "cents": "{{ record.total | minor_units(record.currency) }}",
            "tags": "{{ record.tags | tag_list }}",
            "stamp": "{{ now_utc() }}",
        },
    )
    out = value({"record": {"total": "5", "currency": "JPY", "tags": "a,b"}})
    assert out["total"] == "5.00" and out["cents"] == 5 and out["tags"] == ["a", "b"]
    assert out["stamp"].endswith("Z")


def test_a_filter_given_a_missing_field_reports_the_missing_field():
    env = make_environment()
    value = compile_value(env, "{{ record.total | decimal }}")
    with pytest.raises(Exception, match="^total is missing"):
        value({"record": {}})


def engine_imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "engine" / f"{module}.py").read_text())
    found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return {name for name in found if name and name.startswith("engine")}


def test_the_money_helpers_sit_below_filters_and_matching():
    """engine.money imports no engine module; engine.matching only engine.money (no cycle)."""
    assert engine_imports("money") == set()
    assert engine_imports("matching") == {"engine.money"}
    assert engine_imports("filters") == {"engine.matching", "engine.money"}
    from engine import filters, matching, money

    assert filters.FilterError is money.FilterError and filters.decimal is money.decimal
    assert filters.FILTERS["three_way_match"] is matching.three_way_match
    assert {"totals_problems", "refund_problems", "prorate", "ratio", "required"} <= set(
        filters.FILTERS
    )
