"""Write a week of made-up history into a state file, for `flowyard report` to show.

    python demo_history.py demo.db
    flowyard report --state demo.db --out report.html

The figures are invented (seeded, so each run writes the same week): two flows, a few
hundred records a day, dead letters that fail in a handful of ways, reviews and approvals
decided after a few hours, some of them past due. The screenshots in docs/governance.md
are this report. Nothing here is needed to use flowyard.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

from engine import Engine, Outcome  # noqa: E402
from engine.store import ParkedItem, Progress, Trace  # noqa: E402

FAILURES = [
    ("unknown_sku", "RecordRejected", "unknown SKU {n} in order #{m}: no product in the ERP"),
    ("erp_sale", "TransientError", "cannot reach Tryton at http://erp:8000: timed out after 60 s"),
    ("valid_order", "RecordValidationError", "lines[{n}].quantity: 0 is less than 1"),
]
STORES = ["ST01", "ST02", "ST03", "WEB"]


def main(state: Path) -> None:
    rng = random.Random(16)
    now = time.time()
    start = now - 7 * 86400
    eng = Engine(state=state)
    stamps: list[tuple[int, float, float | None, float | None]] = []
    with closing(eng.store()) as store:
        for day in range(7):
            run_id = f"demo-{day}"
            store.start_run(run_id, "order_to_erp")
            traces, items, when = [], [], []
            for n in range(rng.randint(180, 260)):
                at = start + day * 86400 + rng.uniform(6, 20) * 3600
                store_code = rng.choice(STORES)
                key = f"shopify:{day}{n:04d}"
                roll = rng.random()
                if roll < 0.06:
                    step, error, text = rng.choice(FAILURES)
                    outcome = Outcome.DEAD_LETTERED
                    items.append(
                        ParkedItem("dead_letter", run_id, key, step,
                                   text.format(n=rng.randint(100, 999), m=rng.randint(1000, 9999)),
                                   queue="dead_letters", owner="integration", category=step,
                                   error_class=error, labels={"store": store_code})
                    )  # fmt: skip
                    when.append((at, None, at + 4 * 3600 if rng.random() < 0.3 else None))
                elif roll < 0.12:
                    outcome = Outcome.REVIEW
                    kind = "approval" if roll < 0.09 else "review"
                    decided = at + rng.uniform(0.5, 9) * 3600 if rng.random() < 0.8 else None
                    items.append(
                        ParkedItem(kind, run_id, key, "finance_check", f"order {key} needs finance",
                                   queue="finance", owner="finance",
                                   category="above_limit" if kind == "approval" else "totals",
                                   labels={"store": store_code})
                    )  # fmt: skip
                    when.append((at, decided, at + 8 * 3600 if decided is None else None))
                else:
                    outcome = Outcome.DONE
                steps = [["map", "mapped"], ["erp_sale", "sent" if outcome == "done" else "?"]]
                traces.append(
                    Trace(run_id, "order_to_erp", key, outcome, steps, None, at,
                          started_at=at - rng.uniform(0.2, 3), labels={"store": store_code})
                )  # fmt: skip
            ids = store.commit_progress("order_to_erp", Progress(run_id, traces, items))
            store.finish_run(run_id, "ok", {}, 0)
            stamps += [(i, *w) for i, w in zip(ids, when, strict=True)]
    with closing(sqlite3.connect(state)) as db, db:
        for item_id, made, decided, breached in stamps:
            db.execute(
                "UPDATE dead_letters SET created_at = ?, at = ?, status = CASE WHEN ? IS NULL "
                "THEN status WHEN kind = 'approval' THEN 'approved' ELSE 'closed' END, "
                "decided_at = ?, decided_by = CASE WHEN ? IS NULL THEN NULL ELSE 'ann' END, "
                "escalated_at = ?, breached = ?, due_at = ? WHERE id = ?",
                (made, made, decided, decided, decided, breached, int(breached is not None),
                 made + 4 * 3600, item_id),
            )  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo.db"))
