"""Whatever a person does to a valid flow (delete a key, misspell one, give a value the wrong
type, duplicate or dedent a line, type a stray ``{{``), loading it gives either a valid flow
or a FlowError whose every problem has a line and a message; never a traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, FlowError
from engine.flow_schema import SCHEMA
from tests.conftest import ROOT

# A flow that uses most of the language, so that mutations reach every part of the loader.
RICH = """\
flow: rich_example
version: 2
description: Orders to the ERP, pickups to the store, lines to the warehouse.
vars:
  out_dir: out
mappings: [../../mappings]
concurrency: 4
on_error: dead_letter
schedule: "*/5 * * * *"
retention: 30d
connections:
  erp:
    connector: http
    base_url: https://erp.example.com/api
    auth: {type: bearer, token: "${env:ERP_TOKEN}"}
    timeout: 10
    retry: {attempts: 3, backoff: 0.5, max_backoff: 10}
    rate_limit: 20/s
    circuit_breaker: {failures: 5, cooldown: 30, on_open: stop}
  shop:
    connector: http
    base_url: https://shop.example.com
  db:
    connector: sqlite
    path: out/erp.db
  queue:
    connector: file
source:
  connection: shop
  path: /orders.json
  records: orders
  key: "shopify:{{ record.id }}"
steps:
  - name: customer
    enrich:
      connection: shop
      method: GET
      path: "/customers/{{ record.customer.id }}.json"
      save_as: customer_record
  - map: shopify_order_to_canonical
    into: canonical
  - map: shopify_order_to_canonical
  - validate: order
  - filter: record.totals.total | float > 0
  - set:
      channel: web
      label: "order {{ record.order_number }}"
  - route:
      - when: not record.customer.email
        steps:
          - name: no_email
            fail: "order {{ record.order_number }} has no e-mail"
      - when: record.fulfillment.method == 'pickup'
        steps:
          - name: to_store
            send:
              connection: queue
              path: "{{ vars.out_dir }}/pickups.ndjson"
              record: "{{ record }}"
      - otherwise:
          - name: to_warehouse
            send: {connection: queue, path: out/ship.ndjson, record: "{{ record.order_id }}"}
  - foreach:
      items: "{{ record.lines }}"
      as: line
      key: "{{ parent.order_id }}:{{ line.sku }}"
      steps:
        - name: line_row
          send:
            connection: db
            table: lines
            mode: upsert
            key: [order_id, sku]
            row: {order_id: "{{ parent.order_id }}", sku: "{{ line.sku }}"}
  - name: erp_order
    send:
      connection: erp
      path: /sales-orders
      idempotency_key: "order:{{ record.order_id }}"
      on_change: update
      retry: {attempts: 2}
      body:
        number: "{{ record.order_number }}"
        total: "{{ record.totals.total }}"
"""

VALID_FLOWS = {
    "rich": RICH,
    "quickstart": (ROOT / "examples" / "quickstart" / "flow.yaml").read_text(encoding="utf-8"),
}

_KEYS = sorted(
    set(SCHEMA["properties"])
    | set(SCHEMA["definitions"]["step"]["properties"])
    | set(SCHEMA["definitions"]["call"]["properties"])
    | {"when", "otherwise", "steps", "items", "as", "key", "path", "record", "body"}
)
_VALUES = [
    "42",
    "-1",
    "3.5",
    "true",
    "no",
    "null",
    "~",
    "[]",
    "{}",
    "[a, b]",
    "{a: 1}",
    '"x"',
    "2024-01-01",
    "2024-02-30",
    "!!int x",
    "!!bool maybe",
    "1" * 5000,
    "'{{ record.id }}'",
    '"{{ nope }}"',
    '"{{"',
    "''",
    "|",
]
_KEY_LINE = re.compile(r"^(?P<indent>\s*(?:-\s+)?)(?P<key>[A-Za-z_][\w.-]*):(?P<rest>.*)$")


def _mutate(text: str, kind: str, index: int, choice: int) -> str:
    lines = text.splitlines()
    i = index % len(lines)
    line = lines[i]
    match = _KEY_LINE.match(line)
    if kind == "delete_line":
        del lines[i]
    elif kind == "duplicate_line":
        lines.insert(i, line)
    elif kind == "drop_indent":
        lines[i] = line[2:] if line.startswith("  ") else line.lstrip()
    elif kind == "add_indent":
        lines[i] = "  " + line
    elif kind == "insert_braces":
        at = choice % (len(line) + 1)
        lines[i] = line[:at] + "{{" + line[at:]
    elif kind == "rename_key" and match:
        new = _KEYS[choice % len(_KEYS)] if choice % 3 else match["key"][:-1] or "x"
        lines[i] = f"{match['indent']}{new}:{match['rest']}"
    elif kind == "change_value" and match:
        value = _VALUES[choice % len(_VALUES)]
        lines[i] = f"{match['indent']}{match['key']}: {value}"
    elif kind == "delete_key" and match:
        # the key and every line indented deeper below it
        depth = len(match["indent"])
        end = i + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > depth
        ):
            end += 1
        del lines[i:end]
    elif kind == "tab":
        lines[i] = "\t" + line.lstrip()
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A flow file two folders down, so ``../../mappings`` finds the shipped mappings."""
    root = tmp_path_factory.mktemp("mutations")
    os.symlink(ROOT / "mappings", root / "mappings")
    (root / "a" / "b").mkdir(parents=True)
    return root / "a" / "b" / "flow.yaml"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    return Engine(state=tmp_path_factory.mktemp("state") / "s.db")


@pytest.mark.parametrize("name", sorted(VALID_FLOWS))
def test_the_unmutated_flows_are_valid(name, place, engine):
    place.write_text(VALID_FLOWS[name], encoding="utf-8")
    assert [str(p) for p in engine.check(place) if p.severity == "error"] == []


MUTATIONS = st.sampled_from(
    [
        "delete_line",
        "duplicate_line",
        "drop_indent",
        "add_indent",
        "insert_braces",
        "rename_key",
        "change_value",
        "delete_key",
        "tab",
    ]
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(sorted(VALID_FLOWS)),
    mutations=st.lists(
        st.tuples(MUTATIONS, st.integers(0, 10_000), st.integers(0, 10_000)),
        min_size=1,
        max_size=3,
    ),
)
def test_a_mutated_flow_loads_or_fails_with_located_problems(name, mutations, place, engine):
    text = VALID_FLOWS[name]
    for kind, index, choice in mutations:
        text = _mutate(text, kind, index, choice)
    place.write_text(text, encoding="utf-8")
    try:
        flow = engine.load(place)
    except FlowError as exc:
        assert exc.problems, text
        errors = [p for p in exc.problems if p.severity == "error"]
        assert errors, text
        for problem in exc.problems:
            assert problem.line is not None and problem.line >= 1, (str(problem), text)
            assert problem.message, text
    else:
        assert flow.name and flow.steps is not None
