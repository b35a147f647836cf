"""examples/approvals runs as its README says: the approve/reject cycle from the CLI."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing

from tests.conftest import ROOT, flowyard, read_ndjson

EXAMPLE = ROOT / "examples" / "approvals"


def test_the_readme_cycle_approves_one_refund_and_rejects_another(tmp_path):
    work = tmp_path / "approvals"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("out", ".flowyard"))
    readme = (EXAMPLE / "README.md").read_text()

    run = flowyard("run", "flow.yaml", cwd=work)
    assert run.returncode == 1, run.stderr
    assert "read 3  review 2  done 1" in run.stdout and "read 3  review 2  done 1" in readme
    listed = flowyard("approvals", "list", "-o", "json", cwd=work)
    assert [(a["id"], a["record_key"], a["owner"]) for a in json.loads(listed.stdout)] == [
        (1, "R-1002", "finance-team"),
        (2, "R-1003", "finance-team"),
    ]

    approved = flowyard("approvals", "approve", "1", "--by", "ann", "--comment",
                        "receipt checked", cwd=work)  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    assert "approved approval 1 (R-1002) by ann" in approved.stdout
    rejected = flowyard("approvals", "reject", "2", "--by", "bob", "--comment",
                        "already refunded in store", cwd=work)  # fmt: skip
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected approval 2 (R-1003) by bob" in rejected.stdout

    shown = flowyard("approvals", "show", "2", cwd=work)
    assert "decided: rejected by bob" in shown.stdout
    assert "rejected by bob: already refunded in store" in shown.stdout
    traced = flowyard("trace", "R-1003", cwd=work)
    assert "draft_credit_note: compensated" in traced.stdout
    assert "tell_the_shop: sent" in traced.stdout
    assert flowyard("queue", "list", cwd=work).stdout.strip() == "(none)"

    with closing(sqlite3.connect(work / "out" / "ledger.db")) as db:
        rows = db.execute("SELECT * FROM credit_notes ORDER BY refund_id").fetchall()
    assert rows == [
        ("R-1001", "25.00", "posted"),
        ("R-1002", "180.00", "posted"),
        ("R-1003", "340.00", "cancelled"),
    ]
    assert str(rows) in readme
    assert read_ndjson(work / "out" / "rejected.ndjson") == [
        {"refund": "R-1003", "status": "rejected"}
    ]
    assert [r["refund"] for r in read_ndjson(work / "out" / "credited.ndjson")] == [
        "R-1001",
        "R-1002",
    ]
