"""Step semantics as a user sees them: route, foreach, filter, set, enrich, dry run,
cursors, bounded memory, the run log."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from engine import Engine, FlowError
from tests.conftest import read_ndjson, write_flow, write_ndjson

ROUTING = """
flow: routing
connections:
  out: {connector: file}
source: {connector: file, path: unused.ndjson}
steps:
  - filter: record.total | float > 0
  - set:
      label: "order {{ record.id }}"
  - route:
      - when: record.pickup
        steps:
          - name: to_store
            send: {connection: out, path: "{{ vars.dir }}/pickup.ndjson", record: "{{ record }}"}
      - when: record.express
        steps:
          - name: to_courier
            send: {connection: out, path: "{{ vars.dir }}/express.ndjson", record: "{{ record }}"}
      - otherwise:
          - name: to_warehouse
            send: {connection: out, path: "{{ vars.dir }}/ship.ndjson", record: "{{ record }}"}
  - name: to_all
    send: {connection: out, path: "{{ vars.dir }}/all.ndjson", record: "{{ record.label }}"}
"""


def test_route_takes_the_first_matching_branch_then_continues(tmp_path):
    flow = write_flow(tmp_path, ROUTING)
    records = [
        {"id": 1, "total": "5", "pickup": True, "express": True},
        {"id": 2, "total": "5", "pickup": False, "express": True},
        {"id": 3, "total": "5", "pickup": False, "express": False},
        {"id": 4, "total": "0", "pickup": True, "express": False},
    ]
    result = Engine(state=tmp_path / "s.db").run(flow, records=records, vars={"dir": str(tmp_path)})
    assert result.counts["done"] == 3 and result.counts["filtered"] == 1
    assert [r["id"] for r in read_ndjson(tmp_path / "pickup.ndjson")] == [1]
    assert [r["id"] for r in read_ndjson(tmp_path / "express.ndjson")] == [2]
    assert [r["id"] for r in read_ndjson(tmp_path / "ship.ndjson")] == [3]
    assert read_ndjson(tmp_path / "all.ndjson") == ["order 1", "order 2", "order 3"]


def test_a_route_branch_without_sends_does_not_make_a_repeat_count_as_done(tmp_path):
    # one branch per input format, only maps: the record is skipped when its sends are
    flow = write_flow(
        tmp_path,
        """
        flow: formats
        connections:
          out: {connector: file}
        source: {connector: file, path: unused.ndjson}
        steps:
          - route:
              - when: record.csv
                steps:
                  - set: {id: "{{ record.number }}"}
              - otherwise:
                  - set: {id: "{{ record.id }}"}
          - filter: record.id != 'drop'
          - name: out
            send: {connection: out, path: "{{ vars.out }}", record: "{{ record.id }}"}
        """,
    )
    records = [
        {"csv": True, "number": "a"},
        {"csv": False, "id": "b"},
        {"csv": False, "id": "drop"},
    ]
    eng, run_vars = Engine(state=tmp_path / "s.db"), {"out": str(tmp_path / "out.ndjson")}
    first = eng.run(flow, records=records, vars=run_vars)
    assert (first.counts["done"], first.counts["filtered"]) == (2, 1)
    second = eng.run(flow, records=records, vars=run_vars)
    assert (second.counts["skipped"], second.counts["filtered"], second.counts["done"]) == (2, 1, 0)


def test_foreach_runs_its_steps_per_item_with_the_parent_in_reach(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: lines
        connections:
          out: {connector: file}
        source: {connector: file, path: unused.ndjson}
        steps:
          - foreach:
              items: "{{ record.lines }}"
              as: line
              steps:
                - filter: line.qty > 0
                - name: line_out
                  send:
                    connection: out
                    path: "{{ vars.dir }}/lines.ndjson"
                    record:
                      order: "{{ parent.id }}"
                      sku: "{{ line.sku }}"
                      qty: "{{ record.qty }}"
          - name: order_out
            send: {connection: out, path: "{{ vars.dir }}/orders.ndjson", record: "{{ record.id }}"}
    """,
    )
    records = [
        {"id": 7, "lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}, {"sku": "C", "qty": 2}]}
    ]
    result = Engine(state=tmp_path / "s.db").run(flow, records=records, vars={"dir": str(tmp_path)})
    assert result.counts["done"] == 1
    assert read_ndjson(tmp_path / "lines.ndjson") == [
        {"order": 7, "sku": "A", "qty": 1},
        {"order": 7, "sku": "C", "qty": 2},
    ]
    assert read_ndjson(tmp_path / "orders.ndjson") == [7]


def test_a_bad_record_is_dead_lettered_while_the_good_ones_go_on(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: strict
        connections:
          out: {connector: file}
        source: {connector: file, path: unused.ndjson}
        steps:
          - set: {sku: "{{ record.sku }}"}
          - name: out
            send: {connection: out, path: "{{ vars.dir }}/out.ndjson", record: "{{ record }}"}
    """,
    )
    records = [{"id": 1, "sku": "A"}, {"id": 2}, {"id": 3, "sku": "C"}]
    eng = Engine(state=tmp_path / "s.db")
    result = eng.run(flow, records=records, vars={"dir": str(tmp_path)})
    assert result.counts["done"] == 2 and result.counts["dead_lettered"] == 1
    assert result.exit_code == 1
    store = eng.store()
    [letter] = store.dead_letters()
    store.close()
    assert letter.record_key == "2" and letter.step == "set_1"
    assert "sku" in letter.message


def test_dry_run_sends_nothing_writes_no_state_and_masks_secrets(tmp_path, target, monkeypatch):
    monkeypatch.setenv("ERP_TOKEN", "s3cret-token-value")
    flow = write_flow(
        tmp_path,
        """
        flow: dry
        connections:
          erp:
            connector: http
            base_url: "{{ vars.url }}"
            auth: {type: bearer, token: "${env:ERP_TOKEN}"}
        source: {connector: file, path: "{{ vars.input }}"}
        steps:
          - name: post
            send:
              connection: erp
              path: /orders
              body: {id: "{{ record.id }}", note: "token is ${env:ERP_TOKEN}"}
    """,
    )
    write_ndjson(tmp_path / "in.ndjson", [{"id": 1}, {"id": 2}])
    state = tmp_path / "state" / "flowyard.db"
    eng = Engine(state=state)
    run_vars = {"url": target.url, "input": str(tmp_path / "in.ndjson")}
    result = eng.run(flow, vars=run_vars, dry_run=True)
    assert result.dry_run and result.counts["done"] == 2
    assert not state.exists() and not state.parent.exists()
    assert target.requests == []
    shown = json.dumps(result.to_dict())
    assert "s3cret-token-value" not in shown and "***" in shown
    # with existing state, a dry run leaves the file byte for byte as it was
    state.parent.mkdir()  # a real run needs the folder (it is never made for a typo)
    eng.run(flow, vars=run_vars)
    before = hashlib.sha256(state.read_bytes()).hexdigest()
    again = eng.run(flow, vars=run_vars, dry_run=True)
    assert again.would_send == []  # every send would be a duplicate
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before
    assert len(target.applied) == 2


def test_the_run_log_has_one_json_line_per_event_with_the_facts_and_no_secret(
    tmp_path, target, monkeypatch
):
    monkeypatch.setenv("ERP_TOKEN", "another-s3cret")
    flow = write_flow(
        tmp_path,
        """
        flow: logged
        connections:
          erp: {connector: http, base_url: "{{ vars.url }}",
                auth: {type: bearer, token: "${env:ERP_TOKEN}"},
                retry: {attempts: 3, backoff: 0.01}}
        source: {connector: file, path: unused.ndjson}
        steps:
          - name: post
            send:
              connection: erp
              path: /x
              body: {secret: "${env:ERP_TOKEN}", id: "{{ record.id }}"}
    """,
    )
    target.script([{"status": 503}])
    events = []
    eng = Engine(state=tmp_path / "s.db", listeners=[events.append])
    result = eng.run(flow, records=[{"id": 42}], vars={"url": target.url})
    lines = [json.loads(x) for x in open(result.log_path)]
    assert all(line["run_id"] == result.run_id and line["flow"] == "logged" for line in lines)
    attempts = [line for line in lines if line["event"] == "attempt"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "transient"), (2, "ok")]
    assert all(
        a["record_key"] == "42" and a["step"] == "post" and "duration_ms" in a for a in attempts
    )
    assert "another-s3cret" not in open(result.log_path).read()
    # listeners see every line of the log, and the records' own lines of the debug level
    assert [e["event"] for e in events if e["event"] != "record"] == [x["event"] for x in lines]
    assert [e["outcome"] for e in events if e["event"] == "record"] == ["done"]
    # the request really carried the secret: it was redacted only in what we keep
    assert target.applied[0]["body"]["secret"] == "another-s3cret"


def test_sqlite_source_cursor_resumes_after_the_last_final_record(tmp_path):
    db = tmp_path / "shop.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT, updated INTEGER)")
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, f"{i}.00", i) for i in (1, 2, 3)])
    conn.commit()
    flow = write_flow(
        tmp_path,
        f"""
        flow: incremental
        connections:
          shop: {{connector: sqlite, path: "{db}"}}
          out: {{connector: file}}
        source: {{connection: shop, table: orders, cursor: updated}}
        steps:
          - name: out
            send: {{connection: out, path: "{tmp_path}/out.ndjson", record: "{{{{ record.id }}}}"}}
    """,
    )
    eng = Engine(state=tmp_path / "s.db")
    assert eng.run(flow).counts["read"] == 3
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(4, "4.00", 4), (5, "5.00", 5)])
    conn.commit()
    second = eng.run(flow)
    assert second.counts["read"] == 2
    assert read_ndjson(tmp_path / "out.ndjson") == [1, 2, 3, 4, 5]
    assert eng.run(flow).counts["read"] == 0


def test_records_stream_through_with_bounded_memory(tmp_path):
    """Peak memory does not grow with the number of records (5x the records, same peak)."""
    import tracemalloc

    flow = write_flow(
        tmp_path,
        """
        flow: stream
        source: {connector: file, path: unused.ndjson}
        steps:
          - set: {double: "{{ record.n * 2 }}", pad: "{{ 'x' * 200 }}"}
          - filter: record.double < 0
    """,
    )
    eng = Engine(state=tmp_path / "s.db")
    flow = eng.load(flow)
    peaks = []
    for n in (2_000, 10_000):
        tracemalloc.start()
        result = eng.run(flow, records=({"id": i, "n": i} for i in range(n)))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert result.counts["filtered"] == n
    assert peaks[1] < peaks[0] * 1.5, peaks


def test_a_missing_environment_variable_refuses_to_run(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    flow = write_flow(
        tmp_path,
        """
        flow: needs_env
        connections:
          erp: {connector: http, base_url: "${env:NOT_SET_ANYWHERE}"}
        source: {connector: file, path: unused.ndjson}
        steps:
          - name: post
            send: {connection: erp, path: /x, body: "{{ record }}"}
    """,
    )
    eng = Engine(state=tmp_path / "s.db")
    assert [p.severity for p in eng.check(flow)] == ["warning"]
    with pytest.raises(FlowError, match="NOT_SET_ANYWHERE"):
        eng.run(flow, records=[{"id": 1}])


def test_public_api_all_is_complete():
    import inspect

    import engine

    # every name of __all__ is there (imported on first use, engine/__init__.py) and
    # documented; then every public name of the package is in __all__; submodules are internal
    for name in engine.__all__:
        assert getattr(engine, name).__doc__, name
    public = {
        n for n, v in vars(engine).items() if not n.startswith("_") and not inspect.ismodule(v)
    }
    assert public == set(engine.__all__)
