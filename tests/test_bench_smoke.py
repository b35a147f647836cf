"""The benchmark scripts keep working (bench/, docs/benchmarks.md). No timing is asserted.

Small inputs, one repetition: the generator's promises, the engine and the hand-written
baseline writing exactly the same rows, and every measurement of bench/run.py running
through to its JSON report.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run as bench
from bench.gen_orders import generate

ROOT = Path(__file__).resolve().parent.parent

TABLES = ("pickups", "shipments", "sales_orders")


def rows(path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY order_id").fetchall() for t in TABLES}
    finally:
        db.close()


def test_the_generator_is_seeded_and_writes_shopify_orders(tmp_path):
    path = tmp_path / "orders.ndjson"
    made = generate(path, 200, seed=7, malformed=0.05, invalid=0.05)
    again = tmp_path / "again.ndjson"
    assert generate(again, 200, seed=7, malformed=0.05, invalid=0.05) == made
    assert again.read_bytes() == path.read_bytes()
    assert generate(tmp_path / "other.ndjson", 200, seed=8) != made

    parsed, broken = [], 0
    for line in path.read_text().splitlines():
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            broken += 1
    assert broken == made["malformed"] > 0 and made["invalid"] > 0
    assert all(o["id"] > 2**53 and o["line_items"][0]["id"] > 2**53 for o in parsed)
    assert all(isinstance(o["total_price"], str) and "." in o["total_price"] for o in parsed)
    assert {len(o["line_items"]) for o in parsed} == {1, 2, 3, 4, 5}
    # pickup orders as the order resource tells them: a pickup shipping line, no address
    pickups = [o for o in parsed if o["shipping_address"] is None]
    assert len(pickups) >= made["pickup"] > 0  # made["pickup"] counts the valid ones
    assert all("Pickup at" in o["shipping_lines"][0]["title"] for o in pickups)
    assert not any("fulfillment_orders" in o for o in parsed)


def test_engine_and_baseline_write_the_same_rows_and_a_rerun_skips_them(tmp_path):
    report = bench.main(
        [
            "throughput",
            "--records",
            "200",
            "--repeat",
            "1",
            "--workdir",
            str(tmp_path),
            "--json",
            str(tmp_path / "results.json"),
        ]
    )
    result = report["throughput"]
    made = result["file"]
    good = made["lines"] - made["malformed"] - made["invalid"]
    engine, baseline = result["counts"]["engine"], result["counts"]["baseline"]
    assert (
        engine["first"]
        == baseline["first"]
        == {
            "read": 200,
            "done": good,
            "skipped": 0,
            "dead_lettered": made["malformed"] + made["invalid"],
        }
    )
    assert engine["rerun"] == baseline["rerun"] == {**engine["first"], "done": 0, "skipped": good}

    work = tmp_path / result["workdir"]
    written = rows(work / "engine-0" / "erp.db")
    assert written == rows(work / "baseline-0" / "erp.db")  # every row, column for column
    assert len(written["sales_orders"]) == good
    assert len(written["pickups"]) + len(written["shipments"]) == good
    assert written["pickups"] and written["shipments"]

    assert all(r > 0 for r in result["ratio_engine_to_baseline"].values())
    assert all(s > 0 for by_side in result["rerun_speedup"].values() for s in by_side.values())
    assert json.loads((tmp_path / "results.json").read_text())["throughput"]["records"] == 200
    # CPU per record with each side's start-up (a run on an empty file) taken off
    assert set(result["startup_cpu_s"]) == {"engine", "baseline"}
    assert all(cpu > 0 for cpu in result["startup_cpu_s"].values())
    assert result["cpu_us_per_record"]["engine"]["first"] > 0
    over = result["engine_cpu_us_per_record_over_baseline"]["first"]
    assert over == pytest.approx(
        result["cpu_us_per_record"]["engine"]["first"]
        - result["cpu_us_per_record"]["baseline"]["first"]
    )


def test_the_durable_baseline_and_dlt_write_the_same_orders(tmp_path):
    # dlt runs in a virtual environment of its own, made by `bench/run.py throughput --dlt`
    # (a minute, with the package index): this checks the script once it is there
    from bench.dlt_load import REQUIREMENTS, venv_dir

    made = (venv_dir() / "requirements.txt").exists() and (
        (venv_dir() / "requirements.txt").read_text() == "\n".join(REQUIREMENTS) + "\n"
    )
    sides = ["--with-durable", *(["--dlt"] if made else [])]
    report = bench.main(
        ["throughput", "--records", "120", "--repeat", "1", "--startup-runs", "1", *sides]
        + ["--workdir", str(tmp_path), "--json", str(tmp_path / "results.json")]
    )
    result = report["throughput"]
    counts = result["counts"]
    assert counts["durable"] == counts["engine"]  # and the same rows: checked by run.py
    if made:
        assert counts["dlt"]["first"] == counts["engine"]["first"]
        work = tmp_path / result["workdir"]
        with sqlite3.connect(work / "dlt-0" / "erp.db") as db:
            merged = db.execute("SELECT order_id, total FROM sales_orders ORDER BY order_id")
            assert merged.fetchall() == [
                (r[0], r[6]) for r in rows(work / "engine-0" / "erp.db")["sales_orders"]
            ]
        assert result["ratio"]["dlt"]["first"]["wall"] > 0


def test_the_dlt_script_explains_itself_without_dlt():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dlt_load.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--schema" in done.stdout


def test_memory_http_and_startup_measurements_run_and_report(tmp_path):
    out = tmp_path / "results.json"
    common = ["--json", str(out)]

    report = bench.main(["memory", "--records", "40", "--sample-every", "0.05", *common])
    assert report["memory"]["sizes"]["40"]["engine"]["max_rss_mb"] > 10
    assert json.loads(out.read_text())["memory"]["sizes"]["40"]["engine"]["counts"]["read"] == 40

    report = bench.main(
        [
            "http",
            "--concurrency",
            "4",
            "--seconds",
            "0",
            "--min-records",
            "20",
            "--repeat",
            "1",
            "--with-threads",
            *common,
        ]
    )
    run = report["http"]["runs"]["4"]
    assert run["records"] == 20
    for side in ("processes", "threads", "bare_client"):
        assert 0 < run[side]["fraction_of_limit"] <= 1.05, (side, run)
        assert run[side]["cpu_ms_per_send"] > 0 and run[side]["target_cpu_ms_per_send"] >= 0
    assert run["threads"]["lanes"] == "threads"
    assert run["processes"]["lanes"].startswith("processes:") or os.cpu_count() == 1

    report = bench.main(["local", "--records", "30", "--repeat", "2", *common])
    assert set(report["local"]["ratio_n_over_1"]) == {"wall", "inner", "cpu"}

    report = bench.main(["startup", "--repeat", "1", *common])
    assert set(report["startup"]) >= {"flowyard --help", "python -c pass"}
    assert report["machine"]["nproc"] >= 1


@pytest.mark.parametrize("client", ["httpx", "httpx-per-thread", "httpx-stdlib", "http.client"])
def test_the_http_ceiling_measures_each_client(client):
    from tests.support.target import Target

    with Target(latency_ms=0) as target:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "http_ceiling.py"), target.url]
            + ["--records", "12", "--concurrency", "3", "--client", client],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["client"] == client and report["cpu_ms_per_request"] > 0
        assert len(target.applied) == 12


def test_the_per_record_parts_and_the_profile_run(tmp_path, capsys):
    from bench import per_record, profile_run

    parts = per_record.main(["--records", "30", "--rounds", "1", "--json", str(tmp_path / "p")])
    assert set(parts["engine_parts_us"]) >= {
        "the compiled mapping (plain Python, sandboxed)",
        "validation (jsonschema-rs, then fastjsonschema if refused)",
    }
    assert all(us > 0 for us in parts["engine_parts_us"].values())
    assert parts["baseline_parts_sum_us"] > 0
    assert json.loads((tmp_path / "p").read_text())["records"] == 30

    profile_run.main(["--records", "30", "--top", "5"])
    printed = capsys.readouterr().out
    assert "first run: {'read': 30" in printed and "re-run: {'read': 30" in printed
    assert "mapping and templates" in printed


def test_a_sampling_profile_is_summed_by_part(tmp_path):
    from bench.spy_parts import OUTSIDE, parts

    loop = "main (cli.py:1);Runner.run (engine/runner.py:2);Runner._loop (engine/runner.py:3)"
    raw = tmp_path / "spy.txt"
    raw.write_text(
        "main (cli.py:1);<module> (engine/api.py:1) 2\n"
        f"{loop};MapStep (engine/executor.py:9);root (<mapping shop>:4);do_default (x.py:1) 5\n"
        f"{loop};validate (engine/validation.py:260);validate_x (<string>:3) 3\n"
    )
    shares = parts(raw.read_text())
    assert shares == {
        "mapping (the compiled mapping: plain Python, sandbox, retail filters)": 0.5,
        "validation (fastjsonschema)": 0.3,
        OUTSIDE: 0.2,
    }
