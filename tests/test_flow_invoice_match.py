"""flows/invoice_match.yaml: supplier invoices matched three ways, approved or reviewed.

Runs the shipped flow on the example's own inbox files (examples/invoice_match/inbox)
against a purchasing database seeded by the example's script, in a temporary folder.
No ERP, no network.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sqlite3
import sys

import pytest

from engine import Engine
from tests.conftest import ROOT, flowyard, invoke

FLOW = ROOT / "flows" / "invoice_match.yaml"
EXAMPLE = ROOT / "examples" / "invoice_match"
JSON_INBOX = EXAMPLE / "inbox" / "invoices.json"
CSV_INBOX = EXAMPLE / "inbox" / "invoices.csv"


def _load_seed():
    name = "flowyard_examples_seed_purchasing"
    if name not in sys.modules:  # examples/ is no package: load the script from its file
        spec = importlib.util.spec_from_file_location(name, EXAMPLE / "seed_purchasing.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


seed = _load_seed()


class Purchasing:
    """The seeded purchasing database, the AP tables the flow fills and the buyers' queue."""

    def __init__(self, tmp_path):
        self.db = seed.seed(tmp_path / "purchasing.db")
        self.eng = Engine(state=tmp_path / "state.db")

    def vars(self, inbox, **extra):
        return {"invoices": str(inbox), "purchasing_db": str(self.db), **extra}

    def run(self, inbox=JSON_INBOX, **extra):
        return self.eng.run(FLOW, vars=self.vars(inbox, **extra))

    def rows(self, sql: str, *params) -> list[dict]:
        db = sqlite3.connect(self.db)
        db.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in db.execute(sql, params)]
        finally:
            db.close()

    def approved(self) -> dict[str, dict]:
        rows = self.rows("SELECT * FROM approved_invoices ORDER BY invoice_id")
        return {row["invoice_id"]: row for row in rows}

    def review(self) -> dict[str, list[str]]:
        """The open items of the buyers' queue: invoice id -> the reasons."""
        return {
            item.figures["invoice_id"]: item.figures["reasons"]
            for item in self.eng.reviews(queue="buyers")
        }

    def review_items(self) -> list:
        return [(i.id, i.record_key, i.reason, i.status) for i in self.eng.reviews(status=None)]

    def open_dead_letters(self):
        store = self.eng.store()
        try:
            return store.dead_letters(status="open")
        finally:
            store.close()


@pytest.fixture
def purchasing(tmp_path):
    return Purchasing(tmp_path)


def test_matched_and_tolerated_invoices_are_approved_and_an_unknown_po_is_dead_lettered(
    purchasing,
):
    result = purchasing.run(JSON_INBOX)
    assert result.counts["done"] == 2 and result.counts["dead_lettered"] == 1
    assert result.exit_code == 1

    approved = purchasing.approved()
    assert set(approved) == {"SUP-ACME:INV-A-7781", "SUP-NORD:NC-2026-118"}
    assert approved["SUP-ACME:INV-A-7781"]["outcome"] == "matched"
    assert approved["SUP-ACME:INV-A-7781"]["total"] == "2255.00"
    tolerated = approved["SUP-NORD:NC-2026-118"]
    assert tolerated["outcome"] == "within_tolerance"
    assert json.loads(tolerated["notes"]) == [
        "line 1 SKU MUG-LOGO: invoiced qty 120 > received 118, within 2 %",
        "line 2 SKU MUG-PLAIN: invoiced price 2.85 > PO price 2.80, within 5 %",
    ]
    assert purchasing.review() == {}

    [letter] = purchasing.open_dead_letters()
    assert letter.record_key == "SUP-ACME:INV-A-7790" and letter.step == "purchase_order"
    assert letter.message.startswith(
        "purchase order PO-1099 of supplier SUP-ACME (Acme Textiles Ltd) is not in purchasing; "
        "invoice INV-A-7790 for 370.00 USD cannot be matched."
    )
    assert "flowyard dlq replay flows/invoice_match.yaml" in letter.message


def test_exceptions_go_to_review_with_a_reason_per_line_and_the_rest_is_approved(purchasing):
    result = purchasing.run(CSV_INBOX)
    assert result.exit_code == 1 and result.counts["done"] == 1 and result.counts["review"] == 2
    assert purchasing.review() == {
        "SUP-CAPS:CC-5521": ["line 1 SKU CAP-RED: invoiced qty 50 > received 40 beyond 2 %"],
        "SUP-ACME:INV-A-7795": ["line 2 SKU TOTE-BLK: not on purchase order PO-1004"],
    }
    [item] = [i for i in purchasing.eng.reviews() if i.record_key.endswith("5521")]
    assert [line["outcome"] for line in item.figures["lines"]] == ["exception", "matched"]
    assert (item.queue, item.owner, item.category) == ("buyers", "buying", "invoice_mismatch")
    assert item.reason.startswith("invoice CC-5521 of ")
    assert purchasing.eng.work_item(item.id).labels == {"supplier": "SUP-CAPS"}
    assert set(purchasing.approved()) == {"SUP-NORD:NC-2026-140"}
    lines = purchasing.rows("SELECT po_number, po_line, sku, quantity FROM approved_invoice_lines")
    assert lines == [{"po_number": "PO-1005", "po_line": 1, "sku": "VASE-BLU", "quantity": "24"}]


def test_a_second_run_changes_nothing(purchasing):
    purchasing.run(JSON_INBOX)
    purchasing.run(CSV_INBOX)
    before = (purchasing.approved(), purchasing.review_items())
    again_json = purchasing.run(JSON_INBOX)
    again_csv = purchasing.run(CSV_INBOX)
    # approved invoices are final (filtered), held ones are held again (their one open item
    # each), the unknown PO keeps its one open dead letter
    assert again_json.counts["filtered"] == 2 and again_json.counts["dead_lettered"] == 1
    assert again_csv.counts["filtered"] == 1 and again_csv.counts["review"] == 2
    assert again_csv.counts["done"] == 0 and again_json.counts["done"] == 0
    assert purchasing.approved() == before[0]
    assert [(i, k, r) for i, k, r, _ in purchasing.review_items()] == [
        (i, k, r) for i, k, r, _ in before[1]
    ]
    assert len(purchasing.open_dead_letters()) == 1


def test_once_purchasing_enters_the_order_a_replay_approves_the_invoice(purchasing):
    purchasing.run(JSON_INBOX)
    seed.seed(purchasing.db, late_order=True)
    replay = purchasing.eng.replay(FLOW, vars=purchasing.vars(JSON_INBOX))
    assert replay.counts["done"] == 1 and replay.exit_code == 0
    assert purchasing.approved()["SUP-ACME:INV-A-7790"]["outcome"] == "matched"
    assert purchasing.open_dead_letters() == []
    assert purchasing.run(JSON_INBOX).counts["filtered"] == 3


def test_goods_received_later_move_an_invoice_from_review_to_approval(purchasing):
    purchasing.run(CSV_INBOX)
    with sqlite3.connect(purchasing.db) as db:
        db.execute(
            "INSERT INTO goods_receipts VALUES ('GR-5011', 'PO-1003', 1, 'CAP-RED', '10', "
            "'2026-03-09')"
        )
    db.close()
    result = purchasing.run(CSV_INBOX)
    assert result.counts["done"] == 1  # the caps; the tote bags' exception is unchanged
    assert purchasing.approved()["SUP-CAPS:CC-5521"]["outcome"] == "matched"
    # the caps' item closed by itself; the tote bags' waits
    assert set(purchasing.review()) == {"SUP-ACME:INV-A-7795"}
    [resolved] = purchasing.eng.reviews(status="resolved")
    assert resolved.record_key == "SUP-CAPS:CC-5521" and resolved.resolved_run == result.run_id


def test_tolerances_come_from_vars(purchasing):
    purchasing.run(CSV_INBOX, quantity_tolerance="0.25")  # 50 billed, 40 received: 25 %
    assert purchasing.approved()["SUP-CAPS:CC-5521"]["outcome"] == "within_tolerance"
    purchasing_strict = purchasing.run(JSON_INBOX, price_tolerance="0.01")
    assert purchasing_strict.counts["done"] == 1 and purchasing_strict.counts["review"] == 1
    assert purchasing.review()["SUP-NORD:NC-2026-118"] == [
        "line 2 SKU MUG-PLAIN: invoiced price 2.85 > PO price 2.80 beyond 1 %"
    ]


def test_the_same_goods_on_another_invoice_number_are_not_approved_twice(purchasing, tmp_path):
    purchasing.run(JSON_INBOX)
    [first] = [i for i in json.loads(JSON_INBOX.read_text()) if i["invoice_number"] == "INV-A-7781"]
    again = copy.deepcopy(first)
    again["invoice_number"] = "INV-A-7781-R"
    (tmp_path / "resent.json").write_text(json.dumps([again]))
    result = purchasing.run(tmp_path / "resent.json")
    assert result.counts["review"] == 1
    assert purchasing.review()["SUP-ACME:INV-A-7781-R"] == [
        "line 1 SKU TSHIRT-BLK-M: invoiced qty 200 + 200 on earlier invoices > received 200 "
        "beyond 2 %",
        "line 1 SKU TSHIRT-BLK-M: invoiced qty 200 + 200 on earlier invoices > ordered 200 "
        "beyond 2 %",
        "line 2 SKU TSHIRT-WHT-L: invoiced qty 100 + 100 on earlier invoices > received 100 "
        "beyond 2 %",
        "line 2 SKU TSHIRT-WHT-L: invoiced qty 100 + 100 on earlier invoices > ordered 100 "
        "beyond 2 %",
    ]
    assert "SUP-ACME:INV-A-7781-R" not in purchasing.approved()


def test_bad_invoices_are_dead_lettered_with_the_reason_and_the_others_go_on(purchasing, tmp_path):
    rows = CSV_INBOX.read_text().splitlines()
    # an unreadable row inside the caps invoice; a currency that is no ISO code
    rows[1] = rows[1].replace(",pcs,4.20,0,0.00,210.00,12.50", ",pcs,4.20")
    rows[5] = rows[5].replace(",USD,", ",US$,")
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    result = purchasing.run(tmp_path / "bad.csv")
    assert result.counts["dead_lettered"] == 2 and result.counts["review"] == 1
    letters = {d.step: d for d in purchasing.open_dead_letters()}
    assert letters["source"].message.startswith(
        "invoice_number 'CC-5521' (rows from line 3) is not read: it borders the unreadable "
        "row(s) at line 2 (row has 17 fields, the header has 21)"
    )
    assert "not an ISO 4217 currency code" in letters["csv_to_canonical"].message
    assert letters["csv_to_canonical"].record_key == "SUP-NORD:NC-2026-140"
    assert set(purchasing.review()) == {"SUP-ACME:INV-A-7795"}


def test_the_readme_commands_run_the_example(tmp_path):
    db = tmp_path / "purchasing.db"
    seeded = subprocess_run(EXAMPLE / "seed_purchasing.py", db)
    assert "5 purchase orders" in seeded
    common = [
        "--state",
        tmp_path / "state.db",
        "--var",
        f"purchasing_db={db}",
    ]
    first = flowyard("run", FLOW, *common)  # the JSON inbox, the flow's default
    assert first.returncode == 1, first.stdout + first.stderr
    assert "dead_lettered 1" in first.stdout and "done 2" in first.stdout
    second = flowyard("run", FLOW, *common, "--var", f"invoices={CSV_INBOX}")
    assert second.returncode == 1, second.stdout + second.stderr
    assert "review 2" in second.stdout and "done 1" in second.stdout
    # as the README shows them: the buyers' items after the dead letter 1
    held = invoke("review", "list", "--queue", "buyers", *common[:2])
    assert held.returncode == 0, held.stderr
    assert [line.split()[:4] for line in held.stdout.splitlines()[1:]] == [
        ["2", "invoice_match", "buyers", "SUP-CAPS:CC-5521"],
        ["3", "invoice_match", "buyers", "SUP-ACME:INV-A-7795"],
    ]
    shown = invoke("review", "show", "2", *common[:2])
    assert "invoiced qty 50 > received 40 beyond 2 %" in shown.stdout


def subprocess_run(script, *args) -> str:
    import subprocess

    done = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_flow_is_valid():
    assert [p for p in Engine().check(FLOW) if p.severity == "error"] == []
