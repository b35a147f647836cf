"""The executor on its own: a run context in, typed results out, no runner.

The flow is loaded by the real loader, sends go through the real file connector and the
keys into a real SQLite state; only the loop around the executor (the runner) is absent.
"""

from __future__ import annotations

import pytest

from connectors.testing import MemoryConnector
from engine import Engine, Outcome
from engine.context import RunContext
from engine.executor import Executor, Rec
from engine.runlog import RunLog
from engine.store import NullStore, SendState, SqliteStore
from tests.conftest import read_ndjson, write_flow

FLOW = """
flow: executor_alone
connections:
  out: {connector: file}
  erp: {connector: memory, fail: [permanent]}
source: {connector: file, path: unused.ndjson}
steps:
  - filter: record.total | float > 0
  - name: ship
    send: {connection: out, path: "{{ vars.dir }}/ship.ndjson", record: "{{ record }}"}
  - name: post_to_erp
    send: {connection: erp, body: {id: "{{ record.id }}"}}
"""


@pytest.fixture
def loaded(tmp_path):
    eng = Engine(state=tmp_path / "state.db")
    eng.register_connector("memory", MemoryConnector)
    return eng, eng.load(write_flow(tmp_path, FLOW))


def executor(eng, flow, store, tmp_path, **kw) -> Executor:
    log = RunLog("run-1", flow.name, path=None)
    ctx = RunContext.create(
        flow,
        run_id="run-1",
        registry=eng.registry,
        store=store,
        log=log,
        vars={"dir": str(tmp_path)},
        **kw,
    )
    return Executor(ctx)


def rec(n: int, total: str = "5") -> Rec:
    data = {"id": n, "total": total}
    return Rec(key=str(n), data=data, meta={"key": str(n)}, source=data)


def test_a_record_goes_through_and_its_result_says_how_and_where(loaded, tmp_path):
    eng, flow = loaded
    with SqliteStore(tmp_path / "state.db") as store:
        ex = executor(eng, flow, store, tmp_path, refresh_after=0.0)
        filtered = ex.process(rec(1, total="0"))
        assert filtered.outcome == Outcome.FILTERED and filtered.failures == []
        assert filtered.trace == [["filter_1", "filtered"]]

        failed = ex.process(rec(2))
        assert failed.outcome == Outcome.DEAD_LETTERED
        [failure] = failed.failures
        assert (failure.step, failure.rec.key, type(failure.error).__name__) == (
            "post_to_erp",
            "2",
            "PermanentError",
        )
        assert [line[:2] for line in failed.trace] == [
            ["filter_1", "kept"],
            ["ship", "sent"],
            ["post_to_erp", "dead_lettered"],
        ]
        assert read_ndjson(tmp_path / "ship.ndjson") == [{"id": 2, "total": "5"}]
        shipped = store.get_key(flow.name, "executor_alone:ship:2")
        refused = store.get_key(flow.name, "executor_alone:post_to_erp:2")
        assert shipped is not None and shipped.state == SendState.DONE
        assert refused is not None and refused.state == SendState.FAILED

        # the same record again: its done send is a duplicate, due to be kept alive
        again = ex.process(rec(2))
        assert again.trace[1] == ["ship", "skipped", "duplicate"]
        assert again.seen_keys == ["executor_alone:ship:2"] and again.outcome == Outcome.DONE
        assert read_ndjson(tmp_path / "ship.ndjson") == [{"id": 2, "total": "5"}]
        ex.ctx.connections.close()


def test_a_dry_run_through_the_null_store_lists_its_requests_and_writes_nothing(loaded, tmp_path):
    eng, flow = loaded
    with NullStore() as store:
        ex = executor(eng, flow, store, tmp_path, dry_run=True)
        result = ex.process(rec(3), start="ship")
    assert result.outcome == Outcome.DONE
    assert [(s["step"], s["record_key"]) for s in result.would_send] == [
        ("ship", "3"),
        ("post_to_erp", "3"),
    ]
    assert not (tmp_path / "ship.ndjson").exists() and not (tmp_path / "state.db").exists()
