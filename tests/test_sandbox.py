"""Templates come from YAML files: they must not reach Python internals, mutate data or hog.

Each known escape from Jinja's documentation, security advisories and CTF write-ups is
tried against a value and a condition. One that names a dunder attribute is refused when
the template is compiled (it could only ever fail); one that reaches it by a computed name
or through a format string is refused by the sandbox when it runs, as a record error.
Each way of building a gigabyte or running for minutes in one line is refused the same way,
in milliseconds, while small uses of the same operations still work.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from engine import _metered
from engine.mapping import load_mapping
from engine.templates import (
    SandboxViolation,
    TemplateProblem,
    TemplateRenderError,
    UndefinedValueError,
    compile_condition,
    compile_value,
    make_environment,
)


@pytest.fixture(scope="module")
def env():
    return make_environment()


RECORD = {"id": 1, "name": "x", "lines": [{"sku": "A"}]}

ESCAPES = {
    "mro subclasses": "''.__class__.__mro__[1].__subclasses__()",
    "record class": "record.__class__",
    "record class by item": "record['__class__']",
    "nested value class": "record.lines[0].sku.__class__.__base__",
    "cycler globals": "cycler.__init__.__globals__",
    "joiner globals": "joiner.__init__.__globals__",
    "namespace": "namespace.__init__.__globals__",
    "lipsum globals": "lipsum.__globals__['os']",
    "range globals": "range.__globals__",
    "template reference context": "self._TemplateReference__context",
    "format string attack": "'{0.__class__.__mro__}'.format(record)",
    "format_map attack": "'{x.__class__}'.format_map({'x': record})",
    "attr filter": "record | attr('__class__')",
    "attr filter to format": "('{0.__class__}' | attr('format'))(record)",
    "dict method mro": "dict.mro()",
    "function code": "now_utc.__code__",
    "filter globals via map": "record.lines | map(attribute='__class__') | list",
    "private attribute": "record._private",
    # the same reaches, by names the compiler cannot see
    "computed item": "record[vars.dunder]",
    "computed attr filter": "record | attr(vars.dunder)",
    "computed chain": "('' | attr(vars.dunder)) | attr('__mro__')",
    "computed format field": "('{0.' ~ vars.dunder ~ '}').format(record)",
    "computed map attribute": "record.lines | map(attribute=vars.dunder) | list",
}
CONTEXT = {"record": RECORD, "vars": {"dunder": "__class__"}}


def _refused(compile_it):
    """Compile and run; the refusal, whichever of the two gave it."""
    try:
        compiled = compile_it()
    except TemplateProblem as problem:
        return problem
    with pytest.raises(TemplateRenderError) as caught:
        compiled(CONTEXT)
    return caught.value


@pytest.mark.parametrize("expr", ESCAPES.values(), ids=ESCAPES.keys())
def test_escapes_from_a_value_are_refused(env, expr):
    refusal = _refused(lambda: compile_value(env, "{{ " + expr + " }}"))
    if isinstance(refusal, TemplateProblem):
        assert "Python internals" in refusal.message
    else:
        assert isinstance(refusal, SandboxViolation | UndefinedValueError)


@pytest.mark.parametrize("expr", ESCAPES.values(), ids=ESCAPES.keys())
def test_escapes_from_a_condition_are_refused(env, expr):
    refusal = _refused(lambda: compile_condition(env, expr))
    assert isinstance(refusal, TemplateProblem | TemplateRenderError)


def test_a_dunder_named_in_a_template_is_refused_at_compile_time_with_its_line(env):
    with pytest.raises(TemplateProblem) as caught:
        compile_value(env, "total: {{ record.total }}\nclass: {{ ''.__class__ }}")
    assert "cannot reach Python internals ('__class__')" in caught.value.message
    assert caught.value.lineno == 2


def test_a_dunder_in_a_mapping_file_is_refused_when_the_mapping_loads(env, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "mapping: m\nfields:\n  id: '{{ record.id }}'\n  kind: \"{{ ''.__class__ }}\"\n"
    )
    mapping, problems = load_mapping(str(path), env)
    assert mapping is None
    assert [(p.line, p.path) for p in problems] == [(4, "fields.kind")]
    assert "Python internals ('__class__')" in problems[0].message


def test_reaching_for_internals_at_run_time_is_reported_as_such(env):
    value = compile_value(env, "{{ record[vars.dunder] }}")
    with pytest.raises(SandboxViolation, match="template tried to reach Python internals"):
        value(CONTEXT)


def test_dangerous_default_globals_are_gone(env):
    for name in ("lipsum", "cycler", "joiner", "namespace"):
        assert name not in env.globals
    assert {"range", "dict", "now_utc"} <= set(env.globals)


def test_templates_cannot_change_the_record(env):
    record = {"tags": ["a"], "meta": {"k": 1}}
    for expr in ("record.tags.append('x')", "record.meta.update({'k': 2})", "record.pop('tags')"):
        with pytest.raises(SandboxViolation):
            compile_value(env, "{{ " + expr + " }}")({"record": record})
    assert record == {"tags": ["a"], "meta": {"k": 1}}


@pytest.mark.parametrize(
    "expr",
    [
        "range(100000) | list",
        "'a' * 10000000",
        "[0] * 5000000",
        "10 ** 100000",
        "(2 ** 1000) ** 1000",  # each exponent is small, the result is not
    ],
)
def test_resource_hogs_are_refused(env, expr):
    with pytest.raises(SandboxViolation, match="sandbox limit"):
        compile_value(env, "{{ " + expr + " }}")({})


def test_small_ranges_and_products_still_work(env):
    assert compile_value(env, "{{ range(3) | list }}")({}) == [0, 1, 2]
    assert compile_value(env, "{{ '-' * 3 }}")({}) == "---"
    assert compile_value(env, "{{ 2 ** 10 }}")({}) == 1024


def test_a_record_key_named_like_an_internal_is_just_data(env):
    record = {"__class__": "not a class"}
    value = compile_value(env, "{{ record[vars.key] }}")
    assert value({"record": record, "vars": {"key": "__class__"}}) == "not a class"


# Each builds a gigabyte or more from a line of template (or hangs a CPU for minutes).
BUILDERS = {
    "percent width": "'%01000000000d' % 1",
    "percent star width": "'%0*d' % (1000000000, 1)",
    "percent named": "'%(a)01000000000d' % {'a': 1}",
    "percent repeated argument": "('%s' * 1000) % (('x' * 10000,) * 1000)",
    "format width": "'{:>1000000000}'.format(1)",
    "format nested width": "'{:{}}'.format(1, 1000000000)",
    "format_map width": "'{x:>1000000000}'.format_map({'x': 1})",
    "format by attr": "('{:>1000000000}' | attr('format'))(1)",
    "format by item": "'{:>1000000000}'['format'](1)",
    "format repeated field": "('{0}' * 1000).format('x' * 10000)",
    "ljust": "'x'.ljust(1000000000)",
    "rjust": "'x'.rjust(1000000000)",
    "center method": "'x'.center(1000000000)",
    "zfill": "'x'.zfill(1000000000)",
    "expandtabs": "('\t' * 1000).expandtabs(1000000000)",
    "replace method": "('a' * 100000).replace('a', 'a' * 100000)",
    "join method": "('x' * 1000).join(['y'] * 100000)",
    "translate": "('a' * 1000).translate({97: 'b' * 1000000})",
    "to_bytes": "(1).to_bytes(1000000000, 'big')",
    "indent filter": "'x\ny' | indent(1000000000)",
    "indent by text": "('x\n' * 100000) | indent('y' * 100000)",
    "center filter": "'x' | center(1000000000)",
    "wordwrap": "('a ' * 1000) | wordwrap(1, wrapstring='x' * 100000)",
    "batch fill": "[1] | batch(1000000000, 0) | list",
    "slice": "[1] | slice(1000000000) | list",
    "replace filter": "('a' * 100000) | replace('a', 'a' * 100000)",
    "join filter": "(['x' * 1000] * 1000) | join('y' * 1000)",
    "format filter": "'%01000000000d' | format(1)",
    "list of lists": "[[0] * 1000000] * 1000000",
    "sum of lists": "vars.rows | sum(start=[])",
    "tojson indent": "{'a': 1} | tojson(1000000000)",
    "int of a huge decimal": "vars.huge | int",
    "percent d of a huge decimal": "'%d' % vars.huge",
    "fixed point of a huge decimal": "'{:f}'.format(vars.huge)",
}


@pytest.mark.parametrize("expr", BUILDERS.values(), ids=BUILDERS.keys())
def test_every_way_to_build_a_gigabyte_is_refused_at_once(env, expr):
    value = compile_value(env, "{{ " + expr + " }}")
    started = time.perf_counter()
    with pytest.raises(SandboxViolation, match="sandbox limit"):
        value({"vars": {"huge": Decimal("1E+100000000"), "rows": [[0] * 600_000] * 2}})
    assert time.perf_counter() - started < 0.5


SMALL = {
    "'%05d' % 42": "00042",
    "'%(n)s-%(m)s' % {'n': 1, 'm': 2}": "1-2",
    "'{:>6}'.format('ab')": "    ab",
    "'{x}'.format_map({'x': 7})": "7",
    "'ab'.center(6, '*')": "**ab**",
    "'7'.zfill(3)": "007",
    "'a-b'.replace('-', '+')": "a+b",
    "', '.join(['a', 'b'])": "a, b",
    "'ab' | center(6)": "  ab  ",
    "'a\nb' | indent(2)": "a\n  b",
    "['a', 'b'] | join('/')": "a/b",
    "'a' | replace('a', 'bb')": "bb",
    "'%s=%s' | format('k', 'v')": "k=v",
    "[[1], [2]] | sum(start=[])": [1, 2],
    "[1, 2, 3] | batch(2, 0) | list": [[1, 2], [3, 0]],
    "[1, 2, 3] | slice(2) | list": [[1, 2], [3]],
    "'a b c' | wordwrap(3)": "a b\nc",
    "{'a': 1} | tojson(2)": '{\n  "a": 1\n}',
    "'12' | int + vars.price | int": 31,
    "'{:.2f}'.format(vars.price)": "19.90",
    "([[0] * 1000] * 999) | length": 999,
    "7 % 3": 1,
}


@pytest.mark.parametrize("expr", SMALL, ids=list(SMALL))
def test_small_uses_of_the_metered_operations_still_work(env, expr):
    assert (
        compile_value(env, "{{ " + expr + " }}")({"vars": {"price": Decimal("19.90")}})
        == (SMALL[expr])
    )


def test_a_render_that_runs_too_long_is_stopped_as_a_record_error(env):
    # a million-item scan per element of a range: about a minute unchecked
    value = compile_value(env, "{{ range(10000) | select('in', [0] * 1000000) | list }}")
    started = time.perf_counter()
    with pytest.raises(SandboxViolation, match="ran longer than 1 s"):
        value({})
    assert time.perf_counter() - started < _metered.MAX_RENDER_SECONDS + 1


def test_a_render_may_build_ten_million_characters_in_all_not_more(env):
    value = compile_value(env, "{{ range(100) | map('center', 200000) | map('length') | sum }}")
    with pytest.raises(SandboxViolation, match="built more than 10,000,000"):
        value({})
    assert (
        compile_value(env, "{{ range(10) | map('center', 200000) | map('length') | sum }}")({})
        == 2_000_000
    )


def test_the_items_of_a_list_share_the_budget_of_their_record(env, tmp_path):
    # nested lists multiply: 100 x 100 items, each building 2,000 characters
    path = tmp_path / "nested.yaml"
    path.write_text(
        "mapping: nested\n"
        "fields:\n"
        "  rows:\n"
        "    each: '{{ range(100) }}'\n"
        "    as: row\n"
        "    fields:\n"
        "      cells:\n"
        "        each: '{{ range(100) }}'\n"
        "        as: cell\n"
        "        fields:\n"
        "          text: \"{{ 'x' | center(2000) }}\"\n"
    )
    mapping, problems = load_mapping(str(path), env)
    assert problems == []
    with pytest.raises(SandboxViolation, match="built more than 10,000,000"):
        mapping({})


def test_summing_a_records_lists_is_linear_not_quadratic(env):
    # Python's sum() copies the total at each step: 500,000 one-item lists took hours
    value = compile_value(env, "{{ record.rows | sum(start=[]) | length }}")
    started = time.perf_counter()
    assert value({"record": {"rows": [[0]] * 500_000}}) == 500_000
    assert time.perf_counter() - started < 2


def test_a_long_list_of_cheap_items_is_stopped_by_the_clock(env, tmp_path, monkeypatch):
    # no metered operation inside: the list spec itself looks at the clock every 64 items
    path = tmp_path / "slow.yaml"
    path.write_text(
        "mapping: slow\n"
        "fields:\n"
        "  rows:\n"
        "    each: '{{ range(10000) }}'\n"
        "    as: row\n"
        "    fields:\n"
        "      words: '{{ record.text | wordcount }}'\n"
    )
    mapping, problems = load_mapping(str(path), env)
    assert problems == []
    monkeypatch.setattr(_metered, "MAX_RENDER_SECONDS", 0.1)
    record = {"text": "word " * 4_000}  # 10,000 items of about 0.2 ms: 2 s unchecked
    with pytest.raises(SandboxViolation, match="ran longer than 0.1 s"):
        mapping(record)


def test_short_lists_nested_three_deep_are_stopped_by_the_clock(env, tmp_path, monkeypatch):
    # 40 x 40 x 40 items from the record, no list long enough to be paced on its own and
    # nothing metered inside: each list spec started inside another looks at the clock
    path = tmp_path / "deep.yaml"
    path.write_text(
        "mapping: deep\n"
        "fields:\n"
        "  a:\n"
        "    each: '{{ record.rows }}'\n"
        "    as: row\n"
        "    fields:\n"
        "      b:\n"
        "        each: '{{ row }}'\n"
        "        as: cells\n"
        "        fields:\n"
        "          c:\n"
        "            each: '{{ cells }}'\n"
        "            as: cell\n"
        "            fields:\n"
        "              words: '{{ record.text | wordcount }}'\n"
    )
    mapping, problems = load_mapping(str(path), env)
    assert problems == []
    monkeypatch.setattr(_metered, "MAX_RENDER_SECONDS", 0.2)
    cells = [[0] * 40] * 40
    started = time.perf_counter()
    with pytest.raises(SandboxViolation, match="ran longer than 0.2 s"):
        mapping({"rows": [cells] * 40, "text": "word " * 4_000})  # ~64,000 x 0.2 ms unchecked
    # the field-by-field pass that names a failing field is not run for a whole-render limit
    assert time.perf_counter() - started < 3
