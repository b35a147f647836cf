"""Values and conditions: compiled once, native types, strict about missing data."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import MappingError, RecordError
from engine.templates import (
    CONDITION_HINT,
    TemplateProblem,
    TemplateRenderError,
    UndefinedValueError,
    compile_condition,
    compile_value,
    default_environment,
    make_environment,
)


@pytest.fixture(scope="module")
def env():
    return make_environment()


def render(env, value, **context):
    return compile_value(env, value)(context)


# -- the environment -------------------------------------------------------------------------


def test_the_environment_is_sandboxed_and_cached_once():
    assert isinstance(make_environment(), SandboxedEnvironment)
    assert default_environment() is default_environment()
    assert make_environment() is not make_environment()


# -- native types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1042, 1042),
        ("1042", "1042"),  # a string that looks like a number stays a string
        ("01234", "01234"),
        (Decimal("19.90"), Decimal("19.90")),
        (None, None),
        (True, True),
        ([1, 2], [1, 2]),
        ({"a": 1}, {"a": 1}),
        (2**64, 2**64),
    ],
)
def test_a_lone_expression_yields_the_python_value(env, value, expected):
    result = render(env, "{{ record.x }}", record={"x": value})
    assert result == expected and type(result) is type(expected)


def test_text_around_an_expression_makes_a_string(env):
    assert render(env, "shopify:{{ record.id }}", record={"id": 2**60}) == (
        "shopify:1152921504606846976"
    )
    assert render(env, "{{ record.a }}{{ record.b }}", record={"a": 1, "b": 2}) == "12"
    assert render(env, " {{ record.a }}", record={"a": 1}) == " 1"


def test_constant_expressions_keep_their_type(env):
    assert render(env, "{{ 42 }}") == 42
    assert render(env, "{{ [1, 'a'] }}") == [1, "a"]
    assert render(env, "{{ none }}") is None


def test_a_single_trailing_newline_is_not_part_of_the_value(env):
    # YAML block scalars (>-, |) end with a newline; Jinja drops one, as for files
    assert render(env, "{{ record.n }}\n", record={"n": 7}) == 7


def test_values_without_braces_are_constants(env):
    for constant in ["web", 3, 1.5, False, None, "a } b { c"]:
        value = compile_value(env, constant)
        assert value.constant and value({}) == constant


def test_dicts_and_lists_are_compiled_recursively(env):
    value = compile_value(
        env,
        {
            "id": "{{ record.id }}",
            "channel": "web",
            "lines": ["{{ record.sku }}", {"qty": "{{ record.qty }}"}],
        },
    )
    assert value({"record": {"id": "7", "sku": "A", "qty": 2}}) == {
        "id": "7",
        "channel": "web",
        "lines": ["A", {"qty": 2}],
    }


def test_every_render_returns_new_objects(env):
    value = compile_value(env, {"tags": ["a"], "meta": {"k": 1}})
    first = value({})
    first["tags"].append("changed")
    first["meta"]["k"] = 2
    assert value({}) == {"tags": ["a"], "meta": {"k": 1}}


def test_templates_see_every_context_key(env):
    value = compile_value(env, "{{ vars.prefix }}-{{ meta.key }}-{{ run.id }}-{{ line.sku }}")
    context = {"vars": {"prefix": "p"}, "meta": {"key": 9}, "run": {"id": "r1"}}
    assert value({**context, "line": {"sku": "S"}}) == "p-9-r1-S"


def test_a_dict_field_wins_over_a_dict_method_of_the_same_name(env):
    record = {"items": [1, 2], "keys": "k"}
    assert render(env, "{{ record.items }}", record=record) == [1, 2]
    assert render(env, "{{ record.keys }}", record=record) == "k"
    assert render(env, "{{ record.get('missing', 'd') }}", record=record) == "d"


def test_decimal_arithmetic_stays_exact(env):
    value = "{{ ((record.price | round_decimal) * record.qty) | decimal }}"
    assert render(env, value, record={"price": "0.10", "qty": 3}) == "0.30"


# -- strict about missing data ---------------------------------------------------------------


def test_a_missing_field_is_an_error_naming_the_field(env):
    with pytest.raises(UndefinedValueError, match="^email is missing") as caught:
        render(env, "{{ record.email }}", record={"id": 1})
    # the template's author gets Jinja's view too: what the object had instead
    assert "no field 'email' (it has: id)" in caught.value.reason


def test_default_supplies_a_value_for_a_missing_field(env):
    assert render(env, "{{ record.email | default(none) }}", record={}) is None
    assert render(env, "{{ record.email | default('n/a') }}", record={}) == "n/a"
    # default(..., true) also replaces an empty value
    assert render(env, "{{ record.email | default(none, true) }}", record={"email": ""}) is None


def test_a_missing_field_inside_a_nested_value_is_named_by_its_path(env):
    value = compile_value(env, {"customer": {"id": "{{ record.id }}", "email": "{{ record.e }}"}})
    with pytest.raises(UndefinedValueError) as caught:
        value({"record": {"id": 1}})
    assert caught.value.field == "customer.email"
    assert str(caught.value) == "e is missing (field customer.email)"
    assert caught.value.source == "{{ record.e }}"


def test_every_failing_field_is_reported_at_once_in_the_records_terms(env):
    value = compile_value(
        env,
        {
            "id": "{{ record.id }}",
            "total": "{{ record.total | decimal }}",
            "lines": "{{ record.lines[1].sku }}",
            "email": "{{ record.customer.email }}",
        },
    )
    record = {"lines": [{"sku": "A"}, {"qty": 1}], "total": "1,5", "customer": {}}
    with pytest.raises(TemplateRenderError) as caught:
        value({"record": record})
    error = caught.value
    assert [str(p) for p in error.problems] == [
        "id is missing",
        "total is invalid (decimal: '1,5' is not a decimal number)",
        "lines[1].sku is missing",
        "customer.email is missing",
    ]
    assert [p.field for p in error.problems] == ["id", "total", "lines", "email"]
    assert type(error) is TemplateRenderError  # missing and invalid: the common class
    assert error.field == "id"


def test_a_failure_that_is_not_the_records_fault_names_the_field_and_template(env):
    value = compile_value(env, {"twice": "{{ record.n * 2 }}", "id": "{{ record.id }}"})
    with pytest.raises(TemplateRenderError) as caught:
        value({"record": {"n": None}})
    assert str(caught.value) == (
        "field twice: TypeError: unsupported operand type(s) for *: 'NoneType' and 'int' "
        "(in `{{ record.n * 2 }}`); id is missing (field id)"
    )


def test_reading_through_null_says_so(env):
    with pytest.raises(UndefinedValueError, match="cannot read 'email' of None"):
        render(env, "{{ record.customer.email }}", record={"customer": None})


def test_an_undefined_name_is_an_error(env):
    with pytest.raises(UndefinedValueError, match="'recrod' is undefined"):
        render(env, "{{ recrod.id }}", record={})


def test_missing_values_inside_a_literal_list_are_errors(env):
    with pytest.raises(UndefinedValueError):
        render(env, "{{ [record.a, record.b] }}", record={"a": 1})


def test_an_if_without_else_that_is_false_is_an_error(env):
    with pytest.raises(UndefinedValueError, match="no else"):
        render(env, "{{ record.a if record.flag }}", record={"a": 1, "flag": False})


def test_render_errors_are_record_errors_so_the_record_is_dead_lettered(env):
    with pytest.raises(RecordError) as caught:
        render(env, "{{ record.amount | decimal }}", record={"amount": 1.5})
    assert isinstance(caught.value, MappingError)
    assert isinstance(caught.value, TemplateRenderError)
    assert "float" in str(caught.value)


# -- compile-time problems -------------------------------------------------------------------


def test_a_syntax_error_is_a_template_problem_with_its_line(env):
    with pytest.raises(TemplateProblem) as caught:
        compile_value(env, "line one\n{{ record.id ")
    assert "syntax error" in caught.value.message and caught.value.lineno == 2


def test_an_unknown_filter_is_found_at_compile_time_with_a_suggestion(env):
    with pytest.raises(TemplateProblem, match="unknown filter 'decimals'.*'decimal'"):
        compile_value(env, "{{ record.total | decimals }}")
    # also where Jinja itself would wait until run time (inside a conditional)
    with pytest.raises(TemplateProblem, match="unknown filter 'uper'.*'upper'"):
        compile_value(env, "{{ record.a | uper if record.b else 1 }}")


def test_an_unknown_test_is_found_at_compile_time(env):
    with pytest.raises(TemplateProblem, match="unknown test 'definedd'.*'defined'"):
        compile_value(env, "{{ record.a is definedd }}")


def test_statements_are_not_allowed_in_values(env):
    with pytest.raises(TemplateProblem, match="statements"):
        compile_value(env, "{% for x in record.items %}{{ x }}{% endfor %}")
    with pytest.raises(TemplateProblem, match="statements"):
        compile_value(env, "{% set x = 1 %}")


def test_a_template_too_long_is_refused_before_it_is_parsed(env):
    value = "{{ record.x }} " * 200_000  # 3 MB
    started = time.perf_counter()
    with pytest.raises(TemplateProblem) as caught:
        compile_value(env, value)
    assert caught.value.message == "a template of 3,000,000 characters; the limit is 100,000"
    assert time.perf_counter() - started < 1
    compile_value(env, "{{ record.x }} " * 6_000)  # 90,000 characters are fine


@pytest.mark.parametrize(
    "source, message",
    [
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "brackets nested more than 20 deep"),
        ("{{ " + "[" * 21 + "]" * 21 + " }}", "brackets nested more than 20 deep"),
        ("{{ " + " + ".join(["1"] * 5000) + " }}", "an expression nested more than 40 levels"),
        ("{{ x" + " | string" * 3000 + " }}", "an expression nested more than 40 levels"),
        ("{{ x" + ".a" * 3000 + " }}", "an expression nested more than 40 levels"),
        ("{{ " + "not " * 3000 + "x }}", "the template is nested too deeply to read"),
        ("{{ " + "-" * 3000 + "x }}", "the template is nested too deeply to read"),
    ],
    ids=[
        "3000 parentheses",
        "21 brackets",
        "+ chain",
        "filter chain",
        "attribute chain",
        "nots",
        "minuses",
    ],
)
def test_a_template_nested_too_deep_is_a_problem_not_a_traceback(env, source, message):
    with pytest.raises(TemplateProblem) as caught:
        compile_value(env, "text\n" + source)
    assert caught.value.message.startswith(message)
    assert caught.value.lineno in (1, 2)


def test_the_same_limits_hold_for_a_condition(env):
    with pytest.raises(TemplateProblem, match="brackets nested more than 20 deep"):
        compile_condition(env, "(" * 100 + "x" + ")" * 100)
    with pytest.raises(TemplateProblem, match="nested more than 40 levels"):
        compile_condition(env, " or ".join(["x"] * 100))
    with pytest.raises(TemplateProblem, match="characters; the limit is 100,000"):
        compile_condition(env, "x == '" + "a" * 100_000 + "'")


def test_templates_within_the_limits_compile(env):
    assert render(env, "{{ " + "(" * 20 + "1" + ")" * 20 + " }}") == 1
    assert render(env, "{{ " + " + ".join(["1"] * 35) + " }}") == 35


def test_a_problem_inside_a_nested_value_names_its_path(env):
    with pytest.raises(TemplateProblem) as caught:
        compile_value(env, {"body": {"lines": ["ok", "{{ x | nope }}"]}})
    assert caught.value.path == "body.lines[1]"


def test_yaml_dates_and_non_text_keys_are_refused(env):
    import datetime as dt

    with pytest.raises(TemplateProblem, match="quote it"):
        compile_value(env, {"since": dt.date(2024, 1, 1)})
    with pytest.raises(TemplateProblem, match="quote it"):
        compile_value(env, {True: "x"})  # YAML reads an unquoted `on:` or `yes:` as True


def test_names_can_be_checked_at_compile_time(env):
    with pytest.raises(TemplateProblem, match="unknown name 'recrod'.*'record'"):
        compile_value(env, "{{ recrod.id }}", names=("record", "vars"))
    compile_value(env, "{{ record.id ~ now_utc() }}", names=("record",))  # globals are known


def test_rendering_never_compiles_again(env, monkeypatch):
    value = compile_value(env, {"a": "{{ record.a }}", "b": "x{{ record.a }}"})
    condition = compile_condition(env, "record.a > 1")

    def refuse(*args, **kwargs):
        raise AssertionError("compiled during a render")

    monkeypatch.setattr(env, "compile", refuse)
    monkeypatch.setattr(env, "from_string", refuse)
    monkeypatch.setattr(env, "parse", refuse)
    for i in range(100):
        assert value({"record": {"a": i}}) == {"a": i, "b": f"x{i}"}
        assert condition({"record": {"a": i}}) is (i > 1)


# -- conditions ------------------------------------------------------------------------------


def test_a_condition_is_a_bare_expression(env):
    pickup = compile_condition(env, "record.fulfillment.method == 'pickup'")
    assert pickup({"record": {"fulfillment": {"method": "pickup"}}}) is True
    assert pickup({"record": {"fulfillment": {"method": "ship"}}}) is False


def test_a_condition_gives_a_bool(env):
    assert compile_condition(env, "record.tags")({"record": {"tags": ["a"]}}) is True
    assert compile_condition(env, "record.tags")({"record": {"tags": []}}) is False
    assert compile_condition(env, True)({}) is True


def test_a_condition_in_braces_is_refused_with_the_rule(env):
    with pytest.raises(TemplateProblem) as caught:
        compile_condition(env, "{{ record.total > 100 }}")
    assert caught.value.message == CONDITION_HINT


def test_a_condition_with_trailing_text_is_refused(env):
    with pytest.raises(TemplateProblem, match="after the expression"):
        compile_condition(env, "record.a == 1 record.b")
    with pytest.raises(TemplateProblem, match="unknown filter"):
        compile_condition(env, "record.a | nope")
    with pytest.raises(TemplateProblem):
        compile_condition(env, "")


def test_a_condition_on_a_missing_field_is_an_error_not_false(env):
    condition = compile_condition(env, "record.method == 'pickup'")
    with pytest.raises(UndefinedValueError) as caught:
        condition({"record": {}})
    assert str(caught.value) == "method is missing (in `record.method == 'pickup'`)"
    guarded = compile_condition(env, "record.method is defined and record.method == 'pickup'")
    assert guarded({"record": {}}) is False
