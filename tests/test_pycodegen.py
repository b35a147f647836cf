"""Values compiled to plain Python (engine/pycodegen.py) behave as Jinja's compiled code.

Every value and condition is compiled both ways (``jinja=True`` keeps Jinja's own code
generator) and run on the same variables: the results, their types and the errors
(class, message, and the record's field they name) must be identical. The tables cover
missing fields, null, Decimals, lists, loop variables, filters with arguments, list and
optional-object specs, and the sandbox's refusals and meters.
"""

from __future__ import annotations

import io
import itertools
import json
import keyword
import tokenize
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import pycodegen
from engine.mapping import load_mapping
from engine.templates import (
    Condition,
    Renderer,
    SandboxViolation,
    TemplateProblem,
    TemplateRenderError,
    _tree,
    compile_condition,
    compile_value,
    is_template,
    make_environment,
    parse_condition,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env():
    return make_environment()


RECORD = {
    "id": 5234567890123456700,
    "name": "#1001",
    "email": "",
    "total": Decimal("12.50"),
    "count": 3,
    "ratio": 0.25,
    "flag": False,
    "none": None,
    "text": "Hello, World",
    "tags": "a, b,,c",
    "items": [1, 2, 3],
    "empty": [],
    "lines": [
        {"sku": "A", "qty": 2, "price": "1.10", "tax_lines": [{"price": "0.20"}]},
        {"sku": "", "qty": 1, "price": Decimal("3.005"), "tax_lines": []},
        {"qty": 1, "price": "bad"},
    ],
    "customer": {"first_name": "Ada", "last_name": None, "email": "ada@example.com"},
    "nested": {"a": {"b": {"c": "deep"}}},
    "address": None,
    "created_at": "2024-03-04T15:15:02+01:00",
    "zone": "2024-03-04T15:15:02",
    "keys": {"items": "field named items", "get": 1},
    "map": {"PICK_UP": "pickup"},
}

SCOPES = [
    {"record": RECORD, "vars": {"rate": Decimal("0.19"), "who": "ops"}, "meta": {"key": "k1"}},
    {"record": {}, "vars": {}, "meta": {}},
    {"record": None, "vars": {"rate": None}},
    {"record": {"lines": None, "customer": {}, "total": "7", "items": "abc"}},
    {"record": RECORD, "line": RECORD["lines"][1], "loop": {"index": 2, "first": False}},
    {"record": [1, 2], "parent": {"id": 1}},
]

EXPRESSIONS = [
    # names and fields, present and missing
    "{{ record }}",
    "{{ record.id }}",
    "{{ record.name }}",
    "{{ record.missing }}",
    "{{ record.nested.a.b.c }}",
    "{{ record.nested.a.x.c }}",
    "{{ record.none.x }}",
    "{{ record.address.city }}",
    "{{ record['name'] }}",
    "{{ record['missing'] }}",
    "{{ record.lines[0].sku }}",
    "{{ record.lines[5].sku }}",
    "{{ record.lines[-1] }}",
    "{{ record.items[1:] }}",
    "{{ record.items[::2] }}",
    "{{ record.text[:5] }}",
    "{{ record.keys.items }}",
    "{{ record.keys.get }}",
    "{{ record.items.append }}",
    "{{ record.text.upper() }}",
    "{{ record.map.get(record.name, 'ship') }}",
    "{{ record.map.get('PICK_UP') }}",
    "{{ nobody }}",
    "{{ nobody.field }}",
    "{{ vars.rate }}",
    "{{ vars.who ~ '!' }}",
    "{{ line.sku }}",
    "{{ loop.index }}",
    "{{ parent.id }}",
    "{{ meta.key }}",
    # text around expressions
    "order {{ record.name }} of {{ record.count }}",
    "{{ record.total }} EUR, 100%",
    "%s {{ record.name }} %(x)s",
    "{{ record.none }}-{{ record.flag }}-{{ record.ratio }}",
    "x {{ record.missing }} y",
    # default and tests
    "{{ record.missing | default('d') }}",
    "{{ record.missing | default(none) }}",
    "{{ record.email | default('none given', true) }}",
    "{{ record.email | default('none given') }}",
    "{{ record.none | default([], true) }}",
    "{{ record.missing | default({}, true) }}",
    "{{ record.missing | d(7) }}",
    "{{ record.missing | default }}",
    "{{ record.missing | default(record.name) }}",
    "{{ record.name | default(record.missing.x) }}",
    "{{ record.missing | default(record.count, true) }}",
    "{{ record.missing | default(default_value='k') }}",
    "{{ record.keys.items | default('x') }}",
    "{{ record | default('x') }}",
    "{{ nobody | default('x') }}",
    "{{ (record.customer | default({})).first_name | default(none) }}",
    "{{ record.missing is defined }}",
    "{{ record.name is defined }}",
    "{{ record.missing is undefined }}",
    "{{ record.none is none }}",
    "{{ record.none is not none }}",
    "{{ record.missing is none }}",
    "{{ record.missing is not defined }}",
    "{{ record.count is number }}",
    "{{ record.count is divisibleby(3) }}",
    "{{ record.text is string }}",
    "{{ record.items is sequence }}",
    "{{ record.count is eq(3) }}",
    # operators
    "{{ record.count + 1 }}",
    "{{ record.total * record.count }}",
    "{{ record.total * 2 - 1 }}",
    "{{ record.count * 'ab' }}",
    "{{ record.items * 2 }}",
    "{{ record.total / 4 }}",
    "{{ record.count // 2 }}",
    "{{ record.count % 2 }}",
    "{{ 'n=%d' % record.count }}",
    "{{ record.count ** 3 }}",
    "{{ -record.total }}",
    "{{ +record.count }}",
    "{{ record.missing + 1 }}",
    "{{ record.none + 1 }}",
    "{{ record.count > 2 and record.total < 20 }}",
    "{{ record.flag or record.name }}",
    "{{ not record.flag }}",
    "{{ not record.missing }}",
    "{{ 1 < record.count <= 3 }}",
    "{{ 'b' in record.tags }}",
    "{{ record.missing in [] }}",
    "{{ 2 not in record.items }}",
    "{{ record.missing == 1 }}",
    "{{ record.name ~ record.count ~ record.none }}",
    "{{ 'a' if record.flag else 'b' }}",
    "{{ 'a' if record.missing else 'b' }}",
    "{{ record.count if record.count > 1 else record.missing }}",
    # literals
    "{{ [record.name, record.count] }}",
    "{{ [record.missing] }}",
    "{{ (record.name, record.count) }}",
    "{{ (record.name,) }}",
    "{{ {'a': record.name, 'b': [1, 2]} }}",
    "{{ {'a': record.missing} }}",
    "{{ {'PICK_UP': 'pickup'}.get(record.name, 'ship') }}",
    "{{ 12345678901234567890123 }}",
    "{{ 'it''s' }}",
    '{{ "quote \' and \\" and \\\\" }}',
    # filters: retail, Jinja's, with arguments
    "{{ record.id | id_str }}",
    "{{ record.missing | id_str }}",
    "{{ record.total | decimal }}",
    "{{ record.lines[1].price | round_decimal }}",
    "{{ record.lines | money_sum('price') }}",
    "{{ record.lines[0].tax_lines | money_sum('price') }}",
    "{{ record.created_at | iso_utc }}",
    "{{ record.zone | iso_utc }}",
    "{{ record.tags | tag_list }}",
    "{{ record.lines[1] | required('sku') }}",
    "{{ record.lines[2] | required('sku') }}",
    "{{ record | pick('id', 'name') }}",
    "{{ record.customer | omit('email') }}",
    "{{ record.text | lower | replace('o', '0') }}",
    "{{ record.text | replace('l', 'L', 2) }}",
    "{{ record.items | join(', ') }}",
    "{{ record.lines | map(attribute='sku', default='-') | join('/') }}",
    "{{ record.lines | map(attribute='qty') | sum }}",
    "{{ record.lines | map(attribute='tax_lines') | sum(start=[]) }}",
    "{{ record.lines | selectattr('sku') | list | length }}",
    "{{ record.items | select('odd') | list }}",
    "{{ record.items | select }}",
    "{{ record.items | map('string') | list }}",
    "{{ record.items | reject('even') | first }}",
    "{{ record.empty | first }}",
    "{{ record.items | last }}",
    "{{ record.text | length }}",
    "{{ record.missing | length }}",
    "{{ record.count | string }}",
    "{{ record.text | truncate(8) }}",
    "{{ record.text | center(20) }}",
    "{{ record.text | format }}",
    "{{ '%s-%s' | format(record.name, record.count) }}",
    "{{ record.customer | tojson }}",
    "{{ record.customer | dictsort }}",
    "{{ record.items | batch(2) | list }}",
    "{{ record.count | int }}",
    "{{ record.text | int(-1) }}",
    "{{ record.ratio | round(1) }}",
    "{{ record.text | attr('upper') }}",
    "{{ record.customer | attr('first_name') }}",
    "{{ record.items | sort(reverse=true) }}",
    "{{ record.items | unique | list }}",
    "{{ record.lines | groupby('qty') | list | length }}",
    "{{ record.customer.first_name | default(none) | title }}",
    "{{ record.text | wordcount }}",
    "{{ range(3) | list }}",
    "{{ range(record.count) | list }}",
    "{{ now_utc() | length }}",
    "{{ record.text.split(', ') }}",
    "{{ record.text.center(30) }}",
    "{{ '{}!'.format(record.name) }}",
    "{{ (record.text | attr('zfill'))(20) }}",
    "{{ record.items | list | select | list }}",
    "{{ record.total | money_sum }}",
    "{{ record.missing | tag_list }}",
    "{{ record.text | iso_date }}",
    "{{ (record.items | select) }}",
    "{{ (record.missing | select) is defined }}",
    "{{ record.missing | select | list }}",
    "{{ record.lines | reject | list }}",
    "{{ [0, 1, '', 'a', none, [], [0]] | select | list }}",
    "{{ [0, 1, '', 'a', none, [], [0]] | reject | list }}",
    "{{ record.lines | map(attribute='tax_lines.0.price') | list }}",
    "{{ record.lines | map(attribute='tax_lines.0.price', default='-') | list }}",
    "{{ record.lines | map(attribute=0) | list }}",
    "{{ [[1, 2], [3]] | map(attribute=1, default=none) | list }}",
    "{{ record.lines | map(attribute='sku') | list }}",
    "{{ record.lines | map(attribute='sku', default=record.name) | join(',') }}",
    "{{ record.lines | map(attribute='²') | list }}",
    "{{ record.lines | map(attribute='sku', other=1) | list }}",
    "{{ (record.missing | map(attribute='sku')) is defined }}",
    "{{ record.items | map('string') | join }}",
    "{{ [record.items | select] }}",
]


def _outcome(run: Any, scope: dict[str, Any]) -> tuple[Any, ...]:
    try:
        value = run(scope)
    except Exception as exc:  # noqa: BLE001 - the outcome is the error itself
        where = tuple((p.field, p.where, p.state, p.reason) for p in getattr(exc, "problems", ()))
        return ("error", type(exc), str(exc), where)
    return ("value", type(value), _deep_types(value), value)


def _deep_types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_types(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deep_types(v) for v in value]
    return type(value).__name__


def _both(env, source: Any) -> tuple[Renderer, Renderer]:
    spec = _tree(env, source, [])
    python = Renderer(env, spec, source)
    jinja = Renderer(env, _tree(env, source, []), source, jinja=True)
    return python, jinja


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_a_value_gives_what_jinja_gives_on_every_scope(env, source):
    python, jinja = _both(env, source)
    assert python.python and not jinja.python
    for scope in SCOPES:
        assert _outcome(python, scope) == _outcome(jinja, scope), scope


def test_the_table_covers_values_and_errors_of_every_kind(env):
    kinds = set()
    for source, scope in itertools.product(EXPRESSIONS, SCOPES):
        kinds.add(_outcome(_both(env, source)[0], scope)[1])
    assert {str, int, Decimal, bool, list, dict, type(None), tuple} <= kinds
    assert {TemplateRenderError} | {
        k for k in kinds if isinstance(k, type) and issubclass(k, TemplateRenderError)
    } >= {TemplateRenderError}
    names = {k.__name__ for k in kinds if isinstance(k, type)}
    assert {"UndefinedValueError", "TemplateRenderError", "SandboxViolation"} <= names


CONDITIONS = [
    "record.flag",
    "record.count > 2",
    "record.missing",
    "record.missing | default(false)",
    "record.name == '#1001' and record.total > 10",
    "record.address | default(none)",
    "(record.address | default(none) or {}).city | default(none)",
    "record.lines | selectattr('sku') | list",
    "record.nested.a.b.c == 'deep'",
    "record.none.x",
    "'pickup' in (record.map.values() | list)",
    "record.lines[2] | required('sku')",
    "vars.rate is none",
    "nobody",
    "record.text.startswith('Hello')",
    "record.count * 'x' == 'xxx'",
]


@pytest.mark.parametrize("source", CONDITIONS)
def test_a_condition_gives_what_jinja_gives_on_every_scope(env, source):
    node = parse_condition(env, source)
    python = Condition(env, source, node)
    jinja = Condition(env, source, parse_condition(env, source), jinja=True)
    assert python.python and not jinja.python
    for scope in SCOPES:
        assert _outcome(python, scope) == _outcome(jinja, scope), scope


# -- mappings: list specs, optional objects, loop variables ----------------------------------
MAPPINGS = [
    """
fields:
  id: "{{ record.id | id_str }}"
  lines:
    each: "{{ record.lines }}"
    as: line
    fields:
      index: "{{ loop.index }}"
      first: "{{ loop.first }}"
      last: "{{ loop.last }}"
      of: "{{ loop.length }}"
      sku: "{{ line | required('sku') }}"
      qty: "{{ line.qty }}"
      price: "{{ line.price | decimal }}"
      order: "{{ record.name }}"
      taxes:
        each: "{{ line.tax_lines | default([], true) }}"
        as: tax
        fields:
          amount: "{{ tax.price | decimal }}"
          line_no: "{{ loop.index }}"
          sku: "{{ line.sku }}"
""",
    """
fields:
  ship_to:
    when: record.address | default(none)
    fields:
      city: "{{ record.address.city }}"
  customer:
    when: record.customer | default(none)
    fields:
      name: "{{ record.customer.first_name }} {{ record.customer.last_name }}"
      tags:
        each: "{{ record.tags | tag_list }}"
        fields:
          tag: "{{ item }}"
  items:
    each: "{{ record.items }}"
    fields:
      value: "{{ item * 2 }}"
  fixed: [1, "two", null, 2.5, true]
  mixed: ["{{ record.count }}", {a: "{{ record.name }}"}]
""",
    """
fields:
  outer:
    each: "{{ record.items }}"
    as: n
    fields:
      inner:
        each: "{{ range(n) }}"
        as: m
        fields:
          product: "{{ n * m }}"
          cell: "{{ loop.index0 }}"
      total: "{{ n + record.count }}"
  after: "{{ record.missing | default('after') }}"
""",
    """
label: "order {{ record.name | default('?') }}"
fields:
  none:
    each: "{{ record.none }}"
    fields: {x: "{{ item }}"}
""",
    """
fields:
  text:
    each: "{{ record.text }}"
    fields: {x: "{{ item }}"}
""",
    """
fields:
  generated:
    each: "{{ record.items | select('odd') }}"
    as: odd
    fields: {x: "{{ odd }}", y: "{{ loop.index }}"}
  long:
    each: "{{ range(200) }}"
    as: n
    fields:
      square: "{{ n * n }}"
  tuple:
    each: "{{ (1, 2) }}"
    fields: {x: "{{ item }}"}
  mapping:
    each: "{{ record.customer }}"
    fields: {x: "{{ item }}"}
""",
]


def _load(env, tmp_path, text: str):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    mapping, problems = load_mapping(str(path), env)
    assert mapping is not None, problems
    return mapping


@pytest.mark.parametrize("text", MAPPINGS)
def test_a_mapping_gives_what_jinja_gives_on_every_record(env, tmp_path, text):
    mapping = _load(env, tmp_path, text)
    renderer = mapping._renderer
    jinja = Renderer(env, renderer._spec, renderer.source, jinja=True)
    assert renderer.python
    for scope in SCOPES:
        assert _outcome(renderer, scope) == _outcome(jinja, scope), scope
        assert _outcome(lambda s: mapping(s.get("record"), s), scope)[0] in ("value", "error")


def test_the_shipped_shopify_mapping_gives_what_jinja_gives(env):
    mapping, problems = load_mapping(str(ROOT / "mappings/shopify_order_to_canonical.yaml"), env)
    assert mapping is not None, problems
    jinja = Renderer(env, mapping._renderer._spec, None, jinja=True)
    lines = (ROOT / "tests/fixtures/shopify_orders.ndjson").read_text().splitlines()
    orders = [json.loads(line, parse_float=Decimal) for line in lines]
    broken = [
        {k: v for k, v in orders[0].items() if k != "currency"},
        {**orders[1], "line_items": [{**orders[1]["line_items"][0], "sku": ""}]},
        {**orders[2], "customer": None, "billing_address": {"address1": "x"}},
        {**orders[3], "line_items": None},
    ]
    for order in orders + broken:
        scope = {"record": order, "vars": {}, "meta": {"key": "k"}, "run": {}}
        assert _outcome(mapping._renderer, scope) == _outcome(jinja, scope)


# -- the sandbox, unchanged -------------------------------------------------------------------
REFUSED = [
    "{{ record.text | attr('__class__') }}",
    "{{ record.text['__cl' ~ 'ass__'] }}",
    "{{ record.text.format.__globals__ }}",
    "{{ '{0.__class__}'.format(record.text) }}",
    "{{ record.items.append(4) }}",
    "{{ record.customer.update({'x': 1}) }}",
    "{{ range(100000) }}",
    "{{ 2 ** 100000 }}",
    "{{ 'x' * 2000000 }}",
    "{{ [1] * 2000000 }}",
    "{{ record.text | center(2000000) }}",
    "{{ '%02000000d' % 1 }}",
    "{{ record.text.center(2000000) }}",
    "{{ ','.join(['x'] * 600000) }}",
    "{{ [[0] * 1000] * 2000 }}",
]


@pytest.mark.parametrize("source", REFUSED)
def test_the_sandbox_refuses_in_plain_python_what_it_refuses_in_jinja(env, source):
    scope = SCOPES[0]
    try:
        python, jinja = _both(env, source)
    except Exception as exc:  # refused at load (a reach for Python internals)
        assert "Python internals" in str(exc)
        return
    outcome = _outcome(python, scope)
    assert outcome == _outcome(jinja, scope)
    assert outcome[0] == "error" and outcome[1] is SandboxViolation


def test_a_render_that_builds_too_much_in_all_is_stopped(env, tmp_path):
    # each item builds 900,000 characters: under the one-operation limit, over the
    # render's budget after a dozen items, inside a list spec
    mapping = _load(
        env,
        tmp_path,
        """
fields:
  big:
    each: "{{ range(40) }}"
    fields: {x: "{{ ('x' * 900000) | length }}"}
""",
    )
    with pytest.raises(SandboxViolation, match="built more than"):
        mapping({})


def test_the_record_stays_unchanged(env):
    record = {"items": [3, 1, 2], "d": {"a": 1}}
    python, _ = _both(env, "{{ record.items | sort }} {{ record.d.pop('a') }}")
    with pytest.raises(SandboxViolation):
        python({"record": record})
    assert record == {"items": [3, 1, 2], "d": {"a": 1}}


# -- what falls back, and the generated source ------------------------------------------------
def test_an_inline_if_without_else_keeps_the_jinja_path_and_works(env):
    value = compile_value(env, "{{ record.a if record.b }}")
    assert isinstance(value, Renderer) and not value.python
    assert value({"record": {"a": 1, "b": True}}) == 1
    with pytest.raises(TemplateRenderError, match="no else section"):
        value({"record": {"a": 1, "b": False}})


def test_a_float_literal_too_big_keeps_the_jinja_path(env):
    python, jinja = _both(env, "{{ 1e400 }}")
    assert not python.python
    assert _outcome(python, {}) == _outcome(jinja, {})


def test_the_generated_source_names_nothing_a_template_wrote(env):
    # every identifier in the source is generated (fy_...), a keyword or an allowed
    # builtin; what the template wrote is only ever inside string literals
    source = "{{ record['x\\'); import os; (\\''] ~ \"%s {} \\\\\" ~ evil_name | default('y') }}"
    value = compile_value(env, {"a": source, "b": "{{ record.some_field | lower }}"})
    assert isinstance(value, Renderer) and value.python
    code = value._render.fy_source
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    names = {t.string for t in tokens if t.type == tokenize.NAME}
    assert all(
        n.startswith("fy_") or keyword.iskeyword(n) or n in pycodegen._BUILTINS for n in names
    ), names
    scope = {"record": {"x'); import os; ('": 1, "some_field": "Z"}}
    assert value(scope) == {"a": "1%s {} \\y", "b": "z"}


def _shipped_yaml() -> list[Path]:
    found = [*ROOT.glob("flows/*.yaml"), *ROOT.glob("mappings/*.yaml")]
    found += [*ROOT.glob("examples/**/*.yaml"), *ROOT.glob("bench/*.yaml")]
    return sorted(found)


def _strings(data: Any, key: str = ""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _strings(v, str(k))
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v, key)
    elif isinstance(data, str):
        yield key, data


def test_no_shipped_flow_or_mapping_falls_back_to_jinja(env):
    templates = conditions = 0
    for path in _shipped_yaml():
        for key, text in _strings(yaml.safe_load(path.read_text())):
            if is_template(text):
                value = compile_value(env, text)
                assert getattr(value, "python", True), (path, text)
                templates += 1
            elif key in ("when", "filter", "if") and text.strip():
                condition = compile_condition(env, text)
                assert getattr(condition, "python", True), (path, text)
                conditions += 1
    assert templates > 300 and conditions > 10


def test_no_shipped_flow_or_mapping_loads_anything_through_jinja(env, monkeypatch, tmp_path):
    # the whole value trees, as the loader builds them: every flow that loads with the
    # built-in connectors, every mapping file
    from engine import Engine, templates

    fell_back, compiled = [], []

    def watched(original):
        def compile_(*args, **kwargs):
            try:
                function = original(*args, **kwargs)
            except pycodegen.Unsupported as exc:
                fell_back.append((args[2], str(exc)))
                raise
            compiled.append(args[2])
            return function

        return compile_

    monkeypatch.setattr(templates, "compile_tree", watched(templates.compile_tree))
    monkeypatch.setattr(templates, "compile_expression", watched(templates.compile_expression))
    engine = Engine(state=str(tmp_path / "state.db"))
    loaded = 0
    for path in _shipped_yaml():
        if path.name.endswith(".test.yaml") or "/mappings/" in str(path):
            continue
        try:
            engine.load(path)
            loaded += 1
        except Exception:  # noqa: BLE001 - a flow for a connector of its own example
            pass
    for path in ROOT.glob("mappings/*.yaml"):
        mapping, problems = load_mapping(str(path), env)
        assert mapping is not None, problems
    assert loaded >= 12 and len(compiled) > 300
    assert fell_back == []


def test_a_compiled_function_runs_without_jinja_runtime_objects(env, monkeypatch):
    # the fast path makes no Context per render unless something needs one, and no
    # Undefined when every field is there
    from jinja2 import runtime

    made = []
    original = runtime.Undefined.__init__

    def counted(self, *args, **kwargs):
        made.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(runtime.Undefined, "__init__", counted)
    value = compile_value(env, "{{ record.a | default('x') }}-{{ record.b.c }}")
    assert value({"record": {"a": 1, "b": {"c": 2}}}) == "1-2" and made == []
    assert "fy_ctx" not in value._render.fy_source
    assert value({"record": {"b": {"c": 2}}}) == "x-2"
    assert pycodegen.Unsupported.__doc__


def _nested(levels: int) -> Any:
    value: Any = "{{ record.a | default(1) }}"
    for _ in range(levels):
        value = {"x": value}
    return value


def test_a_deeply_nested_value_compiles_to_python(env):
    python, jinja = _both(env, _nested(60))
    assert python.python
    assert _outcome(python, {"record": {"a": 5}}) == _outcome(jinja, {"record": {"a": 5}})


def test_a_value_nested_past_what_python_compiles_is_a_clear_load_error(env):
    # a dict literal per level: more brackets than Python's parser takes, either way
    with pytest.raises(TemplateProblem, match="nested too deeply"):
        compile_value(env, _nested(210))


def test_twenty_list_specs_inside_one_another_keep_the_jinja_path(env, tmp_path):
    body = 'v: "{{ i0 }}"'
    for level in range(22):
        body = f'l{level}: {{each: "{{{{ [1] }}}}", as: i{level}, fields: {{{body}}}}}'
    mapping = _load(env, tmp_path, f"fields: {{{body}}}")
    jinja = Renderer(env, mapping._renderer._spec, None, jinja=True)
    assert not mapping._renderer.python
    assert _outcome(mapping._renderer, {"record": {}}) == _outcome(jinja, {"record": {}})


def test_text_around_constant_expressions_is_joined(env):
    python, jinja = _both(env, "{{ 1 }}x{{ none }}")
    assert python({}) == jinja({}) == "1xNone"


# -- random expressions -------------------------------------------------------------------------
_LEAVES = [
    "record",
    "record.name",
    "record.count",
    "record.total",
    "record.missing",
    "record.none",
    "record.text",
    "record.items",
    "record.lines",
    "record.lines[0]",
    "record.lines[1].price",
    "record.customer",
    "record.customer.first_name",
    "vars.rate",
    "nobody",
    "none",
    "true",
    "0",
    "2",
    "'a'",
    "'%s'",
    "[1, 'b']",
    "{'k': 1}",
    "loop.index",
]
_UNARY = [
    "({0} | default('d'))",
    "({0} | default(none, true))",
    "({0} | default([], true))",
    "({0} | string)",
    "({0} | length)",
    "({0} | list)",
    "({0} | select | list)",
    "({0} | map(attribute='qty', default=0) | list)",
    "({0} | join('-'))",
    "({0} | decimal)",
    "({0} | id_str)",
    "({0} | lower)",
    "({0} | first)",
    "({0} is defined)",
    "({0} is none)",
    "({0} is not none)",
    "(not {0})",
    "(-{0})",
    "{0}.qty",
    "{0}['sku']",
    "{0}.get('k')",
    "[{0}]",
]
_BINARY = [
    "({0} + {1})",
    "({0} - {1})",
    "({0} * {1})",
    "({0} ~ {1})",
    "({0} == {1})",
    "({0} < {1})",
    "({0} in {1})",
    "({0} and {1})",
    "({0} or {1})",
    "({0} if {1} else 'no')",
    "({0} % {1})",
    "({0} / {1})",
]


def _random_expression(rng, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(_LEAVES)
    if rng.random() < 0.55:
        return rng.choice(_UNARY).format(_random_expression(rng, depth - 1))
    left, right = _random_expression(rng, depth - 1), _random_expression(rng, depth - 1)
    return rng.choice(_BINARY).format(left, right)


def test_random_expressions_give_what_jinja_gives(env):
    import random

    rng = random.Random(13)
    scopes = [*SCOPES, {"record": RECORD, "loop": {"index": 1}, "vars": {"rate": 2}}]
    compared = 0
    for _ in range(400):
        source = "{{ " + _random_expression(rng, 3) + " }}"
        python, jinja = _both(env, source)
        assert python.python, source
        for scope in scopes:
            assert _outcome(python, scope) == _outcome(jinja, scope), (source, scope)
            compared += 1
        condition = source[3:-3]
        python_c = Condition(env, condition, parse_condition(env, condition))
        jinja_c = Condition(env, condition, parse_condition(env, condition), jinja=True)
        for scope in scopes:
            assert _outcome(python_c, scope) == _outcome(jinja_c, scope), (condition, scope)
    assert compared == 400 * len(scopes)
