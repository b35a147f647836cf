"""SQL and file paths from record data, tested as the attacks of issue 11; and the seam
that lets a connector check its options when a flow loads (``Connector.lint``)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import ClassVar

import pytest

from connectors import Connector, Lint, Request, Response
from connectors.base import depends_on_record
from engine import Engine
from tests.conftest import invoke, write_flow

INJECTION = "x' UNION SELECT k FROM api_keys --"
API_KEY = "ak_live_8c1f2e"


def problems(tmp_path, text: str, name: str = "flow.yaml"):
    """(severity, path, line, message) of each problem `flowyard validate` would report."""
    found = Engine(state=tmp_path / "state.db").check(write_flow(tmp_path, text, name))
    return [(p.severity, p.path, p.line, p.message) for p in found]


@pytest.fixture
def crm(tmp_path):
    """A database with the customers a lookup may read, and a table it must never read."""
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (name TEXT, tier TEXT)")
        db.execute("INSERT INTO customers VALUES ('Ada', 'gold'), ('Bo', 'silver')")
        db.execute("CREATE TABLE api_keys (k TEXT)")
        db.execute("INSERT INTO api_keys VALUES (?)", (API_KEY,))
    db.close()
    return path


# -- SQL -----------------------------------------------------------------------------------

PASTED = """
flow: pasted
connections:
  crm: {connector: sqlite, path: crm.db}
source: {connector: file, path: none.ndjson}
steps:
  - name: tier
    enrich:
      connection: crm
      query: "SELECT tier FROM customers WHERE name = '{{ record.name }}'"
      save_as: tier
"""


def test_a_template_in_a_lookup_query_is_refused_with_the_query_rewritten(tmp_path, crm):
    [(severity, path, line, message)] = problems(tmp_path, PASTED)
    assert (severity, path, line) == ("error", "steps[0].enrich.query", 9)
    assert "SELECT tier FROM customers WHERE name = :name" in message
    assert "params: {name: '{{ record.name }}'}" in message
    proc = invoke("validate", tmp_path / "flow.yaml")
    assert proc.returncode == 2 and "steps[0].enrich.query" in proc.stdout + proc.stderr


def test_a_template_in_a_source_query_is_refused_too(tmp_path, crm):
    flow = """
    flow: pasted_source
    connections:
      crm: {connector: sqlite, path: crm.db}
    source:
      connection: crm
      query: "SELECT * FROM customers WHERE tier = '{{ vars.tier }}'"
    steps:
      - filter: "true"
    """
    [(severity, path, _, message)] = problems(tmp_path, flow)
    assert (severity, path) == ("error", "source.query")
    assert "tier = :tier" in message


BOUND = """
flow: bound
connections:
  crm: {connector: sqlite, path: crm.db}
  out: {connector: file, base_dir: out}
source: {connector: file, path: none.ndjson}
steps:
  - name: tier
    enrich:
      connection: crm
      query: "SELECT tier FROM customers WHERE name = :name"
      params: {name: "{{ record.name }}"}
      save_as: tier
  - send:
      connection: out
      path: tiers.ndjson
      record: {id: "{{ record.id }}", tier: "{{ record.tier }}"}
"""


def test_an_injection_in_a_bound_parameter_reads_no_other_table(tmp_path, crm):
    assert problems(tmp_path, BOUND) == []
    eng = Engine(state=tmp_path / "state.db")
    flow = eng.load(tmp_path / "flow.yaml")
    result = eng.run(flow, records=[{"id": 1, "name": "Ada"}, {"id": 2, "name": INJECTION}])
    assert result.counts["done"] == 2
    assert (tmp_path / "out" / "tiers.ndjson").read_text().splitlines() == [
        '{"id":1,"tier":[{"tier":"gold"}]}',
        '{"id":2,"tier":[]}',  # the text was compared with names, not run as SQL
    ]


def test_a_source_query_takes_bound_params(tmp_path, crm):
    flow = """
    flow: by_tier
    vars: {tier: gold}
    connections:
      crm: {connector: sqlite, path: crm.db}
      out: {connector: file, base_dir: out}
    source:
      connection: crm
      query: "SELECT name FROM customers WHERE tier = :tier"
      params: {tier: "{{ vars.tier }}"}
      key: "{{ record.name }}"
    steps:
      - send: {connection: out, path: names.ndjson, record: "{{ record.name }}"}
    """
    assert problems(tmp_path, flow) == []
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(eng.load(tmp_path / "flow.yaml"), vars={"tier": INJECTION})
    assert result.counts["read"] == 0  # nobody's tier is that text
    result = eng.run(eng.load(tmp_path / "flow.yaml"))
    assert (tmp_path / "out" / "names.ndjson").read_text() == '"Ada"\n'


# -- file paths ----------------------------------------------------------------------------

FILE_SEND = """
flow: per_store
vars: {{day: mon}}
connections:
  queues: {{connector: file{base_dir}}}
source: {{connector: file, path: orders.ndjson}}
steps:
  - name: pickup
    send:
      connection: queues
      path: {path}
      record: "{{{{ record }}}}"
"""


def test_a_send_whose_path_comes_from_a_record_without_base_dir_is_warned_about(tmp_path):
    flow = FILE_SEND.format(base_dir="", path='"pickups/{{ record.store }}.ndjson"')
    [(severity, path, line, message)] = problems(tmp_path, flow)
    assert (severity, path, line) == ("warning", "steps[0].send.path", 10)
    assert "no base_dir" in message and "base_dir: out" in message


@pytest.mark.parametrize(
    ("base_dir", "path"),
    [
        (", base_dir: out", '"pickups/{{ record.store }}.ndjson"'),
        ("", '"pickups/{{ vars.day }}.ndjson"'),
        ("", "pickups.ndjson"),
    ],
    ids=["base_dir set", "vars only", "fixed path"],
)
def test_a_send_confined_or_not_record_driven_is_not_warned_about(tmp_path, base_dir, path):
    assert problems(tmp_path, FILE_SEND.format(base_dir=base_dir, path=path)) == []


@pytest.mark.parametrize("escape", ["../../{u}", "~/{u}", "/tmp/{u}"])
def test_with_base_dir_a_record_cannot_write_outside_it(tmp_path, monkeypatch, escape):
    escape = escape.format(u=f"flowyard-escaped-{os.getpid()}-{tmp_path.name}")
    landing = [  # where the file would land without base_dir
        (tmp_path / "out" / f"{escape}.ndjson").resolve(),
        Path(f"{escape}.ndjson").expanduser().resolve(),
    ]
    flow = write_flow(
        tmp_path,
        FILE_SEND.format(base_dir=", base_dir: out", path='"{{ record.store }}.ndjson"'),
    )
    monkeypatch.chdir(tmp_path.parent)  # base_dir is taken from the flow's folder, not here
    eng = Engine(state=tmp_path / "state.db")
    records = [{"id": 1, "store": "berlin"}, {"id": 2, "store": escape}]
    result = eng.run(eng.load(flow), records=records)
    assert (result.counts["done"], result.counts["dead_lettered"]) == (1, 1)
    assert (tmp_path / "out" / "berlin.ndjson").exists()
    assert not any(path.exists() for path in landing)
    store = eng.store()
    [letter] = store.dead_letters(flow="per_store")
    store.close()
    assert "outside base_dir" in letter.message


def test_depends_on_record_tells_record_data_from_run_constants():
    assert depends_on_record("{{ record.store }}.ndjson")
    assert depends_on_record("{{ item.sku }}-{{ vars.day }}")
    assert depends_on_record("{{ broken")
    assert not depends_on_record("{{ vars.day }}/{{ run.id }}.ndjson")
    assert not depends_on_record("plain.ndjson")
    assert not depends_on_record(7)


# -- http at load time ---------------------------------------------------------------------


def test_verify_false_is_warned_about_at_its_line(tmp_path):
    flow = """
    flow: insecure
    connections:
      erp:
        connector: http
        base_url: https://erp.example.com
        verify: false
    source: {connector: file, path: none.ndjson}
    steps:
      - send: {connection: erp, path: /orders, body: "{{ record }}"}
    """
    [(severity, path, line, message)] = problems(tmp_path, flow)
    assert (severity, path, line) == ("warning", "connections.erp.verify", 6)
    assert "CA bundle" in message


# -- the seam -------------------------------------------------------------------------------


class Picky(Connector):
    """A third-party connector with checks of its own."""

    name = "picky"
    description = "test: lints its options"
    options_schema: ClassVar[dict] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"mode": {"type": "string", "description": "m"}},
    }
    call_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {"target": {"type": "string", "description": "t"}},
    }

    @classmethod
    def lint(cls, role, options, connection):
        if role == "connection" and options.get("mode") == "explode":
            raise RuntimeError("lint bug")
        if role == "action" and connection.get("mode") == "strict" and not options.get("target"):
            return [Lint(("target",), "strict mode needs a target", "error")]
        return []

    def call(self, request: Request) -> Response:
        return Response()


def test_a_connector_lint_reports_at_the_step_and_a_broken_lint_is_not_fatal(tmp_path):
    eng = Engine(state=tmp_path / "state.db")
    eng.register_connector("picky", Picky)
    flow = """
    flow: picky
    connections:
      p: {connector: picky, mode: strict}
      q: {connector: picky, mode: explode}
    source: {connector: file, path: none.ndjson}
    steps:
      - send: {connection: p, target: ""}
      - send: {connection: q, target: x}
    """
    found = eng.check(write_flow(tmp_path, flow))
    assert [(p.severity, p.path) for p in found] == [
        ("warning", "connections.q"),
        ("error", "steps[0].send.target"),
    ]
    assert "lint bug" in found[0].message and "strict mode needs a target" in found[1].message
