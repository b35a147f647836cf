"""People in the flow on a PostgreSQL state: the approvals, decisions, compensations,
escalations and stats of tests/test_approvals.py, run on a database instead of a file
(the store methods themselves are in the contract suite, tests/test_store_contract.py)."""

from __future__ import annotations

import json
import threading
import time

from engine import Engine
from tests.conftest import invoke, read_ndjson, write_flow, write_ndjson
from tests.test_approvals import REFUNDS, refund


def test_approve_reject_escalate_and_stats_on_a_postgres_state(tmp_path, postgres_state):
    flow = write_flow(tmp_path, REFUNDS)
    write_ndjson(
        tmp_path / "refunds.ndjson",
        [refund(1, "50.00"), refund(2, "150.00", "S2"), refund(3, "250.00", "S2")],
    )
    eng = Engine(state=postgres_state)
    result = eng.run(flow)
    assert (result.counts["done"], result.counts["review"]) == (1, 2)
    first, second = eng.approvals()
    assert (first.queue, first.owner, first.labels) == ("finance", "finance-team", {"store": "S2"})

    done = invoke("approvals", "approve", first.id, "--by", "ann", "--state", postgres_state)
    assert done.returncode == 0, done.stderr
    assert f"approved approval {first.id} (2) by ann" in done.stdout
    assert [r["id"] for r in read_ndjson(tmp_path / "posted.ndjson")] == [1, 2]
    approved = eng.work_item(first.id)
    assert approved is not None and approved.resumed_run is not None
    assert [h["event"] for h in approved.history] == ["created", "approved", "resumed"]

    rejected = eng.reject(second.id, "bob", "a duplicate")
    assert rejected.run is not None and rejected.run.exit_code == 0
    assert [u["undo"] for u in read_ndjson(tmp_path / "undone.ndjson")] == ["reserve", "draft"]
    assert read_ndjson(tmp_path / "rejected.ndjson") == [{"id": 3}]
    again = invoke("approvals", "reject", second.id, "--by", "carl", "--state", postgres_state)
    assert again.returncode != 0 and "not open" in again.stderr

    # a record held past its due time is escalated once, by whichever process asks first
    write_ndjson(tmp_path / "refunds.ndjson", [refund(4, "400.00", "S3")])
    eng.run(flow)
    [held] = eng.approvals()
    assert held.due_at is not None
    [escalated] = eng.escalate(now=held.due_at + 1)
    assert (escalated.owner, escalated.breached) == ("finance-lead", True)
    assert eng.escalate(now=held.due_at + 2) == []

    stats = invoke("stats", "--state", postgres_state, "-o", "json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)  # computed from the database's traces


def _wait_for(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {check.__doc__}")


def test_while_workers_hold_the_flow_an_approval_is_resumed_by_the_feeder_once(
    tmp_path, postgres_state
):
    """``approvals approve`` cannot run the flow while a worker feeds it (the feeder holds
    its lease): the feeder resumes the record, once, within a poll."""
    flow = write_flow(tmp_path, REFUNDS)
    write_ndjson(tmp_path / "refunds.ndjson", [refund(1, "50.00"), refund(2, "150.00", "S2")])
    eng = Engine(state=postgres_state)
    stop = threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.append(eng.work(flow, stop=stop, poll=0.2)))
    worker.start()
    try:

        def held():
            """the refund above 100 waits for an approval"""
            return eng.approvals()

        [item] = _wait_for(held)
        decision = eng.approve(item.id, "ann")
        assert decision.run is None and "that run or the next resumes it" in (decision.note or "")

        def resumed():
            """the feeder resumed the approved refund"""
            decided = eng.work_item(item.id)
            return decided if decided and decided.resumed_run else None

        done = _wait_for(resumed)
        time.sleep(1.0)  # the source read again meanwhile: nothing sent twice
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert results[0].counts["done"] == 2  # refund 1, then refund 2 resumed
    assert [r["id"] for r in read_ndjson(tmp_path / "posted.ndjson")] == [1, 2]
    assert [h["event"] for h in done.history] == ["created", "approved", "resumed"]
    assert done.resumed_run == results[0].run_id
