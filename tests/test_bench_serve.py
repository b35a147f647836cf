"""bench/serve_bench.py keeps working (docs/benchmarks.md, "serve"); no timing is asserted.

Each measure runs briefly through to its report: every event acknowledged, kept and
applied once."""

from __future__ import annotations

import pytest

from bench import serve_bench
from tests.support.system import program


@pytest.mark.slow
def test_the_end_to_end_measure_reports_every_event_applied_once(tmp_path):
    report = serve_bench.main(
        ["e2e", "--rate", "50", "--seconds", "1", "--json", str(tmp_path / "e2e.json")]
    )
    e2e = report["e2e"]
    assert e2e["events"] == 50
    assert set(e2e["ack_to_apply_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    assert (tmp_path / "e2e.json").exists()


@pytest.mark.slow
def test_the_intake_measure_counts_what_the_inbox_kept(tmp_path):
    program("wrk", package="wrk")  # installed where it may be, else skipped
    report = serve_bench.main(
        ["intake", "--seconds", "2", "--repeat", "1", "--per-second-cap", "6000"]
    )
    [run] = report["intake"]["runs"]
    # what the inbox kept: every acceptance wrk saw, and those whose answer was still on its
    # way when wrk stopped (one per connection at most)
    assert 0 < run["accepted"] <= run["kept_in_inbox"] <= run["accepted"] + 16
    # a quiet machine can send every prepared delivery before the 2 s end: wrk then asks
    # /healthz, counted as exhausted when asked and as other when answered (at most one
    # request per connection unanswered at the stop); nothing else may be refused
    assert run["status_errors"] == 0
    assert run["other"] <= run["exhausted"] <= run["other"] + 16
    assert run["p50_us"] <= run["p99_us"] <= run["max_us"]
