"""Mapping files: every construct, every problem with its place, one compiled function."""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from engine.errors import MappingError
from engine.mapping import CompiledMapping, load_mapping
from engine.templates import CONDITION_HINT, UndefinedValueError, make_environment

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def env():
    return make_environment()


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return str(path)


def load(env, tmp_path, text, name="m.yaml"):
    mapping, problems = load_mapping(write(tmp_path, text, name), env)
    assert mapping is not None, "\n".join(map(str, problems))
    return mapping


def problems_of(env, tmp_path, text):
    mapping, problems = load_mapping(write(tmp_path, text), env)
    assert mapping is None
    return problems


def shopify_orders() -> list[dict]:
    lines = (FIXTURES / "shopify_orders.ndjson").read_text().splitlines()
    return [json.loads(line, parse_float=Decimal) for line in lines]


# -- the constructs --------------------------------------------------------------------------


def test_templates_constants_and_nested_objects(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        """
        mapping: demo
        description: a demo
        fields:
          order_id: "shop:{{ record.id }}"
          channel: web
          quantity: "{{ record.qty }}"
          customer:
            email: "{{ record.email | default(none) }}"
            vip: false
        """,
    )
    assert isinstance(mapping, CompiledMapping)
    assert (mapping.name, mapping.description) == ("demo", "a demo")
    assert mapping({"id": 2**60, "qty": 3}) == {
        "order_id": "shop:1152921504606846976",
        "channel": "web",
        "quantity": 3,
        "customer": {"email": None, "vip": False},
    }


def test_the_name_defaults_to_the_file_stem(env, tmp_path):
    mapping = load(env, tmp_path, "fields: {a: 1}\n", name="orders_v2.yaml")
    assert mapping.name == "orders_v2"


def test_a_list_spec_builds_one_object_per_item(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        """
        fields:
          lines:
            each: "{{ record.items }}"
            as: line
            fields:
              line_no: "{{ loop.index }}"
              sku: "{{ line.sku }}"
              last: "{{ loop.last }}"
              order: "{{ record.id }}"
        """,
    )
    record = {"id": "o1", "items": [{"sku": "A"}, {"sku": "B"}]}
    assert mapping(record)["lines"] == [
        {"line_no": 1, "sku": "A", "last": False, "order": "o1"},
        {"line_no": 2, "sku": "B", "last": True, "order": "o1"},
    ]
    assert mapping({"id": "o2", "items": []})["lines"] == []


def test_the_loop_variable_defaults_to_item(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        'fields: {skus: {each: "{{ record.lines }}", fields: {sku: "{{ item.sku }}"}}}',
    )
    assert mapping({"lines": [{"sku": "A"}]}) == {"skus": [{"sku": "A"}]}


def test_list_specs_nest_and_inner_items_see_outer_ones(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        """
        fields:
          shipments:
            each: "{{ record.shipments }}"
            as: shipment
            fields:
              parcels:
                each: "{{ shipment.parcels }}"
                as: parcel
                fields:
                  label: "{{ shipment.id }}-{{ parcel.n }}-{{ loop.index }}"
        """,
    )
    record = {
        "shipments": [{"id": "s1", "parcels": [{"n": 1}, {"n": 2}]}, {"id": "s2", "parcels": []}]
    }
    assert mapping(record) == {
        "shipments": [
            {"parcels": [{"label": "s1-1-1"}, {"label": "s1-2-2"}]},
            {"parcels": []},
        ]
    }


def test_each_may_be_any_expression_giving_a_list(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        """
        fields:
          physical:
            each: "{{ record.lines | selectattr('requires_shipping') }}"
            fields: {sku: "{{ item.sku }}"}
        """,
    )
    lines = [{"sku": "A", "requires_shipping": True}, {"sku": "G", "requires_shipping": False}]
    assert mapping({"lines": lines}) == {"physical": [{"sku": "A"}]}


def test_an_optional_object_is_null_when_its_condition_is_false(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        """
        fields:
          ship_to:
            when: record.shipping_address
            fields:
              city: "{{ record.shipping_address.city }}"
        """,
    )
    assert mapping({"shipping_address": {"city": "Leeds"}}) == {"ship_to": {"city": "Leeds"}}
    assert mapping({"shipping_address": None}) == {"ship_to": None}


def test_templates_see_the_context_keys(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        'fields: {key: "{{ meta.key }}", store: "{{ vars.store }}", id: "{{ record.id }}"}',
    )
    context = {"vars": {"store": "S1"}, "meta": {"key": "k9"}, "run": {}, "record": "ignored"}
    assert mapping({"id": 1}, context) == {"key": "k9", "store": "S1", "id": 1}


def test_each_record_gets_new_objects(env, tmp_path):
    mapping = load(env, tmp_path, "fields: {tags: [a, b], meta: {n: 1}}")
    first = mapping({})
    first["tags"].append("x")
    assert mapping({}) == {"tags": ["a", "b"], "meta": {"n": 1}}


# -- failures on a record --------------------------------------------------------------------

LINES_MAPPING = """
    mapping: lines_demo
    fields:
      order_id: "{{ record.id }}"
      lines:
        each: "{{ record.line_items }}"
        as: line
        fields:
          sku: "{{ line.sku }}"
          qty: "{{ line.quantity }}"
"""


def test_a_missing_field_is_named_in_the_records_terms_with_the_mapping_and_the_key(env, tmp_path):
    mapping = load(env, tmp_path, LINES_MAPPING)
    record = {"id": 1042, "line_items": [{"sku": "A", "quantity": 1}, {"quantity": 1}]}
    with pytest.raises(MappingError) as caught:
        mapping(record, {"meta": {"key": "1042"}})
    error = caught.value
    assert (error.mapping, error.field, error.record_key) == ("lines_demo", "lines[1].sku", "1042")
    assert isinstance(error, UndefinedValueError)
    assert str(error) == (
        "record 1042: line_items[1].sku is missing (mapping lines_demo: field lines[1].sku)"
    )
    assert error.source == "{{ line.sku }}" and "no field 'sku'" in error.reason


def test_every_problem_of_a_record_is_reported_at_once(env, tmp_path):
    mapping = load(env, tmp_path, LINES_MAPPING)
    record = {"line_items": [{"quantity": 1}, {"sku": "B"}, {"sku": "C", "quantity": 2}]}
    with pytest.raises(MappingError) as caught:
        mapping(record)
    assert [str(p) for p in caught.value.problems] == [
        "id is missing",
        "line_items[0].sku is missing",
        "line_items[1].quantity is missing",
    ]
    assert str(caught.value) == (
        "id is missing; line_items[0].sku is missing; line_items[1].quantity is missing "
        "(mapping lines_demo: fields order_id, lines[0].sku, lines[1].qty)"
    )


def test_a_field_read_by_several_outputs_is_reported_once(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        """
        fields:
          total: "{{ record.total | decimal }}"
          cents: "{{ record.total | minor_units('EUR') }}"
          again: "{{ record.total }}"
        """,
    )
    with pytest.raises(MappingError) as caught:
        mapping({})
    assert [str(p) for p in caught.value.problems] == ["total is missing"]


def test_the_label_template_names_the_record_in_errors(env, tmp_path):
    mapping = load(
        env,
        tmp_path,
        """
        mapping: orders
        label: "order {{ record.name }} (shop:{{ record.id }})"
        fields:
          id: "{{ record.id }}"
          total: "{{ record.total_price | decimal }}"
        """,
    )
    with pytest.raises(MappingError) as caught:
        mapping({"id": 7, "name": "#1001"}, {"meta": {"key": "7"}})
    assert str(caught.value) == (
        "order #1001 (shop:7): total_price is missing (mapping orders: field total)"
    )
    # a label that fails itself falls back to the record key
    with pytest.raises(MappingError) as caught:
        mapping({"id": 7}, {"meta": {"key": "7"}})
    assert str(caught.value) == "record 7: total_price is missing (mapping orders: field total)"


def test_a_label_that_is_not_a_template_is_a_problem_in_the_file(env, tmp_path):
    problems = problems_of(env, tmp_path, "label: order\nfields: {a: 1}\n")
    assert problems[0].path == "label" and "`label` is a template" in problems[0].message


def test_an_empty_value_where_one_is_required_is_named(env, tmp_path):
    mapping = load(env, tmp_path, "fields: {sku: \"{{ record | required('sku') }}\"}")
    for record, state in (({}, "missing"), ({"sku": None}, "empty"), ({"sku": " "}, "empty")):
        with pytest.raises(UndefinedValueError) as caught:
            mapping(record)
        assert str(caught.value).startswith(f"sku is {state}")
    assert mapping({"sku": "A-1"}) == {"sku": "A-1"}


def test_a_source_list_that_is_not_a_list_is_named(env, tmp_path):
    mapping = load(env, tmp_path, LINES_MAPPING)
    with pytest.raises(MappingError, match="`each` must give a list, got null") as caught:
        mapping({"id": 1, "line_items": None})
    assert caught.value.field == "lines"


def test_a_failing_filter_names_the_records_field_and_the_reason(env, tmp_path):
    mapping = load(env, tmp_path, 'fields: {total: "{{ record.total | decimal }}"}')
    with pytest.raises(MappingError, match=r"^total is invalid \(decimal: refusing the float"):
        mapping({"total": 19.9})


def test_a_failure_in_an_optional_object_condition_is_named(env, tmp_path):
    mapping = load(env, tmp_path, "fields: {ship_to: {when: record.address.city, fields: {a: 1}}}")
    with pytest.raises(MappingError) as caught:
        mapping({})
    assert caught.value.field == "ship_to" and str(caught.value).startswith("address is missing")


# -- compiled once ---------------------------------------------------------------------------


def test_a_mapping_compiles_to_one_function_and_records_compile_nothing(env, monkeypatch):
    from engine import pycodegen

    jinja, python = [], []
    original = env.compile
    monkeypatch.setattr(env, "compile", lambda *a, **k: jinja.append(1) or original(*a, **k))
    monkeypatch.setattr(
        pycodegen, "compile", lambda *a, **k: python.append(1) or compile(*a, **k), raising=False
    )
    mapping, _ = load_mapping(str(ROOT / "mappings/shopify_order_to_canonical.yaml"), env)
    # the order with its nine lists as loops inside one function, and the label
    assert (len(python), len(jinja)) == (2, 0)
    for order in shopify_orders():
        mapping(order)
    assert (len(python), len(jinja)) == (2, 0)  # records never compile anything


def test_the_shipped_shopify_mapping_maps_every_fixture_order(env):
    mapping, problems = load_mapping(str(ROOT / "mappings/shopify_order_to_canonical.yaml"), env)
    assert problems == []
    orders = {o["name"]: mapping(o) for o in shopify_orders()}
    assert len(orders) == 10
    first = orders["#1001"]
    assert first["order_id"] == "shopify:5234567890123456700"  # > 2**53, exact
    assert first["created_at"] == "2024-03-04T14:15:02Z"
    assert first["lines"][0] == {
        "line_no": 1,
        "external_id": "14000000000000670000",
        "product_id": "8099999999999999001",
        "variant_id": "8100000000000000001",
        "sku": "TEE-BLK-M",
        "gtin": None,
        "title": "Organic Tee - Black / M",
        "quantity": 2,
        "unit_price": "24.90",
        "discount": "0.00",
        "discount_allocations": [],
        "tax": "4.11",
        "tax_lines": [{"title": "Sales tax", "rate": "0.0825", "amount": "4.11"}],
        "total": "49.80",
        "properties": [],
        "gift_card": False,
    }
    pickup = orders["#1002"]
    assert pickup["fulfillment"] == {"method": "pickup", "pickup_store": "61500000000000000011"}
    assert pickup["ship_to"] is None and pickup["shipping_lines"] == []
    assert orders["#1007"]["fulfillment"]["method"] == "local"
    assert orders["#1004"]["customer"]["email"] is None  # phone-only checkout
    assert orders["#1008"]["status"]["state"] == "cancelled"
    assert orders["#1009"]["customer"]["id"] is None  # guest
    assert orders["#1005"]["tags"] == ["wholesale", "repeat"]


# -- problems in the file, each with its place -----------------------------------------------


def test_unknown_top_level_keys_are_reported_with_line_and_suggestion(env, tmp_path):
    problems = problems_of(env, tmp_path, "mapping: x\nfeilds:\n  a: 1\n")
    messages = [str(p) for p in problems]
    unknown = next(p for p in problems if "unknown key" in p.message)
    assert (unknown.line, unknown.column) == (2, 1)
    assert "did you mean 'fields'" in unknown.message
    assert any("missing `fields:`" in m for m in messages)


def test_template_errors_point_at_the_field(env, tmp_path):
    problems = problems_of(
        env,
        tmp_path,
        """
        fields:
          id: "{{ record.id }}"
          total: "{{ record.total | decimals }}"
          lines:
            each: "{{ record.items }}"
            fields:
              sku: "{{ item.sku "
        """,
    )
    by_path = {p.path: p for p in problems}
    total = by_path["fields.total"]
    assert total.line == 3 and "did you mean 'decimal'" in total.message
    sku = by_path["fields.lines.fields.sku"]
    assert sku.line == 7 and "syntax error" in sku.message
    assert all(p.file.endswith("m.yaml") for p in problems)


def test_an_error_in_a_multi_line_template_points_at_its_own_line(env, tmp_path):
    problems = problems_of(
        env,
        tmp_path,
        """
        fields:
          total: >-
            {{ record.a
               | nope }}
        """,
    )
    assert [p.line for p in problems] == [4]


def test_every_problem_of_the_file_is_reported_at_once(env, tmp_path):
    problems = problems_of(
        env,
        tmp_path,
        """
        fields:
          a: "{{ record.a | nope }}"
          b: {{ record.b }}
          c: "{% if x %}1{% endif %}"
          lines:
            each: record.items
            as: record
            extra: 1
          since: 2024-01-01
          on: true
          ship_to:
            when: "{{ record.address }}"
            fields: {}
        """,
    )
    messages = "\n".join(f"{p.line}: {p.message}" for p in problems)
    assert len(problems) == 10, messages
    for expected in (
        "2: unknown filter 'nope'",
        "3: this looks like a Jinja template left unquoted",
        "4: statements",
        "8: a list spec has only `each`, `as`, `fields`; 'extra'",
        "6: a list spec needs `fields:`",
        "6: each takes a template",
        "7: as: record would hide `record`",
        "9: YAML read 2024-01-01 as a date",
        "10: field names are text; YAML read True",
        f"12: {CONDITION_HINT}",
    ):
        assert any(line.startswith(expected) for line in messages.splitlines()), (
            f"missing {expected!r} in:\n{messages}"
        )


def test_unknown_names_are_warned_about_but_load(env, tmp_path):
    mapping, problems = load_mapping(write(tmp_path, 'fields: {a: "{{ recrod.id }}"}'), env)
    assert mapping is not None
    (warning,) = problems
    assert warning.severity == "warning" and "did you mean 'record'" in warning.message


def test_an_empty_or_unreadable_file_is_a_problem(env, tmp_path):
    assert load_mapping(write(tmp_path, ""), env)[0] is None
    mapping, problems = load_mapping(str(tmp_path / "missing.yaml"), env)
    assert mapping is None and "cannot read" in problems[0].message
    assert problems_of(env, tmp_path, "fields: {}")[0].message.startswith("`fields` is empty")
    assert "YAML mapping" in problems_of(env, tmp_path, "- a\n- b\n")[0].message
