"""One "did you mean" (engine/suggest.py): the closest name, case aside, the same hint at
load time and in templates, never one of the engine's own names."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.suggest import did_you_mean
from engine.templates import TemplateProblem, compile_condition, compile_value, make_environment
from tests.conftest import write_flow


def test_the_closest_choice_is_offered():
    assert did_you_mean("sned", ["map", "send", "validate"]) == " (did you mean 'send'?)"


def test_nothing_close_offers_nothing():
    assert did_you_mean("xyz", ["map", "send"]) == ""
    assert did_you_mean("send", []) == ""


def test_case_is_set_aside_and_the_choice_shown_as_written():
    assert did_you_mean("ERP", ["erp", "shop"]) == " (did you mean 'erp'?)"
    assert did_you_mean("erp", ["ERP", "shop"]) == " (did you mean 'ERP'?)"


def test_words_and_choices_that_are_not_text_compare_as_text():
    # YAML reads an unquoted key such as 2024 as a number
    assert did_you_mean(2024, ["2025", "total"]) == " (did you mean '2025'?)"
    assert did_you_mean("2025", [2024, "total"]) == " (did you mean '2024'?)"


def test_the_answer_does_not_depend_on_the_order_of_the_choices():
    choices = ["abcd", "abce", "abcf"]
    answers = {did_you_mean("abc", order) for order in (choices, choices[::-1])}
    assert len(answers) == 1 and answers != {""}


@pytest.fixture(scope="module")
def env():
    return make_environment()


def test_a_template_filter_in_capitals_is_offered_in_lower_case(env):
    with pytest.raises(TemplateProblem) as raised:
        compile_value(env, "{{ record.sku | UPPER }}", names=("record",))
    assert "unknown filter 'UPPER' (did you mean 'upper'?)" in raised.value.message


def test_a_template_name_in_capitals_is_offered_as_written(env):
    with pytest.raises(TemplateProblem) as raised:
        compile_condition(env, "RECORD.total > 0", names=("record", "vars"))
    assert "unknown name 'RECORD' (did you mean 'record'?)" in raised.value.message


def test_the_engines_own_filters_are_never_offered(env):
    # fy:each and fy:defined are the engine's; "fyeach" is closer to them than to any other
    with pytest.raises(TemplateProblem) as raised:
        compile_value(env, "{{ record.lines | fyeach }}", names=("record",))
    assert "fy:" not in raised.value.message


def test_load_time_and_templates_word_the_hint_alike(tmp_path):
    flow = write_flow(
        tmp_path,
        """
flow: hints
source: {connector: file, path: in.ndjson}
steps:
  - set: {sku: "{{ record.sku | UPPER }}"}
  - sned: {path: out.ndjson}
""",
    )
    messages = [p.message for p in Engine().check(flow)]
    assert any("unknown filter 'UPPER' (did you mean 'upper'?)" in m for m in messages), messages
    assert any("(did you mean 'send'?)" in m for m in messages), messages
