"""Templates come from YAML files: they must not reach Python internals, mutate data or hog.

Each known escape from Jinja's documentation, security advisories and CTF write-ups is
tried against a value and a condition; each must be refused with a record error, never
run.
"""

from __future__ import annotations

import pytest

from engine.templates import (
    SandboxViolation,
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
}


@pytest.mark.parametrize("expr", ESCAPES.values(), ids=ESCAPES.keys())
def test_escapes_from_a_value_are_refused(env, expr):
    value = compile_value(env, "{{ " + expr + " }}")
    with pytest.raises(TemplateRenderError) as caught:
        value({"record": RECORD})
    assert isinstance(caught.value, SandboxViolation | UndefinedValueError)


@pytest.mark.parametrize("expr", ESCAPES.values(), ids=ESCAPES.keys())
def test_escapes_from_a_condition_are_refused(env, expr):
    condition = compile_condition(env, expr)
    with pytest.raises(TemplateRenderError):
        condition({"record": RECORD})


def test_reaching_for_internals_is_reported_as_such(env):
    value = compile_value(env, "{{ record.__class__ }}")
    with pytest.raises(SandboxViolation, match="template tried to reach Python internals"):
        value({"record": RECORD})


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
    assert compile_value(env, "{{ record.__class__ }}")({"record": record}) == "not a class"
