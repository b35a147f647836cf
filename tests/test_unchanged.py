"""Records that are the same as when they last went through are skipped before their steps.

A re-read full export must cost little, and must still do exactly what evaluating every
record would: a changed record, an edited mapping, another var, a lookup or a template
that reads the run all make records go through the steps again.
"""

from __future__ import annotations

import json
from contextlib import closing

import pytest

from engine import Engine
from engine.unchanged import varying_reason
from tests.conftest import read_ndjson, write_flow, write_ndjson

FLOW = """
flow: nightly_export
mappings: [maps]
vars:
  warehouse: W1
connections:
  out: {connector: file}
source: {connector: file, path: export.ndjson}
steps:
  - map: order_row
  - route:
      - when: record.qty < 0
        steps:
          - name: negative
            fail: "negative quantity on order {{ record.id }}"
  - name: to_erp
    send:
      connection: out
      on_change: update
      path: erp.ndjson
      record: "{{ record }}"
"""

MAPPING = """
mapping: order_row
fields:
  id: "{{ record.id }}"
  qty: "{{ record.qty }}"
  warehouse: "{{ vars.warehouse }}"
"""


def setup(tmp_path, records):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "order_row.yaml").write_text(MAPPING)
    write_ndjson(tmp_path / "export.ndjson", records)
    return write_flow(tmp_path, FLOW), Engine(state=tmp_path / "state.db")


def trace_steps(engine, key):
    with closing(engine.store()) as store:
        rows = store.db.execute(
            "SELECT steps FROM traces WHERE record_key = ? ORDER BY id", (key,)
        ).fetchall()
    return [json.loads(steps) for (steps,) in rows]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_rerun_skips_unchanged_records_before_their_first_step(
    tmp_path, concurrency, monkeypatch
):
    monkeypatch.setenv("FLOWYARD_LOG_LEVEL", "debug")  # a line for every record
    flow, engine = setup(tmp_path, [{"id": n, "qty": n} for n in (1, 2, 3)])
    flow.write_text(flow.read_text().replace("mappings:", f"concurrency: {concurrency}\nmappings:"))
    assert engine.run(flow).counts["done"] == 3
    second = engine.run(flow)
    assert second.counts["skipped"] == 3 and second.counts["done"] == 0
    assert len(read_ndjson(tmp_path / "erp.ndjson")) == 3
    first_steps, again = trace_steps(engine, "2")
    assert [s[0] for s in first_steps] == ["map_1", "route_2", "to_erp"]
    assert again == [["unchanged", "skipped", f"as in run {engine_first_run(engine)}"]]
    log = [json.loads(line) for line in open(second.log_path)]
    records = [e for e in log if e.get("event") == "record"]
    assert {(e["outcome"], e.get("reason")) for e in records} == {("skipped", "unchanged")}


def engine_first_run(engine):
    with closing(engine.store()) as store:
        return store.db.execute("SELECT run_id FROM runs ORDER BY started_at LIMIT 1").fetchone()[0]


def test_a_changed_record_goes_through_the_steps_again(tmp_path):
    flow, engine = setup(tmp_path, [{"id": n, "qty": n} for n in (1, 2, 3)])
    engine.run(flow)
    write_ndjson(tmp_path / "export.ndjson", [{"id": 1, "qty": 1}, {"id": 2, "qty": 20}])
    second = engine.run(flow)
    assert second.counts == {**second.counts, "read": 2, "done": 1, "skipped": 1}
    assert read_ndjson(tmp_path / "erp.ndjson")[-1] == {"id": 2, "qty": 20, "warehouse": "W1"}


def test_an_edited_mapping_or_another_var_makes_every_record_run_again(tmp_path):
    flow, engine = setup(tmp_path, [{"id": 1, "qty": 1}])
    engine.run(flow)
    mapping = tmp_path / "maps" / "order_row.yaml"
    mapping.write_text(MAPPING + "# reviewed\n")  # same output, but the flow is not the same
    engine.run(flow)
    engine.run(flow, vars={"warehouse": "W2"})
    runs = trace_steps(engine, "1")
    assert runs[1][-1] == ["to_erp", "skipped", "duplicate"]  # evaluated, its send was done
    assert runs[2][-1][:2] == ["to_erp", "sent"]  # W2: a changed request, sent as an update
    assert read_ndjson(tmp_path / "erp.ndjson")[-1]["warehouse"] == "W2"
    assert engine.run(flow, vars={"warehouse": "W2"}).counts["skipped"] == 1
    assert trace_steps(engine, "1")[-1][0][0] == "unchanged"


def test_a_dead_lettered_record_is_evaluated_again_on_every_run(tmp_path):
    flow, engine = setup(tmp_path, [{"id": 1, "qty": -1}, {"id": 2, "qty": 2}])
    assert engine.run(flow).counts["dead_lettered"] == 1
    second = engine.run(flow)
    assert second.counts["dead_lettered"] == 1 and second.counts["skipped"] == 1
    assert trace_steps(engine, "1")[-1][-1][0] == "negative"


def test_pruned_keys_take_the_digests_with_them(tmp_path):
    flow, engine = setup(tmp_path, [{"id": 1, "qty": 1}])
    engine.run(flow)
    with closing(engine.store()) as store:
        store.prune(0, "nightly_export")
    assert engine.run(flow).counts["done"] == 1  # as documented for keys past the retention
    assert len(read_ndjson(tmp_path / "erp.ndjson")) == 2


def test_flows_that_read_the_run_or_look_data_up_evaluate_every_record(tmp_path):
    flow, engine = setup(tmp_path, [{"id": 1, "qty": 1}])
    text = FLOW.replace(
        "  - map: order_row\n", "  - map: order_row\n  - set: {seen: '{{ now_utc() }}'}\n"
    )
    text = text.replace('record: "{{ record }}"', 'record: "{{ record.id }}"')
    flow = write_flow(tmp_path, text)
    engine.run(flow)
    assert engine.run(flow).counts["skipped"] == 1
    assert trace_steps(engine, "1")[-1][-1] == ["to_erp", "skipped", "duplicate"]
    assert "now_utc" in varying_reason(engine.load(flow))

    lookup = FLOW.replace(
        "  - name: to_erp\n",
        "  - name: price\n    enrich: {connection: api, path: /price, save_as: price}\n"
        "  - name: to_erp\n",
    ).replace(
        "  out: {connector: file}\n",
        "  out: {connector: file}\n  api: {connector: http, base_url: 'http://127.0.0.1:9'}\n",
    )
    assert "enrich" in varying_reason(engine.load(write_flow(tmp_path, lookup, "lookup.yaml")))
    assert varying_reason(engine.load(write_flow(tmp_path, FLOW, "plain.yaml"))) is None


def test_a_record_that_failed_is_not_skipped_when_it_comes_back_as_it_was(tmp_path):
    # between the two clean passes its keys may have changed: it must be evaluated again
    flow, engine = setup(tmp_path, [{"id": 1, "qty": 1}])
    engine.run(flow)
    write_ndjson(tmp_path / "export.ndjson", [{"id": 1, "qty": -1}])
    assert engine.run(flow).counts["dead_lettered"] == 1
    write_ndjson(tmp_path / "export.ndjson", [{"id": 1, "qty": 1}])
    assert engine.run(flow).counts["skipped"] == 1
    assert trace_steps(engine, "1")[-1][-1] == ["to_erp", "skipped", "duplicate"]


def test_a_run_that_keeps_no_digests_makes_the_next_one_evaluate_every_record(tmp_path):
    flow, engine = setup(tmp_path, [{"id": 1, "qty": 1}])
    engine.run(flow)
    plain = flow.read_text()
    flow.write_text(
        plain.replace("  - map: order_row\n", "  - map: order_row\n  - set: {at: '{{ run.id }}'}\n")
    )
    engine.run(flow)  # reads run: keeps no digests, and may have changed keys
    flow.write_text(plain)
    engine.run(flow)
    # the second run sent the order with `at`: the plain order goes again as an update,
    # which skipping it as unchanged since the first run would have missed
    assert trace_steps(engine, "1")[-1][-1][:2] == ["to_erp", "sent"]
    assert "at" not in read_ndjson(tmp_path / "erp.ndjson")[-1]
