"""examples/scale_out/run.py does what its README says: two workers and a serve process on
one PostgreSQL apply every order once, those of the source and those pushed as webhooks."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_two_workers_and_a_serve_process_on_a_local_postgres_apply_every_order_once(
    postgres_server,
):
    # postgres_server: skipped (failed in CI) where no PostgreSQL can be had; the example
    # starts a server of its own, as a reader would
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "scale_out" / "run.py"), "--orders", "80"]
        + ["--webhooks", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "the ERP applied 90 of 90 orders (80 from the shop's database, 10 by webhook), 0 twice"
        in (done.stdout)
    )
    assert "serve (exit 0): 10 webhooks accepted, 10 deliveries again answered duplicate" in (
        done.stdout
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("worker ")]
    assert len(lines) == 2 and all("(exit 0)" in line for line in lines)
    assert done.stdout.count("shop_orders_to_erp") == 2  # flowyard runs list: two worker runs
    assert "web_orders_to_erp   webhook" in done.stdout
