"""Process intelligence: `flowyard stats` computed on a run history the test builds, checked
against figures worked out by hand, and `flowyard report`, a self-contained HTML page,
opened in a real headless Chromium that must draw its charts without a console error.

Chromium is Debian's `chromium` package: tests/support/system.py finds it, or installs it
when the test runs as root with apt-get (CI, on a clean machine), once per session; else
the browser test is skipped with the reason (and fails under CI=true if an installation
was tried and gave no browser: the report must be seen rendering there). The screenshot
it takes stays in the test's temporary folder (pytest keeps the last three runs').
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from engine import Engine, Outcome
from engine.stats import percentile, signature
from engine.store import ParkedItem, Progress, Trace
from tests.conftest import invoke
from tests.support.system import program

BASE = 1_789_999_200.0  # a whole hour (497,222 h after the epoch), in the past
FLOW = "orders"


def _trace(key, outcome, started, ended, steps, labels=None, run="run-1"):
    return Trace(run, FLOW, key, outcome, steps, None, ended, started_at=started, labels=labels)


def _item(kind, key, step, message, *, queue, owner, category, labels=None, error=None):
    return ParkedItem(
        kind=kind,
        run_id="run-1",
        record_key=key,
        step=step,
        message=message,
        record={"id": key},
        queue=queue,
        owner=owner,
        category=category,
        labels=labels,
        error_class=error,
    )


@pytest.fixture
def history(tmp_path):
    """Five orders through flow `orders`, times (s after BASE) chosen so that every figure
    can be worked out by hand:

    - A: one pass 1000 -> 1010, done (cycle 10), store S1;
    - B: held for approval at 1020 (pass from 1000), approved by ann at 4600, resumed
      4620 -> 4630, done (cycle 3630, approval 3580), store S2;
    - C: dead-lettered 1025 -> 1030 at unknown_sku, store S1, due at 1090 and escalated
      at 1100 (an SLA breach);
    - D: one pass 1990 -> 2000, done (cycle 10), store S2;
    - E: dead-lettered 2500 -> 2510 at unknown_sku, store S2: the same failure as C.
    """
    state = tmp_path / "state.db"
    eng = Engine(state=state)
    with closing(eng.store()) as store:
        store.start_run("run-1", FLOW)
        store.start_run("run-2", FLOW, kind="resume")
        sent = [["map", "mapped"], ["erp", "sent"]]
        failed = [["map", "mapped"], ["unknown_sku", "dead_lettered"]]
        ids = store.commit_progress(
            FLOW,
            Progress(
                "run-1",
                traces=[
                    _trace("A", Outcome.DONE, BASE + 1000, BASE + 1010, sent, {"store": "S1"}),
                    _trace(
                        "B",
                        Outcome.REVIEW,
                        BASE + 1000,
                        BASE + 1020,
                        [["map", "mapped"], ["ok", "approval"]],
                        {"store": "S2"},
                    ),
                    _trace(
                        "C",
                        Outcome.DEAD_LETTERED,
                        BASE + 1025,
                        BASE + 1030,
                        failed,
                        {"store": "S1"},
                    ),
                    _trace("D", Outcome.DONE, BASE + 1990, BASE + 2000, sent, {"store": "S2"}),
                    _trace(
                        "E",
                        Outcome.DEAD_LETTERED,
                        BASE + 2500,
                        BASE + 2510,
                        failed,
                        {"store": "S2"},
                    ),
                ],  # fmt: skip
                items=[
                    _item(
                        "approval",
                        "B",
                        "ok",
                        "order B above the limit",
                        queue="finance",
                        owner="fin",
                        category="above_limit",
                        labels={"store": "S2"},
                    ),
                    _item(
                        "dead_letter",
                        "C",
                        "unknown_sku",
                        "unknown SKU 4711 in order #1001 (line 3)",
                        queue="dead_letters",
                        owner="ops",
                        category="unknown_sku",
                        labels={"store": "S1"},
                        error="RecordRejected",
                    ),
                    _item(
                        "dead_letter",
                        "E",
                        "unknown_sku",
                        "unknown SKU 5820 in order #1932 (line 1)",
                        queue="dead_letters",
                        owner="ops",
                        category="unknown_sku",
                        labels={"store": "S2"},
                        error="RecordRejected",
                    ),
                ],  # fmt: skip
            ),
        )
        store.commit_progress(
            FLOW,
            Progress(
                "run-2",
                traces=[
                    _trace(
                        "B",
                        Outcome.DONE,
                        BASE + 4620,
                        BASE + 4630,
                        [["ok", "approved"], ["erp", "sent"]],
                        {"store": "S2"},
                        "run-2",
                    ),
                ],  # fmt: skip
            ),
        )
        store.decide(ids[0], "approved", "ann", at=BASE + 4600)
    # the store stamps items with the clock: give them the times of their traces
    with closing(sqlite3.connect(state)) as db, db:
        for item_id, made in zip(ids, (1020, 1030, 2510), strict=True):
            db.execute(
                "UPDATE dead_letters SET created_at = ?, at = ? WHERE id = ?",
                (BASE + made, BASE + made, item_id),
            )
        db.execute("UPDATE dead_letters SET due_at = ? WHERE id = ?", (BASE + 1090, ids[1]))
    [escalated] = eng.escalate(now=BASE + 1100)
    assert escalated.id == ids[1]
    return eng, ids


def test_stats_of_a_built_history_match_the_figures_worked_out_by_hand(history):
    eng, ids = history
    stats = eng.stats(until=BASE + 4700, bucket="hour")
    [f] = stats.flows
    assert f.flow == FLOW
    assert (f.records, f.passes) == (5, 6)
    assert f.outcomes == {"done": 3, "review": 1, "dead_lettered": 2}
    # A 10 s, D 10 s, B 3630 s (its wait for ann included): nearest-rank p50 10, p95 3630
    assert f.cycle_time_s == {"count": 3, "p50": 10.0, "p95": 3630.0, "max": 3630.0,
                              "total": 3650.0}  # fmt: skip
    assert f.approval_cycle_s["count"] == 1 and f.approval_cycle_s["p50"] == 3580.0
    assert f.waiting_for_people_s["total"] == 3580.0
    assert f.approvals == {"approved": 1}
    # 3 exceptions over 5 records
    assert (f.exceptions, f.exception_rate) == (3, 0.6)
    assert f.exceptions_by_category == {"unknown_sku": 2, "above_limit": 1}
    assert f.exceptions_by_step == {"unknown_sku": 2, "ok": 1}
    assert f.exceptions_by_kind == {"dead_letter": 2, "approval": 1}
    assert f.exceptions_by_label == {"store": {"S2": 2, "S1": 1}}
    assert (f.sla_breaches, f.breaches_by_queue) == (1, {"dead_letters": 1})
    # done per hour: A and D in the first hour, B in the second
    assert [(p["start"] - BASE, p["done"], p["passes"]) for p in f.throughput] == [
        (0.0, 2, 5),
        (3600.0, 1, 1),
    ]
    steps = {s["step"]: (s["passes"], s["exceptions"]) for s in f.steps}
    assert steps == {
        "map": (5, 0),
        "erp": (3, 0),
        "ok": (2, 1),
        "unknown_sku": (2, 2),
    }
    # a window that starts after the first hour keeps B's resumed pass only
    later = eng.stats(since=BASE + 3600, until=BASE + 4700)
    [g] = later.flows
    assert (g.records, g.exceptions, g.cycle_time_s["p50"]) == (1, 0, 10.0)


def test_stats_from_the_cli_as_json_and_for_people(history, tmp_path):
    state = tmp_path / "state.db"
    run = invoke("stats", "--state", state, "--output", "json")
    assert run.returncode == 0, run.stderr
    [f] = json.loads(run.stdout)["flows"]
    assert f["records"] == 5 and f["exceptions_by_category"]["unknown_sku"] == 2
    people = invoke("stats", "--state", state)
    assert people.returncode == 0, people.stderr
    assert "orders: 5 records, 6 passes" in people.stdout
    assert "exceptions      3 (60.0 % of records), SLA breaches 1" in people.stdout
    assert "by store: S2 2, S1 1" in people.stdout
    bad = invoke("stats", "--state", state, "--since", "last week")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_the_report_is_one_page_with_clusters_queues_and_figures_and_loads_nothing(
    history, tmp_path
):
    eng, ids = history
    out = eng.report(tmp_path / "report.html")
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    # nothing from anywhere: no external reference, and a policy that forbids it
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "default-src 'none'" in page
    assert page.count('<svg class="chart"') >= 4
    # the top cluster: C and E failed the same way, ids and numbers masked
    assert "RecordRejected at unknown_sku: unknown SKU &lt;n&gt; in order #&lt;n&gt;" in page
    cluster_row = re.search(r"<tr><td class=num>2</td><td class=num>2</td>.*?</tr>", page)
    assert cluster_row is not None and f"dead letter {ids[2]} (E)" in cluster_row.group(0)
    # queue ages: the escalated dead letters wait with ops, B was approved
    assert "<td>dead_letters</td><td>ops</td><td class=num>2</td>" in page
    assert "60.0 %" in page  # the exception rate tile


@pytest.fixture(scope="module")
def chromium() -> str:
    """Headless Chromium's path: found, or installed from Debian's package (see above)."""
    return program("chromium", "chromium-browser", package="chromium")


def _browser(binary: str, *args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_report_renders_its_charts_in_headless_chromium_without_console_errors(
    chromium, history, tmp_path
):
    eng, _ = history
    page = eng.report(tmp_path / "report.html")
    url = page.resolve().as_uri()

    dom = _browser(
        chromium, "--virtual-time-budget=3000", "--dump-dom", url, profile=tmp_path / "p1"
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None, dom.stdout[:500]
    charts = int(re.search(r'data-charts="(\d+)"', body.group(1)).group(1))
    assert charts == page.read_text().count('<svg class="chart"') and charts >= 4
    assert 'data-errors="0"' in body.group(1)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []

    shot = tmp_path / "report.png"
    taken = _browser(
        chromium, "--window-size=1280,1800", f"--screenshot={shot}", url, profile=tmp_path / "p2"
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1800) and len(data) > 20_000
    assert [line for line in taken.stderr.splitlines() if ":CONSOLE" in line] == []


def test_percentiles_are_nearest_rank():
    assert percentile([10, 3630, 10], 50) == 10
    assert percentile([10, 3630, 10], 95) == 3630
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([], 50) is None


def test_error_signatures_mask_ids_and_numbers():
    first = signature("RecordRejected", "unknown SKU 4711 in order #1001 (line 3)", "sku")
    second = signature("RecordRejected", "unknown SKU 5820 in order #1932 (line 1)", "sku")
    assert first == second
    assert signature("E", "unknown SKU TEE in order 1", "s") != signature(
        "E", "unknown SKU MUG in order 1", "s"
    )  # words are kept
    assert signature("E", "order 6100000000000001001 at 19.90 USD", "s") == (
        signature("E", "order 6100000000000001932 at 4.50 USD", "s")
    )
    assert "<n>" in first and "1001" not in first
