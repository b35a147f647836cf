"""A record cannot read the secrets its flow uses: ``${env:NAME}`` is resolved in the flow's
own text, once; text that arrives in a record or a variable is data forever."""

from __future__ import annotations

import json

from engine import Engine
from tests.conftest import read_ndjson, write_flow, write_ndjson

TOKEN = "tok-7f3a9c1e5b"


def test_a_record_holding_an_env_reference_is_written_as_that_text(tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_TOKEN", TOKEN)
    monkeypatch.setenv("OUT_DIR", str(tmp_path / "out"))
    flow = write_flow(
        tmp_path,
        """
        flow: leak_to_file
        connections:
          out: {connector: file, base_dir: "${env:OUT_DIR}"}
          erp:
            connector: http
            base_url: "http://127.0.0.1:9"
            auth: {type: bearer, token: "${env:ERP_TOKEN}"}
        source: {connector: file, path: in.ndjson}
        steps:
          - name: write
            send: {connection: out, path: orders.ndjson, record: "{{ record }}"}
          - filter: "false"
          - send: {connection: erp, path: /never, body: "{{ record }}"}
        """,
    )
    attack = {"id": 1, "note": "${env:ERP_TOKEN}", "nested": ["x ${env:ERP_TOKEN} y"]}
    write_ndjson(tmp_path / "in.ndjson", [attack])
    result = Engine(state=tmp_path / "s.db").run(flow)
    assert result.exit_code == 0, result
    written = (tmp_path / "out" / "orders.ndjson").read_text()
    assert TOKEN not in written
    assert read_ndjson(tmp_path / "out" / "orders.ndjson") == [attack]


def test_over_http_the_target_gets_the_secret_only_where_the_flow_put_it(
    tmp_path, target, monkeypatch
):
    monkeypatch.setenv("ERP_TOKEN", TOKEN)
    flow = write_flow(
        tmp_path,
        """
        flow: leak_to_http
        connections:
          erp:
            connector: http
            base_url: "{{ vars.url }}"
            auth: {type: bearer, token: "${env:ERP_TOKEN}"}
        source: {connector: file, path: in.ndjson}
        steps:
          - name: post
            send:
              connection: erp
              path: /orders
              body: {order: "{{ record }}", note: "{{ record.id }} signed ${env:ERP_TOKEN}"}
        """,
    )
    write_ndjson(tmp_path / "in.ndjson", [{"id": 7, "note": "${env:ERP_TOKEN}"}])
    result = Engine(state=tmp_path / "s.db").run(flow, vars={"url": target.url})
    assert result.exit_code == 0, result
    [request] = target.applied
    body = request["body"]
    body = json.loads(body) if isinstance(body, str) else body
    assert body["order"] == {"id": 7, "note": "${env:ERP_TOKEN}"}
    assert body["note"] == f"7 signed {TOKEN}"  # the flow's own reference, mixed with data
    assert target.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_a_record_naming_a_variable_the_flow_does_not_use_goes_through(tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_TOKEN", TOKEN)
    monkeypatch.setenv("HOME_SECRET", "never-read")
    monkeypatch.setenv("OUT_DIR", str(tmp_path))
    flow = write_flow(
        tmp_path,
        """
        flow: unknown_name
        connections:
          out: {connector: file, base_dir: "${env:OUT_DIR}"}
        source: {connector: file, path: in.ndjson}
        steps:
          - send: {connection: out, path: "out.ndjson", record: "{{ record }}"}
        """,
    )
    records = [{"id": 1, "a": "${env:HOME_SECRET}"}, {"id": 2, "a": "${env:NOT_SET_AT_ALL}"}]
    write_ndjson(tmp_path / "in.ndjson", records)
    result = Engine(state=tmp_path / "s.db").run(flow)
    assert (result.exit_code, result.counts["done"]) == (0, 2), result
    assert read_ndjson(tmp_path / "out.ndjson") == records


def test_a_variable_holding_an_env_reference_stays_text(tmp_path, target, monkeypatch):
    monkeypatch.setenv("ERP_TOKEN", TOKEN)
    flow = write_flow(
        tmp_path,
        """
        flow: var_leak
        vars: {tag: none}
        connections:
          erp:
            connector: http
            base_url: "{{ vars.url }}"
            headers: {X-Tag: "{{ vars.tag }}"}
            auth: {type: bearer, token: "${env:ERP_TOKEN}"}
        source: {connector: file, path: in.ndjson}
        steps:
          - send: {connection: erp, path: /o, body: {tag: "{{ vars.tag }}"}}
        """,
    )
    write_ndjson(tmp_path / "in.ndjson", [{"id": 1}])
    run_vars = {"url": target.url, "tag": "${env:ERP_TOKEN}"}
    assert Engine(state=tmp_path / "s.db").run(flow, vars=run_vars).exit_code == 0
    [request] = target.requests
    assert request["headers"]["x-tag"] == "${env:ERP_TOKEN}"
    assert TOKEN not in request["body"]


def test_an_env_reference_inside_an_expression_is_reported_at_load(tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_TOKEN", TOKEN)
    flow = write_flow(
        tmp_path,
        """
        flow: inside
        connections:
          out: {connector: file}
        source: {connector: file, path: in.ndjson}
        steps:
          - send: {connection: out, path: o.ndjson, record: "{{ record.id ~ '${env:ERP_TOKEN}' }}"}
        """,
    )
    problems = Engine(state=tmp_path / "s.db").check(flow)
    assert any("stays literal" in p.message and p.line == 6 for p in problems), problems


def test_a_flow_cannot_read_the_engines_environment_entry_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_TOKEN", TOKEN)
    flow = write_flow(
        tmp_path,
        """
        flow: reach
        connections:
          out: {connector: file, base_dir: "${env:ERP_TOKEN}"}
        source: {connector: file, path: in.ndjson}
        steps:
          - send: {connection: out, path: o.ndjson, record: "{{ fy_env['ERP_TOKEN'] }}"}
        """,
    )
    problems = Engine(state=tmp_path / "s.db").check(flow)
    assert any("unknown name 'fy_env'" in p.message for p in problems), problems
