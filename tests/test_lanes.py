"""A flow's ``concurrency``: lanes in worker processes for sends that wait on a target,
none for a flow whose calls are all local work; what a lane process does reaches the run
(its records' results, its run-log events, its dead letters, the secrets it learns)."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import pytest

from connectors import Registry
from connectors.base import Connector, LaneKind, Request, Response
from engine import Engine, lane_processes
from engine.lane_processes import fork_context, process_count
from engine.lanes import lane_kind
from tests.conftest import write_flow, write_ndjson
from tests.support.local_server import LocalServer, Seen

needs_processes = pytest.mark.skipif(fork_context() is None, reason="lane processes need Linux")


@pytest.fixture(autouse=True)
def two_lane_processes(monkeypatch):
    """Two lane processes whatever the cores: this test process runs other threads (the
    targets'), in which a run takes threads unless FLOWYARD_LANE_PROCESSES says so."""
    monkeypatch.setenv("FLOWYARD_LANE_PROCESSES", "2")


STOCK_FLOW = """
flow: stock_levels
concurrency: 8
connections:
  shop:
    connector: http
    base_url: "{{ vars.url }}"
    timeout: 5
    retry: {attempts: 4, backoff: 0.01, max_backoff: 0.02}
source:
  connector: file
  path: levels.ndjson
  key: "{{ record.sku }}"
steps:
  - name: set_level
    send:
      connection: shop
      path: /levels
      idempotency_key: "level:{{ record.sku }}"
      on_change: update
      body: {sku: "{{ record.sku }}", available: "{{ record.available }}", v: "{{ record.v }}"}
"""


def run_started(result: Any) -> dict[str, Any]:
    """The run's ``run_started`` line in its run log."""
    lines = Path(result.log_path).read_text().splitlines()
    return next(e for e in map(json.loads, lines) if e["event"] == "run_started")


@needs_processes
@pytest.mark.parametrize("lanes", ["processes:2", "threads"])
def test_sends_run_on_lanes_and_each_keys_updates_arrive_in_the_sources_order(
    tmp_path, target, monkeypatch, lanes
):
    if lanes == "threads":
        monkeypatch.setenv("FLOWYARD_LANE_PROCESSES", "0")
    # 12 SKUs, each changed 5 times, interleaved as a stock feed delivers them: every
    # change of one SKU must reach the target after the one before it
    levels = [
        {"sku": f"SKU-{s}", "available": 10 * v + s, "v": v} for v in range(1, 6) for s in range(12)
    ]
    write_ndjson(tmp_path / "levels.ndjson", levels)
    flow = write_flow(tmp_path, STOCK_FLOW)
    target.configure(latency_ms=3)
    # the first requests to arrive (the first changes) are slow: a later change of the same
    # SKU sent on another lane would overtake them
    target.script([{"delay": 0.05, "times": 12}])

    result = Engine(state=tmp_path / "state.db").run(flow, vars={"url": target.url})

    assert result.exit_code == 0 and result.counts["done"] == 60, result
    assert run_started(result)["lanes"] == lanes
    arrived = defaultdict(list)
    for applied in target.applied:
        arrived[applied["body"]["sku"]].append(int(applied["body"]["v"]))
    assert arrived == {f"SKU-{s}": [1, 2, 3, 4, 5] for s in range(12)}
    # every change under its own Idempotency-Key: none answered from the target's store
    assert len({a["idempotency_key"] for a in target.applied}) == 60


@needs_processes
def test_the_lane_processes_commit_every_outcome_before_the_run_ends(tmp_path, target):
    # groups of 7 records: most groups are committed while the lanes still send
    levels = [{"sku": f"SKU-{s}", "available": s, "v": 1} for s in range(40)]
    write_ndjson(tmp_path / "levels.ndjson", levels)
    flow = write_flow(tmp_path, STOCK_FLOW + "group: {records: 7}\n")
    target.configure(latency_ms=2)
    eng = Engine(state=tmp_path / "state.db")
    first = eng.run(flow, vars={"url": target.url})
    assert first.counts["done"] == 40, first
    with eng.store() as store:
        assert store.keys_in_flight("stock_levels") == []
        states = {store.get_key("stock_levels", f"level:SKU-{s}").state for s in range(40)}
    assert states == {"done"}
    again = eng.run(flow, vars={"url": target.url})
    assert again.counts["skipped"] == 40 and len(target.applied) == 40, again


@needs_processes
@pytest.mark.parametrize("lanes", ["processes:2", "threads"])
def test_a_target_never_gets_more_calls_at_once_than_the_flows_concurrency(
    tmp_path, monkeypatch, lanes
):
    if lanes == "threads":
        monkeypatch.setenv("FLOWYARD_LANE_PROCESSES", "0")
    # concurrency 8: 12 lanes, whose records are ready while 8 calls wait on the target
    running, most, lock = [0], [0], threading.Lock()

    def slow(req: Seen) -> tuple[int, dict[str, str], Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        server.pause(0.05)
        with lock:
            running[0] -= 1
        return 201, {}, {"ok": True}

    levels = [{"sku": f"SKU-{s}", "available": s, "v": 1} for s in range(60)]
    write_ndjson(tmp_path / "levels.ndjson", levels)
    flow = write_flow(tmp_path, STOCK_FLOW)
    with LocalServer() as server:
        server.on("POST", "/levels", slow)
        result = Engine(state=tmp_path / "state.db").run(flow, vars={"url": server.url})
    assert (result.status, result.message, result.counts["done"]) == ("ok", None, 60)
    assert run_started(result)["lanes"] == lanes
    assert 4 < most[0] <= 8  # never more calls at once than the concurrency


LOCAL_FLOW = """
flow: orders_to_table
concurrency: 8
connections:
  erp: {connector: sqlite, path: erp.db}
source:
  connector: file
  path: orders.ndjson
steps:
  - name: upsert_order
    send:
      connection: erp
      table: orders
      mode: upsert
      key: [id]
      row: {id: "{{ record.id }}", total: "{{ record.total }}"}
"""


def test_a_flow_whose_calls_are_all_local_work_runs_without_lanes(tmp_path):
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i, "total": f"{i}.50"} for i in range(50)])
    flow = write_flow(tmp_path, LOCAL_FLOW)
    result = Engine(state=tmp_path / "state.db").run(flow)
    assert result.exit_code == 0 and result.counts["done"] == 50, result
    event = run_started(result)
    assert (event["concurrency"], event["lanes"]) == (8, "none")


class _Remote(Connector):
    """A stand-in for a connector of the kind a test names (no calls are made)."""

    name: ClassVar[str] = "remote"
    call_schema: ClassVar[dict[str, Any] | None] = {"type": "object"}


def _kind(tmp_path: Path, connectors: dict[str, LaneKind], concurrency: int = 8) -> str:
    registry = Registry()
    connections, steps = [], []
    for name, kind in connectors.items():
        registry.register(name, type(name, (_Remote,), {"name": name, "lanes": kind}))
        connections.append(f"  {name}: {{connector: {name}}}")
        steps.append(f"  - send: {{connection: {name}, what: x}}")
    text = (
        f"flow: mixed\nconcurrency: {concurrency}\nconnections:\n"
        + "\n".join(connections)
        + "\nsource: {connector: file, path: in.ndjson}\nsteps:\n"
        + "\n".join(steps)
    )
    eng = Engine(state=tmp_path / "state.db")
    eng.registry = registry
    registry.register("file", Registry().get("file"))  # type: ignore[arg-type]
    return lane_kind(eng.load(write_flow(tmp_path, text)), registry)


def test_the_lanes_a_flow_gets_follow_the_connectors_it_calls(tmp_path):
    assert _kind(tmp_path, {"api": "processes", "erp": "processes"}) == "processes"
    # one connector that must stay in the run's process: threads, as before
    assert _kind(tmp_path, {"api": "processes", "pos": "threads"}) == "threads"
    # a remote send and a local one (a SQLite table written in the run's groups): threads
    assert _kind(tmp_path, {"api": "processes", "table": "none"}) == "threads"
    assert _kind(tmp_path, {"table": "none", "file_out": "none"}) == "none"
    assert _kind(tmp_path, {"api": "processes"}, concurrency=1) == "none"


FAULTS_FLOW = """
flow: orders_faults
concurrency: 4
connections:
  erp:
    connector: http
    base_url: "{{ vars.url }}"
    timeout: 5
    retry: {attempts: 4, backoff: 0.01, max_backoff: 0.02}
source: {connector: file, path: orders.ndjson}
steps:
  - name: post_order
    send:
      connection: erp
      path: /orders
      idempotency_key: "order:{{ record.id }}"
      body: {id: "{{ record.id }}"}
"""


@needs_processes
def test_dead_letters_and_retries_in_lane_processes_reach_the_runs_log_and_state(tmp_path, target):
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(1, 21)])
    flow = write_flow(tmp_path, FAULTS_FLOW)
    target.script(
        [
            {"status": 422, "body": {"error": "unknown customer"}},
            {"status": 503, "times": 2},
        ]
    )
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(flow, vars={"url": target.url})

    assert result.counts == {**result.counts, "done": 19, "dead_lettered": 1}, result
    assert run_started(result)["lanes"].startswith("processes:")
    events = [json.loads(line) for line in Path(result.log_path).read_text().splitlines()]
    [failed] = [e for e in events if e["event"] == "step"]
    assert failed["outcome"] == "dead_lettered" and "422" in failed["error"]
    assert failed["run_id"] == result.run_id and failed["flow"] == "orders_faults"
    retried = [e for e in events if e["event"] == "attempt" and e["outcome"] == "transient"]
    assert len(retried) == 2
    with eng.store() as store:
        [letter] = store.dead_letters()
    assert letter.record_key == failed["record_key"] and "unknown customer" in letter.message
    assert letter.error_class == "PermanentError"


class SessionApi(Connector):
    """A target that hands out a session token at its first call, which is a secret."""

    name: ClassVar[str] = "session_api"
    lanes: ClassVar[LaneKind] = "processes"
    call_schema: ClassVar[dict[str, Any] | None] = {"type": "object"}

    def call(self, request: Request) -> Response:
        token = self.__dict__.get("token")
        if token is None:
            token = self.token = self.declare_secret(f"session-{id(self):x}-token")
        return Response(body={"order": request.options.get("id"), "session": token}, status=200)


@needs_processes
def test_a_secret_a_lane_processes_connector_learns_is_masked_in_the_runs_traces(tmp_path):
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(1, 9)])
    flow = write_flow(
        tmp_path,
        """
        flow: sessions
        concurrency: 4
        connections:
          api: {connector: session_api}
        source: {connector: file, path: orders.ndjson}
        steps:
          - name: post
            send: {connection: api, id: "{{ record.id }}"}
        """,
    )
    eng = Engine(state=tmp_path / "state.db")
    eng.register_connector("session_api", SessionApi)
    result = eng.run(flow)
    assert result.counts["done"] == 8, result
    with eng.store() as store:
        traces = [store.trace(str(i), "sessions")[0] for i in range(1, 9)]
    answers = [t.steps[0][2]["response"] for t in traces]
    assert {a["session"] for a in answers} == {"***"}, answers
    assert "session-" not in Path(result.log_path).read_text()


def test_a_process_with_threads_of_its_own_gets_lanes_as_threads_unless_told(monkeypatch):
    # an application's threads may hold locks that a fork would copy, held for ever
    monkeypatch.delenv("FLOWYARD_LANE_PROCESSES")
    other = threading.Event()
    thread = threading.Thread(target=other.wait)
    thread.start()
    try:
        assert process_count(8) == 0
        monkeypatch.setenv("FLOWYARD_LANE_PROCESSES", "3")
        assert process_count(8) == 3 and process_count(2) == 2
    finally:
        other.set()
        thread.join()


@needs_processes
def test_lane_processes_that_do_not_start_in_time_leave_the_run_to_threads(
    tmp_path, target, monkeypatch
):
    monkeypatch.setattr(lane_processes, "READY_WITHIN", 0.0)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(1, 13)])
    flow = write_flow(tmp_path, FAULTS_FLOW)
    result = Engine(state=tmp_path / "state.db").run(flow, vars={"url": target.url})
    assert result.exit_code == 0 and result.counts["done"] == 12, result
    events = [json.loads(line) for line in Path(result.log_path).read_text().splitlines()]
    [fallback] = [e for e in events if e["event"] == "lanes_as_threads"]
    assert "did not start within 0 s" in fallback["reason"]
    assert sorted(a["body"]["id"] for a in target.applied) == list(range(1, 13))
