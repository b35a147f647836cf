"""A replay reuses the vars the failed run was given: ``flowyard dlq replay FLOW`` needs no
``--var`` to send where the run would have sent."""

from __future__ import annotations

import json

from tests.conftest import invoke, read_ndjson, write_flow, write_ndjson

FLOW = """
flow: priced
connections:
  out: {connector: file}
source: {connector: file, path: in.ndjson}
steps:
  - route:
      - when: record.total > LIMIT
        steps:
          - fail: "total {{ record.total }} is above the limit"
  - send: {connection: out, path: "{{ vars.dir }}/{{ vars.name }}.ndjson", record: "{{ record }}"}
"""


def test_a_replay_sends_with_the_vars_of_the_run_that_failed(tmp_path):
    write_ndjson(tmp_path / "in.ndjson", [{"id": 1, "total": 10}, {"id": 2, "total": 150}])
    (tmp_path / "shipped").mkdir()
    flow = write_flow(tmp_path, FLOW.replace("LIMIT", "100"))
    state = tmp_path / "state.db"
    first = invoke(
        "run",
        flow,
        "--state",
        state,
        "--var",
        f"dir={tmp_path / 'shipped'}",
        "--var",
        "name=orders",
        cwd=tmp_path,
    )
    assert first.returncode == 1, first.stderr
    runs = json.loads(invoke("runs", "list", "--state", state, "-o", "json").stdout)
    assert runs[0]["vars"] == {"dir": str(tmp_path / "shipped"), "name": "orders"}

    write_flow(tmp_path, FLOW.replace("LIMIT", "1000"))  # the limit is fixed
    replay = invoke(
        "dlq", "replay", flow, "--from-start", "--state", state, "-o", "json", cwd=tmp_path
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert [r["id"] for r in read_ndjson(tmp_path / "shipped" / "orders.ndjson")] == [1, 2]


def test_vars_given_to_the_replay_override_the_runs(tmp_path):
    write_ndjson(tmp_path / "in.ndjson", [{"id": 2, "total": 150}])
    flow = write_flow(tmp_path, FLOW.replace("LIMIT", "100"))
    state = tmp_path / "state.db"
    args = ("--state", state, "--var", f"dir={tmp_path}")
    assert invoke("run", flow, *args, "--var", "name=a", cwd=tmp_path).returncode == 1
    write_flow(tmp_path, FLOW.replace("LIMIT", "1000"))
    replay = invoke(
        "dlq", "replay", flow, "--from-start", "--state", state, "--var", "name=b", cwd=tmp_path
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert read_ndjson(tmp_path / "b.ndjson") == [{"id": 2, "total": 150}]
    assert not (tmp_path / "a.ndjson").exists()
