"""Dead letters and replay: what failed is parked with its reason, a replay restarts it at
the failing step with the flow as it is now, through the same idempotency keys, and bad
source lines are parked with their raw text and line number while the rest go on.

The user-facing paths go through the CLI in a subprocess; the finer cases use the library
API (the CLI is built on it and nothing else), which keeps the suite fast.
"""

from __future__ import annotations

import json

import pytest

from engine import Engine
from tests.conftest import invoke, write_flow, write_ndjson

FLOW = """
flow: orders_to_erp
mappings: [.]
concurrency: {concurrency}
connections:
  erp:
    connector: http
    base_url: "{{{{ vars.url }}}}"
    timeout: 2
    retry: {{attempts: 3, backoff: 0.01, max_backoff: 0.02}}
source:
  connector: file
  path: orders.ndjson
steps:
  - name: to_erp_order
    map: erp_order
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{{{ record.order_id }}}}"
      body: "{{{{ record }}}}"
      save_as: erp
  - name: post_invoice
    send:
      connection: erp
      method: POST
      path: /invoices
      idempotency_key: "invoice:{{{{ record.order_id }}}}"
      body: {{order: "{{{{ record.erp.id }}}}", amount: "{{{{ record.amount }}}}"}}
"""

GOOD_MAPPING = """
mapping: erp_order
fields:
  order_id: "{{ record.id }}"
  amount: "{{ record.total }}"
"""

# the shop renamed the field: the mapping still reads the old name
BROKEN_MAPPING = GOOD_MAPPING.replace("record.total", "record.grand_total")

ORDERS = [{"id": n, "total": f"{n}.50"} for n in (101, 102, 103)]


class Setup:
    """A flow with a local mapping in ``directory``, run by the CLI or by the library."""

    def __init__(self, directory, target, mapping=GOOD_MAPPING, concurrency=1):
        self.dir = directory
        self.target = target
        self.flow = write_flow(directory, FLOW.format(concurrency=concurrency))
        self.set_mapping(mapping)
        write_ndjson(directory / "orders.ndjson", ORDERS)
        self.state = directory / "state.db"
        self.engine = Engine(state=self.state)
        self.vars = {"url": target.url}

    def set_mapping(self, text: str) -> None:
        (self.dir / "erp_order.yaml").write_text(text, encoding="utf-8")

    def cli(self, *args: str):
        return invoke(*args, "--state", self.state, cwd=self.dir)

    def cli_run(self, *args: str):
        return self.cli(*args, self.flow, "--var", f"url={self.target.url}", "--output", "json")

    def letters(self, status: str | None = "open"):
        store = self.engine.store()
        try:
            return store.dead_letters(status=status)
        finally:
            store.close()

    def trace(self, key: str):
        store = self.engine.store()
        try:
            return store.trace(key)
        finally:
            store.close()


@pytest.fixture
def erp(tmp_path, target):
    return Setup(tmp_path, target)


def posted(target, path):
    return sorted(
        a["body"].get("order_id", a["body"].get("order"))
        for a in target.applied
        if a["path"] == path
    )


def test_a_replay_after_fixing_the_mapping_delivers_the_dead_letters(erp, target):
    erp.set_mapping(BROKEN_MAPPING)
    first = erp.cli_run("run")
    assert first.returncode == 1, first.stderr
    first_run = json.loads(first.stdout)
    assert first_run["counts"]["dead_lettered"] == 3
    assert target.applied == []

    letters = json.loads(erp.cli("dlq", "list", "--output", "json").stdout)
    assert [d["record_key"] for d in letters] == ["101", "102", "103"]
    for d in letters:
        assert d["step"] == "to_erp_order" and d["error_class"] == "UndefinedValueError"
        assert "grand_total" in d["message"]
        assert d["attempts"] == 1 and d["run_id"] == first_run["run_id"]
        assert d["at"] > 0 and d["status"] == "open"
        assert d["record"] == {"id": int(d["record_key"]), "total": f"{d['record_key']}.50"}
    shown = erp.cli("dlq", "show", str(letters[0]["id"])).stdout
    assert "step: to_erp_order" in shown and "error_class: UndefinedValueError" in shown
    assert '"total": "101.50"' in shown

    erp.set_mapping(GOOD_MAPPING)
    dry = erp.cli_run("dlq", "replay", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    would = json.loads(dry.stdout)["would_send"]
    assert [(w["step"], w["request"]["body"]["amount"]) for w in would] == [
        ("post_order", "101.50"),
        ("post_order", "102.50"),
        ("post_order", "103.50"),
    ]
    assert target.requests == []

    replayed = erp.cli_run("dlq", "replay")
    assert replayed.returncode == 0, replayed.stderr
    result = json.loads(replayed.stdout)
    assert result["counts"]["done"] == 3 and result["counts"]["dead_lettered"] == 0
    log = [json.loads(line) for line in open(result["log_path"], encoding="utf-8")]
    assert log[0]["event"] == "run_started" and log[0]["kind"] == "replay"
    assert sorted(e["replay_of"] for e in log if e["event"] == "record") == [1, 2, 3]
    assert posted(target, "/orders") == [101, 102, 103]
    assert sorted(a["body"]["amount"] for a in target.applied if a["path"] == "/invoices") == [
        "101.50",
        "102.50",
        "103.50",
    ]

    # closed as replayed, named by the replay run, and nothing left open
    closed = erp.letters(status=None)
    assert [(d.status, d.replay_run) for d in closed] == [("replayed", result["run_id"])] * 3
    # the replay is in the record's trace, as a run of kind replay
    trace = erp.cli("trace", "101").stdout
    assert f"replay {result['run_id']}  done" in trace
    assert [(t.kind, t.outcome) for t in erp.trace("101")] == [
        ("run", "dead_lettered"),
        ("replay", "done"),
    ]

    # replaying again is harmless: nothing is open, nothing is sent; nor does the next run
    # send anything: every send is a duplicate
    assert erp.engine.replay(erp.flow, vars=erp.vars).counts["done"] == 0
    assert erp.engine.run(erp.flow, vars=erp.vars).counts["skipped"] == 3
    assert len(target.applied) == 6


def test_a_dry_run_replay_does_not_fail_steps_that_need_an_answer_it_did_not_get(erp, target):
    erp.set_mapping(BROKEN_MAPPING)
    erp.engine.run(erp.flow, vars=erp.vars)
    erp.set_mapping(GOOD_MAPPING)
    dry = erp.engine.replay(erp.flow, vars=erp.vars, dry_run=True)
    # post_invoice needs the ERP's answer to post_order (record.erp.id), which a dry run
    # does not get: it is not checked rather than reported as failing
    assert dry.exit_code == 0 and dry.counts["done"] == 3
    assert [w["step"] for w in dry.would_send] == ["post_order"] * 3
    assert target.requests == [] and len(erp.letters()) == 3


def test_a_replay_restarts_at_the_step_that_failed(erp, target):
    target.script([{"path": "/invoices", "status": 400, "body": {"error": "period closed"}}])
    assert erp.engine.run(erp.flow, vars=erp.vars).exit_code == 1
    [letter] = erp.letters()
    assert (letter.step, letter.error_class) == ("post_invoice", "PermanentError")
    assert "period closed" in letter.message
    # the record as the failing step received it: with the ERP's answer of the step before
    assert letter.record["erp"]["id"] == 1

    assert erp.engine.replay(erp.flow, [letter.id], vars=erp.vars).exit_code == 0
    # the order was not posted again, not even as a duplicate: only the invoice was
    assert len([r for r in target.requests if r["path"] == "/orders"]) == 3
    order_ids = [a["id"] for a in target.applied if a["path"] == "/orders"]
    assert posted(target, "/invoices") == order_ids


def test_a_replay_repeats_an_exhausted_send_with_the_same_idempotency_key(erp, target):
    # the first order is applied but its answer is lost, then the target is down
    target.script(
        [
            {"path": "/orders", "status": 502, "after_apply": True},
            {"path": "/orders", "status": 503, "times": 2},
        ]
    )
    assert erp.engine.run(erp.flow, vars=erp.vars).exit_code == 1
    [letter] = erp.letters()
    assert (letter.step, letter.error_class, letter.attempts) == ("post_order", "TransientError", 3)

    assert erp.engine.replay(erp.flow, vars=erp.vars).exit_code == 0
    assert posted(target, "/orders") == [101, 102, 103]  # 101 applied once
    repeat = [
        r["outcome"] for r in target.requests if r["idempotency_key"].startswith("order:101#")
    ]
    assert repeat == ["applied_status_502", "status_503", "status_503", "replayed"]


def test_a_replay_that_fails_again_keeps_the_record_parked(erp, target):
    erp.set_mapping(BROKEN_MAPPING)
    erp.engine.run(erp.flow, vars=erp.vars)
    # the same failure at the same step: the dead letter stays open, refreshed by the replay
    again = erp.engine.replay(erp.flow, [1], vars=erp.vars)
    assert again.exit_code == 1
    letters = erp.letters(status=None)
    assert [(d.id, d.status) for d in letters] == [(1, "open"), (2, "open"), (3, "open")]
    assert letters[0].run_id == again.run_id

    # fixed mapping, but now the invoice is refused: a new dead letter at the later step
    # supersedes the old one
    erp.set_mapping(GOOD_MAPPING)
    target.script([{"path": "/invoices", "status": 400, "body": {"error": "period closed"}}])
    assert erp.engine.replay(erp.flow, [1], vars=erp.vars).exit_code == 1
    assert [(d.id, d.record_key, d.step, d.status) for d in erp.letters(status=None)] == [
        (1, "101", "to_erp_order", "superseded"),
        (2, "102", "to_erp_order", "open"),
        (3, "103", "to_erp_order", "open"),
        (4, "101", "post_invoice", "open"),
    ]
    assert posted(target, "/orders") == [101]


def test_replay_and_purge_of_an_unknown_dead_letter_and_purge_by_flow(erp, target):
    erp.set_mapping(BROKEN_MAPPING)
    erp.engine.run(erp.flow, vars=erp.vars)
    missing = erp.cli_run("dlq", "replay", "--id", "99")
    assert missing.returncode == 2
    assert "no open dead letter 99 of flow 'orders_to_erp'" in missing.stderr

    purged = erp.cli("dlq", "purge", "--id", "1", "--output", "json")
    assert json.loads(purged.stdout) == {"purged": 1}
    assert [d.id for d in erp.letters()] == [2, 3]
    assert erp.cli("dlq", "purge").returncode == 2  # say what to purge
    by_flow = erp.cli("dlq", "purge", "--flow", "orders_to_erp")
    assert by_flow.stdout.strip() == "purged 2 dead letter(s)"
    assert erp.letters(status=None) == []


BAD_LINES = (
    '{"id": 101, "total": "101.50"}\n{"id": 102, "total": \n{"id": 103, "total": "103.50"}\n'
)


def test_an_unparsable_ndjson_line_is_parked_with_its_text_and_line_and_the_rest_go_on(erp, target):
    (erp.dir / "orders.ndjson").write_text(BAD_LINES, encoding="utf-8")
    result = erp.cli_run("run")
    assert result.returncode == 1, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert (out["counts"]["read"], out["counts"]["done"], out["counts"]["dead_lettered"]) == (
        3,
        2,
        1,
    )
    assert posted(target, "/orders") == [101, 103]
    [letter_id] = out["dead_letter_ids"]
    shown = erp.cli("dlq", "show", str(letter_id)).stdout
    assert "step: source" in shown and "invalid JSON" in shown
    assert "line: 2" in shown and 'raw: {"id": 102, "total": ' in shown


def test_bad_lines_are_parked_with_concurrent_lanes_too(tmp_path, target):
    erp = Setup(tmp_path, target, concurrency=4)
    (erp.dir / "orders.ndjson").write_text(BAD_LINES * 3, encoding="utf-8")
    result = erp.engine.run(erp.flow, vars=erp.vars)
    assert (result.counts["read"], result.counts["dead_lettered"]) == (9, 3)
    assert sorted((d.line, d.raw) for d in erp.letters()) == [
        (2, '{"id": 102, "total": '),
        (5, '{"id": 102, "total": '),
        (8, '{"id": 102, "total": '),
    ]


def test_a_csv_row_with_the_wrong_number_of_fields_is_parked_with_its_text(erp, target):
    erp.flow.write_text(erp.flow.read_text().replace("orders.ndjson", "orders.csv"))
    (erp.dir / "orders.csv").write_text(
        "id,total\n101,101.50\n102,102.50,EUR\n103,103.50\n", encoding="utf-8"
    )
    result = erp.engine.run(erp.flow, vars=erp.vars)
    assert result.exit_code == 1
    assert posted(target, "/orders") == ["101", "103"]  # CSV values are text
    [letter] = erp.letters()
    assert (letter.step, letter.line, letter.raw) == ("source", 3, "102,102.50,EUR")
    assert "3 fields" in letter.message
    # an unreadable line has no record to replay: fix the file and run the flow again
    assert erp.engine.replay(erp.flow, vars=erp.vars).counts["done"] == 0
    with pytest.raises(ValueError, match="could not read"):
        erp.engine.replay(erp.flow, [letter.id], vars=erp.vars)
