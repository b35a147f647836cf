"""`fail` steps dead-letter a record with the flow's own reason; `map ... into` builds one
field with a mapping; the `omit` filter drops helper fields."""

from __future__ import annotations

import pytest

from engine import Engine, FlowError
from engine.filters import FilterError, omit
from tests.conftest import read_ndjson, write_flow

FLOW = """
flow: guarded
mappings: [{mappings}]
connections:
  out: {{connector: file}}
source: {{connector: file, path: unused.ndjson}}
steps:
  - route:
      - when: record.lines | rejectattr('sku', 'in', vars.known) | list
        steps:
          - name: unknown_sku
            fail: >-
              unknown SKU {{{{ record.lines | rejectattr('sku', 'in', vars.known)
              | map(attribute='sku') | join(', ') }}}} in order {{{{ record.number }}}}
  - map: request_lines
    into: request
  - name: post
    send:
      connection: out
      path: "{{{{ vars.dir }}}}/sent.ndjson"
      record: "{{{{ record | omit('lines') }}}}"
"""

MAPPING = """
mapping: request_lines
fields:
  reference: "{{ record.number }}"
  lines:
    - - create
      - each: "{{ record.lines }}"
        as: line
        fields:
          product: "{{ line.sku | lower }}"
          quantity: "{{ line.qty }}"
"""


@pytest.fixture
def flow(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "request_lines.yaml").write_text(MAPPING)
    return write_flow(tmp_path, FLOW.format(mappings=tmp_path / "maps"))


def test_a_fail_step_dead_letters_the_record_with_the_flows_reason_and_the_rest_go_on(
    tmp_path, flow
):
    eng = Engine(state=tmp_path / "s.db")
    records = [
        {"id": 1, "number": "#1001", "lines": [{"sku": "A", "qty": 1}]},
        {"id": 2, "number": "#1002", "lines": [{"sku": "A", "qty": 1}, {"sku": "X-1", "qty": 2}]},
        {"id": 3, "number": "#1003", "lines": [{"sku": "B", "qty": 3}]},
    ]
    result = eng.run(flow, records=records, vars={"dir": str(tmp_path), "known": ["A", "B"]})
    assert result.counts["done"] == 2 and result.counts["dead_lettered"] == 1
    assert result.exit_code == 1
    store = eng.store()
    [letter] = store.dead_letters()
    store.close()
    assert letter.step == "unknown_sku"
    assert letter.error_class == "RecordRejected"
    assert letter.message == "unknown SKU X-1 in order #1002"
    assert [r["id"] for r in read_ndjson(tmp_path / "sent.ndjson")] == [1, 3]


def test_map_into_puts_the_mapping_output_in_one_field_and_keeps_the_record(tmp_path, flow):
    eng = Engine(state=tmp_path / "s.db")
    records = [{"id": 7, "number": "#1007", "lines": [{"sku": "A", "qty": 2}]}]
    eng.run(flow, records=records, vars={"dir": str(tmp_path), "known": ["A"]})
    [sent] = read_ndjson(tmp_path / "sent.ndjson")
    assert sent == {
        "id": 7,
        "number": "#1007",
        "request": {"reference": "#1007", "lines": [["create", [{"product": "a", "quantity": 2}]]]},
    }


def test_into_on_another_step_kind_is_a_flow_error(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: misplaced
        source: {connector: file, path: unused.ndjson}
        steps:
          - filter: record.ok
            into: x
        """,
    )
    with pytest.raises(FlowError, match="`into` belongs to map steps only"):
        Engine(state=tmp_path / "s.db").load(flow)


def test_omit_drops_the_named_keys_and_refuses_what_is_not_an_object():
    assert omit({"a": 1, "b": 2, "c": 3}, "b", "x") == {"a": 1, "c": 3}
    with pytest.raises(FilterError, match="omit: expected an object, got list"):
        omit([1], "a")
