"""Approvals, owned queues, SLAs and compensation: records that need a person stop as work
items in the state store with a queue, an owner and a due time; a decision resumes the
record where it stopped (approved) or undoes its sends and takes its reject branch
(rejected); items past due are escalated; every decision is kept and traced.

The flows write to real files through the file connector and run on a real state file;
the commands (approvals, queue, trace) run in this process (``invoke``), and
tests/test_example_approvals.py plays the README's cycle through real subprocesses.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import closing

import pytest

from engine import Engine, FlowError
from tests.conftest import invoke, read_ndjson, write_flow, write_ndjson

REFUNDS = """
flow: refunds
queues:
  finance: {owner: finance-team, due: 4h, escalate_to: {owner: finance-lead}}
  dead_letters: {owner: integration, due: 1h}
labels:
  store: "{{ record.store }}"
connections:
  ledger: {connector: file}
source: {connector: file, path: refunds.ndjson}
steps:
  - name: draft
    send:
      connection: ledger
      path: drafts.ndjson
      on_change: update
      record: {id: "{{ record.id }}", amount: "{{ record.amount }}"}
      save_as: draft_answer
      compensate:
        path: undone.ndjson
        record: {undo: draft, id: "{{ record.id }}", of: "{{ record.draft_answer.path }}"}
  - name: reserve
    send:
      connection: ledger
      path: reservations.ndjson
      record: {id: "{{ record.id }}"}
      compensate:
        path: undone.ndjson
        record: {undo: reserve, id: "{{ record.id }}"}
  - route:
      - when: record.amount | float > 100
        steps:
          - name: finance_approval
            approve:
              queue: finance
              reason: "refund {{ record.id }} of {{ record.amount }} is above 100"
              figures: {amount: "{{ record.amount }}"}
              on_reject:
                - name: tell_shop
                  send:
                    connection: ledger
                    path: rejected.ndjson
                    record: {id: "{{ record.id }}"}
      - when: record.amount | float < 0
        steps:
          - name: negative
            fail: "refund {{ record.id }} is negative"
  - name: post
    send: {connection: ledger, path: posted.ndjson, record: {id: "{{ record.id }}"}}
"""


def refund(n: int, amount: str, store: str = "S1") -> dict:
    return {"id": n, "amount": amount, "store": store}


@pytest.fixture
def shop(tmp_path):
    flow = write_flow(tmp_path, REFUNDS)
    write_ndjson(
        tmp_path / "refunds.ndjson",
        [refund(1, "50.00"), refund(2, "150.00", "S2"), refund(3, "250.00", "S2")],
    )
    return flow, Engine(state=tmp_path / "state.db")


def test_an_approve_step_stops_the_record_as_a_work_item_owned_and_due(shop, tmp_path):
    flow, eng = shop
    started = time.time()
    result = eng.run(flow)
    assert (result.counts["done"], result.counts["review"]) == (1, 2)
    assert (result.status, result.exit_code) == ("review", 1)
    assert [r["id"] for r in read_ndjson(tmp_path / "posted.ndjson")] == [1]

    first, second = eng.approvals()
    assert sorted(result.review_ids) == [first.id, second.id]
    assert (first.kind, first.flow, first.queue, first.owner, first.category) == (
        "approval",
        "refunds",
        "finance",
        "finance-team",
        "finance_approval",
    )
    assert (first.record_key, first.step, first.status) == ("2", "finance_approval", "open")
    assert first.reason == "refund 2 of 150.00 is above 100"
    assert first.figures == {"amount": "150.00"}
    assert first.labels == {"store": "S2"}
    assert started <= first.created_at <= time.time()
    assert first.due_at == pytest.approx(first.created_at + 4 * 3600)
    assert [h["event"] for h in first.history] == ["created"]
    # approvals are not review items, and the dead-letter queue is empty
    assert eng.reviews() == [] and eng.dead_letters() == []

    [trace] = eng.trace("2")
    assert trace.outcome == "review" and trace.labels == {"store": "S2"}
    assert trace.steps[-1][:2] == ["finance_approval", "approval"]
    assert trace.steps[-1][2]["owner"] == "finance-team"
    assert trace.started_at is not None and trace.started_at <= trace.at

    # held again by the next run: the one open item is refreshed, nothing sent twice
    again = eng.run(flow)
    assert again.counts["review"] == 2 and len(eng.approvals(status=None)) == 2
    assert len(read_ndjson(tmp_path / "drafts.ndjson")) == 3


def test_approved_through_the_cli_the_record_resumes_after_the_step_with_the_same_keys(
    shop, tmp_path
):
    flow, eng = shop
    eng.run(flow)
    [item, _] = eng.approvals()
    state = tmp_path / "state.db"

    listed = invoke("approvals", "list", "--state", state, "--queue", "finance", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [a["record_key"] for a in json.loads(listed.stdout)] == ["2", "3"]

    done = invoke(
        "approvals", "approve", item.id, "--by", "ann", "--comment", "receipt checked",
        "--state", state,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"approved approval {item.id} (2) by ann" in done.stdout
    assert "of refunds: ok" in done.stdout

    # it went on from the step after the approve: posted once, nothing before it again
    assert [r["id"] for r in read_ndjson(tmp_path / "posted.ndjson")] == [1, 2]
    assert len(read_ndjson(tmp_path / "drafts.ndjson")) == 3
    assert len(read_ndjson(tmp_path / "reservations.ndjson")) == 3
    decided = eng.work_item(item.id)
    assert (decided.status, decided.decided_by, decided.comment) == (
        "approved",
        "ann",
        "receipt checked",
    )
    assert decided.resumed_run is not None
    events = [h["event"] for h in decided.history]
    assert events == ["created", "approved", "resumed"]
    assert decided.history[1]["record"]["id"] == 2  # the record as it was decided on
    assert decided.history[1]["figures"] == {"amount": "150.00"}

    traced = invoke("trace", "2", "--state", state)
    assert traced.returncode == 0, traced.stderr
    assert "finance_approval: approval" in traced.stdout
    assert "resume " in traced.stdout and "finance_approval: approved" in traced.stdout
    assert '"by": "ann"' in traced.stdout and "post: sent" in traced.stdout

    # later runs see the decision: the record goes through as a duplicate, not held again
    later = eng.run(flow)
    assert later.counts["review"] == 1 and later.counts["skipped"] == 2
    assert len(read_ndjson(tmp_path / "posted.ndjson")) == 2


def test_rejected_its_sends_are_compensated_last_first_then_it_takes_on_reject(shop, tmp_path):
    flow, eng = shop
    eng.run(flow)
    [_, item] = eng.approvals()
    decision = eng.reject(item.id, "bob", "a duplicate of refund 2")
    assert decision.run is not None and decision.run.exit_code == 0
    undone = read_ndjson(tmp_path / "undone.ndjson")
    assert undone == [
        {"undo": "reserve", "id": 3},
        {"undo": "draft", "id": 3, "of": str(tmp_path / "drafts.ndjson")},
    ]
    assert read_ndjson(tmp_path / "rejected.ndjson") == [{"id": 3}]
    assert 3 not in [r["id"] for r in read_ndjson(tmp_path / "posted.ndjson")]

    resumed = eng.trace("3")[-1]
    assert resumed.kind == "resume"
    assert [s[:2] for s in resumed.steps] == [
        ["finance_approval", "rejected"],
        ["reserve", "compensated"],
        ["draft", "compensated"],
        ["tell_shop", "sent"],
    ]
    undo_key = resumed.steps[1][2]["key"]
    assert re.fullmatch(r"refunds:reserve:3#[0-9a-f]{12}:compensate#[0-9a-f]{12}", undo_key)
    # each undo once per send: a later run that reads the refund again sends its draft
    # and reservation again (their keys were undone) and the standing rejection undoes
    # those again, under keys of their own; the shop is told once
    eng.run(flow)
    assert [u["undo"] for u in read_ndjson(tmp_path / "undone.ndjson")] == [
        "reserve",
        "draft",
        "reserve",
        "draft",
    ]
    assert read_ndjson(tmp_path / "rejected.ndjson") == [{"id": 3}]
    eng.resume(flow)  # nothing left to resume
    assert len(read_ndjson(tmp_path / "undone.ndjson")) == 4


def test_a_record_that_fails_for_good_after_its_sends_has_them_undone(tmp_path):
    flow = write_flow(tmp_path, REFUNDS)
    write_ndjson(tmp_path / "refunds.ndjson", [refund(7, "-5.00", "S9")])
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(flow)
    assert result.counts["dead_lettered"] == 1
    assert read_ndjson(tmp_path / "undone.ndjson") == [
        {"undo": "reserve", "id": 7},
        {"undo": "draft", "id": 7, "of": str(tmp_path / "drafts.ndjson")},
    ]
    [trace] = eng.trace("7")
    assert [s[:2] for s in trace.steps][-3:] == [
        ["negative", "dead_lettered"],
        ["reserve", "compensated"],
        ["draft", "compensated"],
    ]
    # the dead letter is a work item too: the flow's dead-letter queue, owner, category
    [letter] = eng.work_items("dead_letter")
    assert (letter.queue, letter.owner, letter.category) == (
        "dead_letters",
        "integration",
        "negative",
    )
    assert letter.due_at == pytest.approx(letter.created_at + 3600)
    assert letter.labels == {"store": "S9"}
    # replayed after a fix, the undone sends are sent again as new operations
    fixed = write_flow(tmp_path, REFUNDS.replace("record.amount | float < 0", "1 > 2"))
    replayed = eng.replay(fixed, from_start=True)
    assert replayed.exit_code == 0, replayed
    assert [r["id"] for r in read_ndjson(tmp_path / "drafts.ndjson")] == [7, 7]
    assert [r["id"] for r in read_ndjson(tmp_path / "posted.ndjson")] == [7]


def test_an_approval_covers_the_figures_decided_on(shop, tmp_path):
    flow, eng = shop
    eng.run(flow)
    [item, _] = eng.approvals()
    eng.approve(item.id, "ann")
    # the refund comes again for more: the approval of 150.00 does not cover 900.00
    write_ndjson(tmp_path / "refunds.ndjson", [refund(2, "900.00", "S2")])
    again = eng.run(flow)
    assert again.counts["review"] == 1
    [new] = [a for a in eng.approvals() if a.record_key == "2"]
    assert new.id != item.id and new.figures == {"amount": "900.00"}


def test_a_decision_without_resume_is_taken_on_by_the_next_run_before_its_source(shop, tmp_path):
    flow, eng = shop
    eng.run(flow)
    [item, _] = eng.approvals()
    write_ndjson(tmp_path / "refunds.ndjson", [refund(4, "10.00")])  # the source moved on
    decision = eng.approve(item.id, "ann", resume=False)
    assert decision.run is None and "next run" in decision.note
    assert eng.work_item(item.id).resumed_run is None
    result = eng.run(flow)
    assert result.counts["read"] == 1 and result.counts["done"] == 2
    assert [r["id"] for r in read_ndjson(tmp_path / "posted.ndjson")] == [1, 2, 4]
    assert eng.work_item(item.id).resumed_run == result.run_id


def test_deciding_twice_an_unknown_id_or_without_a_name_is_refused(shop, tmp_path):
    flow, eng = shop
    eng.run(flow)
    [item, _] = eng.approvals()
    eng.approve(item.id, "ann")
    with pytest.raises(ValueError, match="approved, not open"):
        eng.reject(item.id, "bob")
    with pytest.raises(LookupError):
        eng.approve(10_000, "bob")
    with pytest.raises(ValueError, match="who decides"):
        eng.approve(item.id, " ")
    run = invoke("approvals", "reject", item.id, "--by", "bob", "--state", tmp_path / "state.db")
    assert run.returncode == 2 and "not open" in run.stderr and "Traceback" not in run.stderr


def test_items_past_due_are_escalated_and_counted_as_breaches_by_a_clock_we_control(shop):
    flow, eng = shop
    eng.run(flow)
    first, second = eng.approvals()
    events: list[dict] = []
    assert eng.escalate(now=first.due_at - 1, listeners=[events.append]) == []
    escalated = eng.escalate(now=first.due_at + 1, listeners=[events.append])
    assert sorted(i.id for i in escalated) == [first.id, second.id]
    moved = eng.work_item(first.id)
    assert (moved.queue, moved.owner, moved.breached) == ("finance", "finance-lead", True)
    assert moved.escalated_at == first.due_at + 1
    assert moved.history[-1]["event"] == "escalated"
    assert moved.history[-1]["from"] == {"queue": "finance", "owner": "finance-team"}
    assert [(e["event"], e["item_id"], e["owner"]) for e in events] == [
        ("item_escalated", first.id, "finance-lead"),
        ("item_escalated", second.id, "finance-lead"),
    ]
    # once: escalating again changes nothing
    assert eng.escalate(now=first.due_at + 7200) == []
    [row] = eng.queues(now=first.due_at + 2)
    assert (row.queue, row.owner, row.depth, row.overdue, row.breached) == (
        "finance",
        "finance-lead",
        2,
        2,
        2,
    )
    # held again by a run, the escalated item keeps its new owner
    eng.run(flow)
    assert eng.work_item(first.id).owner == "finance-lead"


def test_queue_escalate_from_the_cli_and_every_run_escalates_its_own_flow(shop, tmp_path):
    flow, eng = shop
    eng.run(flow)
    [item, _] = eng.approvals()
    state = tmp_path / "state.db"
    before = invoke("queue", "escalate", "--state", state)
    assert before.returncode == 0 and "0 item(s) escalated" in before.stdout
    later = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(item.due_at + 60))
    run = invoke("queue", "escalate", "--state", state, "--at", later, "-o", "json")
    assert run.returncode == 0, run.stderr
    assert [e["item_id"] for e in json.loads(run.stdout)][:1] == [item.id]
    bad = invoke("queue", "escalate", "--state", state, "--at", "tomorrow")
    assert bad.returncode == 2 and "--at must be a time" in bad.stderr

    # a run escalates what is due in its flow: an item due in the past, made so by a queue
    # whose SLA is 0 minutes
    quick = write_flow(tmp_path, REFUNDS.replace("due: 4h", "due: 0m"), "quick.yaml")
    events: list[dict] = []
    eng2 = Engine(state=tmp_path / "quick.db", listeners=[events.append])
    eng2.run(quick)
    eng2.run(quick)  # the second run finds them due and escalates them at its end
    assert {e["record_key"] for e in events if e["event"] == "item_escalated"} == {"2", "3"}
    assert all(i.breached for i in eng2.approvals())


def test_queue_list_shows_depth_and_age_per_queue_and_owner(shop, tmp_path):
    flow, eng = shop
    write_ndjson(
        tmp_path / "refunds.ndjson",
        [refund(2, "150.00"), refund(3, "250.00"), refund(5, "-1.00")],
    )
    eng.run(flow)
    rows = {(r.queue, r.owner): r for r in eng.queues()}
    assert set(rows) == {("finance", "finance-team"), ("dead_letters", "integration")}
    assert rows[("finance", "finance-team")].depth == 2
    assert rows[("finance", "finance-team")].kinds == {"approval": 2}
    assert rows[("dead_letters", "integration")].kinds == {"dead_letter": 1}
    listed = invoke("queue", "list", "--state", tmp_path / "state.db")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:5] == ["QUEUE", "OWNER", "DEPTH", "OLDEST", "MEDIAN"]
    assert lines[1].split()[:3] == ["finance", "finance-team", "2"]
    assert lines[2].split()[:3] == ["dead_letters", "integration", "1"]
    # approvals list filters by queue, owner and age
    assert len(eng.approvals(owner="finance-team")) == 2
    assert eng.approvals(owner="nobody") == []
    assert eng.approvals(older_than="1h") == []
    assert len(eng.approvals(older_than="1h", now=time.time() + 7200)) == 2


def test_a_review_item_has_an_owner_category_and_due_time_from_its_queue(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: held
        queues:
          unpaid: {owner: shop-ops, due: 2d}
        connections:
          out: {connector: file}
        source: {connector: file, path: orders.ndjson}
        steps:
          - name: not_paid
            review:
              queue: unpaid
              category: unpaid_order
              reason: "order {{ record.id }} is not paid"
        """,
    )
    write_ndjson(tmp_path / "orders.ndjson", [{"id": 1}])
    eng = Engine(state=tmp_path / "state.db")
    eng.run(flow)
    [item] = eng.reviews()
    assert (item.queue, item.owner, item.category) == ("unpaid", "shop-ops", "unpaid_order")
    assert item.due_at is not None
    [work] = eng.work_items("review")
    assert work.due_at == pytest.approx(work.created_at + 2 * 86400)


def test_approve_cannot_stand_inside_a_foreach(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: lines
        source: {connector: file, path: orders.ndjson}
        steps:
          - foreach:
              items: "{{ record.lines }}"
              steps:
                - name: line_approval
                  approve: {reason: "line {{ record.sku }}"}
        """,
    )
    with pytest.raises(FlowError, match="approve cannot stand inside a foreach"):
        Engine(state=tmp_path / "s.db").load(flow)


def test_compensate_is_checked_against_the_connectors_call_options(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: bad_undo
        connections:
          out: {connector: file}
        source: {connector: file, path: orders.ndjson}
        steps:
          - name: write
            send:
              connection: out
              path: out.ndjson
              record: "{{ record }}"
              compensate: {pth: undo.ndjson}
        """,
    )
    with pytest.raises(FlowError) as raised:
        Engine(state=tmp_path / "s.db").load(flow)
    assert "steps[0].send.compensate" in str(raised.value)
    assert "'pth'" in str(raised.value)


def test_a_dry_run_shows_what_rejection_would_undo_without_undoing_it(shop, tmp_path):
    flow, eng = shop
    eng.run(flow)
    [_, item] = eng.approvals()
    eng.reject(item.id, "bob", resume=False)
    dry = eng.run(flow, dry_run=True)
    assert dry.exit_code in (0, 1)
    assert read_ndjson(tmp_path / "undone.ndjson") == []
    with closing(eng.store()) as store:
        assert len(store.compensations("refunds", "3")) == 2  # still pending
