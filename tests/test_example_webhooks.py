"""examples/webhooks runs as its README says: the local shop's signed orders reach the
stand-in ERP once each, the duplicate and the forged delivery are told apart, the metrics
count them, and the dead-lettered order is alerted to the stand-in chat with no secret in
it. Real processes on 127.0.0.1: chat.py, flowyard serve, shop.py."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

from prometheus_client.parser import text_string_to_metric_families

from tests.support.files import ROOT
from tests.support.serving import Serving, free_port

SECRET = "shop-demo-secret"


def wait_for(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not seen within {timeout} s")


def erp_rows(work) -> list[tuple]:
    path = work / "out" / "erp.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as db:
        try:
            return db.execute(
                "SELECT order_number, webhook_event FROM sales_orders ORDER BY order_number"
            ).fetchall()
        except sqlite3.OperationalError:  # the table is made by the first send
            return []


def test_the_shop_s_orders_reach_the_erp_once_and_the_dead_letter_is_alerted(tmp_path):
    work = tmp_path / "webhooks"
    shutil.copytree(
        ROOT / "examples" / "webhooks", work, ignore=shutil.ignore_patterns("out", ".flowyard")
    )
    flow = work / "flow.yaml"
    flow.write_text(flow.read_text().replace("[../../mappings]", f"[{ROOT / 'mappings'}]"))
    chat_port = free_port()
    chat = subprocess.Popen(
        [sys.executable, str(work / "chat.py"), "--port", str(chat_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert chat.stdout is not None and "listening" in chat.stdout.readline()
    env = {
        "SHOP_WEBHOOK_SECRET": SECRET,
        "FLOWYARD_ALERT_URL": f"http://127.0.0.1:{chat_port}/hook",
    }
    srv = Serving(work, [flow], env=env, args=["--alert-batch", "1", "--alert-interval", "1"])
    try:
        srv.start()
        sent_at = time.monotonic()
        shop = subprocess.run(
            [sys.executable, str(work / "shop.py"), srv.url + "/webhooks/shop_orders", "--broken"],
            env={**os.environ, "SHOP_WEBHOOK_SECRET": SECRET},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shop.returncode == 0, shop.stderr
        lines = shop.stdout.splitlines()
        assert lines[:6] == [
            "shop-event-1 #1001: 200 accepted",
            "shop-event-2 #1002: 200 accepted",
            "shop-event-3 #1003: 200 accepted",
            "shop-event-4 #1004: 200 accepted",
            "shop-event-5 #1005: 200 accepted",
            "shop-event-broken #9999: 200 accepted",
        ]
        assert lines[6] == "shop-event-1 again: 200 duplicate"
        assert lines[7].startswith("forged-1 (another secret): 401 signature refused")

        rows = wait_for(lambda: len(erp_rows(work)) == 5 and erp_rows(work))
        assert time.monotonic() - sent_at < 5.0
        assert rows == [(f"#100{n}", f"shop-event-{n}") for n in range(1, 6)]

        alert = wait_for(
            lambda: (
                (work / "out" / "chat.ndjson").exists()
                and (work / "out" / "chat.ndjson").read_text()
            )
        )
        [message] = [json.loads(line) for line in alert.splitlines()]
        assert "1 dead letter (shop_orders)" in message["text"]
        assert "lines: must contain at least 1 items" in message["text"]
        assert SECRET not in alert and env["FLOWYARD_ALERT_URL"] not in alert

        scraped = srv.client.get(srv.url + "/metrics").text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(scraped)
            for s in family.samples
        }
        webhooks = {
            outcome: samples[
                ("flowyard_webhooks_total", (("flow", "shop_orders"), ("outcome", outcome)))
            ]
            for outcome in ("accepted", "duplicate", "unauthorized")
        }
        assert webhooks == {"accepted": 6, "duplicate": 1, "unauthorized": 1}
        assert samples[("flowyard_dead_letters_open", (("flow", "shop_orders"),))] == 1
        assert srv.stop() == 0
        assert erp_rows(work) == rows  # the duplicate never reached the ERP
        assert SECRET not in srv.output()
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill()
        chat.terminate()
        chat.wait(10)
