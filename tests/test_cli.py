"""The CLI as a user runs it, on real files: whole stories in real subprocesses (the exit
codes a shell sees); arguments, help and what commands print in-process (``invoke``)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import typer.main

from tests.conftest import ROOT, flowyard, invoke, read_ndjson


def quickstart(tmp_path):
    work = tmp_path / "quickstart"
    shutil.copytree(
        ROOT / "examples" / "quickstart", work, ignore=shutil.ignore_patterns("out", ".flowyard")
    )
    text = (work / "flow.yaml").read_text().replace("[../../mappings]", f"[{ROOT / 'mappings'}]")
    (work / "flow.yaml").write_text(text)
    return work


def test_quickstart_runs_then_skips_everything_and_traces_one_order(tmp_path):
    work = quickstart(tmp_path)
    first = flowyard("run", "flow.yaml", "--output", "json", cwd=work)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["counts"]["read"] == 10 and summary["counts"]["done"] == 10
    assert set(summary) >= {"run_id", "flow", "status", "counts", "duration_s"}
    assert "Traceback" not in first.stderr

    erp = sqlite3.connect(work / "out" / "erp.db")
    assert erp.execute("SELECT count(*) FROM sales_orders").fetchone()[0] == 10
    pickups = read_ndjson(work / "out" / "pickups.ndjson")
    shipments = read_ndjson(work / "out" / "shipments.ndjson")
    assert len(pickups) + len(shipments) == 10 and pickups

    second = flowyard("run", "flow.yaml", "--output", "json", cwd=work)
    assert second.returncode == 0
    assert json.loads(second.stdout)["counts"]["skipped"] == 10
    assert len(read_ndjson(work / "out" / "pickups.ndjson")) == len(pickups)

    order_id = json.loads((work / "orders.ndjson").read_text().splitlines()[0])["id"]
    trace = flowyard("trace", str(order_id), cwd=work)
    assert trace.returncode == 0
    assert trace.stdout.count("quickstart_orders  run ") == 2
    assert "erp_sales_order: sent" in trace.stdout
    assert "unchanged: skipped" in trace.stdout  # the same order, flow and mapping as before

    runs = flowyard("runs", "list", "--output", "json", cwd=work)
    listed = json.loads(runs.stdout)
    assert [r["run_id"] for r in listed] == [json.loads(second.stdout)["run_id"], summary["run_id"]]
    shown = json.loads(
        flowyard("runs", "show", summary["run_id"][:17], "--output", "json", cwd=work).stdout
    )
    assert len(shown["records"]) == 10


def test_a_changed_order_is_a_conflict_until_the_flow_says_update(tmp_path):
    work = quickstart(tmp_path)
    assert flowyard("run", "flow.yaml", cwd=work).returncode == 0
    lines = (work / "orders.ndjson").read_text().splitlines()
    order = json.loads(lines[0])
    order["total_price"] = "999.00"
    (work / "orders.ndjson").write_text("\n".join([json.dumps(order)] + lines[1:]) + "\n")
    changed = flowyard("run", "flow.yaml", cwd=work)
    assert changed.returncode == 1, changed.stdout
    letters = json.loads(flowyard("dlq", "list", "--output", "json", cwd=work).stdout)
    assert [d["error_class"] for d in letters] == ["ConflictError"]
    flow = work / "flow.yaml"
    flow.write_text(
        flow.read_text().replace(
            "      mode: upsert\n", "      mode: upsert\n      on_change: update\n"
        )
    )
    replay = flowyard("dlq", "replay", "flow.yaml", cwd=work)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    erp = sqlite3.connect(work / "out" / "erp.db")
    totals = dict(erp.execute("SELECT order_id, total FROM sales_orders").fetchall())
    assert totals[f"shopify:{order['id']}"] == "999.00"
    assert json.loads(flowyard("dlq", "list", "--output", "json", cwd=work).stdout) == []


def test_dry_run_leaves_no_state_behind(tmp_path):
    work = quickstart(tmp_path)
    result = invoke("run", "flow.yaml", "--dry-run", "--output", "json", cwd=work)
    assert result.returncode == 0
    assert len(json.loads(result.stdout)["would_send"]) == 20
    assert not (work / ".flowyard").exists() and not (work / "out").exists()


def test_invalid_flow_and_bad_arguments_exit_2_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow: x\nsource: {connector: file, path: a.ndjson}\nsteps:\n  - sned: {}\n")
    for args in (
        ["run", str(bad)],
        ["validate", str(bad)],
        ["run", str(ROOT / "examples/quickstart/flow.yaml"), "--var", "novalue"],
        ["runs", "list", "--output", "xml"],
    ):
        result = invoke(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
    result = invoke("run", str(bad), cwd=tmp_path)
    assert "bad.yaml:4:5" in result.stdout + result.stderr
    assert "did you mean 'send'" in result.stdout + result.stderr


def test_reading_commands_without_a_state_file_say_so(tmp_path):
    result = invoke("runs", "list", cwd=tmp_path)
    assert result.returncode == 2 and "no state file" in result.stderr


def test_connectors_lists_the_built_ins_with_their_options():
    result = invoke("connectors", "--output", "json")
    listed = {c["name"]: c for c in json.loads(result.stdout)["connectors"]}
    assert {"file", "http", "sqlite", "stdout"} <= set(listed)
    assert "base_url" in listed["http"]["options"]
    assert listed["sqlite"]["roles"] == ["source", "action"]


def test_every_command_has_help_and_a_section_in_the_cli_docs():
    import cli

    docs = (ROOT / "docs" / "cli.md").read_text()
    group = typer.main.get_group(cli.app)

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, prefix + [name])
        if not getattr(cmd, "commands", None):
            yield prefix, cmd

    commands = list(walk(group, []))
    assert len(commands) >= 10
    for path, cmd in commands:
        assert (cmd.help or "").strip(), path
        head = " ".join(path[:-1] + [path[-1]]) if len(path) > 1 else path[0]
        assert f"flowyard {path[0]}" in docs, path
        assert path[-1] in docs, head
        help_run = invoke(*path, "--help")
        assert help_run.returncode == 0 and "Usage" in help_run.stdout


def test_schema_prints_the_flow_language_for_editors():
    result = invoke("schema")
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert "steps" in schema["properties"]


VARS_FLOW = """
flow: stock_to_shop
vars:
  out: out.ndjson
  shop_locations: {}
connections:
  shop: {connector: file}
source: {connector: file, path: levels.ndjson}
steps:
  - name: set_level
    send:
      connection: shop
      path: "{{ vars.out }}"
      record:
        location_id: "{{ vars.shop_locations[record.store] }}"
        available: "{{ record.qty }}"
"""


def test_vars_files_give_typed_variables_and_var_pairs_override_them(tmp_path):
    (tmp_path / "flow.yaml").write_text(VARS_FLOW)
    (tmp_path / "levels.ndjson").write_text('{"id": 1, "store": "STO", "qty": 4}\n')
    (tmp_path / "shop.yaml").write_text("shop_locations: {STO: 61, WH: 62}\nout: ignored\n")
    (tmp_path / "more.json").write_text('{"shop_locations": {"STO": 71}}')
    result = invoke(
        "run", "flow.yaml", "--vars", "shop.yaml", "--vars", "more.json",
        "--var", "out=levels_out.ndjson", "--output", "json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # the mapping stays a mapping, the later file wins, and --var wins over both
    assert read_ndjson(tmp_path / "levels_out.ndjson") == [{"location_id": 71, "available": 4}]
    assert not (tmp_path / "ignored").exists()


def test_a_vars_file_that_is_not_a_mapping_is_refused_with_where_and_why(tmp_path):
    (tmp_path / "flow.yaml").write_text(VARS_FLOW)
    (tmp_path / "broken.yaml").write_text("shop_locations:\n  STO: 61\n   WH: 62\n")
    (tmp_path / "list.yaml").write_text("- STO\n")
    cases = {
        "broken.yaml": "--vars broken.yaml:3:",
        "list.yaml": "expected a mapping of variable names to values",
        "missing.yaml": "--vars missing.yaml: cannot read it",
    }
    for name, message in cases.items():
        for command in (["run", "flow.yaml"], ["dlq", "replay", "flow.yaml"]):
            result = invoke(*command, "--vars", name, cwd=tmp_path)
            assert result.returncode == 2, (name, command, result.stderr)
            assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
