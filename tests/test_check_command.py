"""`flowyard check FLOW`: reach each connection (log in, one harmless read), send nothing."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import ROOT, flowyard, invoke, write_flow, write_ndjson

pytest_plugins = ["tests.support.tryton"]
TOKEN = "chk-51d0e8a9c3"


def make(tmp_path, url):
    write_ndjson(tmp_path / "in.ndjson", [{"id": 1}])
    sqlite3.connect(tmp_path / "erp.db").executescript("CREATE TABLE sales (id INTEGER);")
    return write_flow(
        tmp_path,
        f"""
        flow: reachable
        connections:
          shop:
            connector: http
            base_url: {url}/api
            auth: {{type: bearer, token: "${{env:CHECK_SHOP_TOKEN}}"}}
          erp:
            connector: sqlite
            path: erp.db
          ledger:
            connector: sqlite
            path: out/ledger.db
          queue:
            connector: file
            base_dir: out
          console:
            connector: stdout
        source: {{connector: file, path: in.ndjson}}
        steps:
          - name: stock
            enrich: {{connection: shop, method: GET, path: /stock, save_as: stock}}
          - name: sale
            send: {{connection: erp, table: sales, row: {{id: "{{{{ record.id }}}}"}}}}
          - name: ledger_row
            send: {{connection: ledger, table: rows, row: {{id: "{{{{ record.id }}}}"}}}}
          - name: queued
            send: {{connection: queue, path: q.ndjson, record: "{{{{ record }}}}"}}
          - name: shown
            send: {{connection: console, record: "{{{{ record }}}}"}}
        """,
    )


def test_every_connection_is_reached_and_nothing_is_sent(tmp_path, target):
    flow = make(tmp_path, target.url)
    done = invoke("check", flow, "-o", "json", cwd=tmp_path, env={"CHECK_SHOP_TOKEN": TOKEN})
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["connection"]: r for r in json.loads(done.stdout)}
    assert results["shop"]["uses"] == ["enrich"] and results["shop"]["status"] == "ok"
    assert results["shop"]["checks"][0]["detail"] == "reached: HTTP 404 (no read there to try)"
    assert results["erp"]["checks"][0]["detail"] == "1 table(s)"
    assert results["ledger"]["checks"][0]["detail"] == "not there yet: the first write makes it"
    assert results["queue"]["checks"][0]["what"].endswith("/out")
    assert results["console"]["status"] == "not checked"
    size = (tmp_path / "in.ndjson").stat().st_size
    assert results["file@source"]["checks"][0]["detail"] == f"{size} bytes"
    (request,) = target.requests
    assert request["method"] == "GET" and request["path"] == "/api"
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert target.applied == [] and not (tmp_path / "out").exists()
    assert not (tmp_path / ".flowyard").exists()
    assert TOKEN not in done.stdout + done.stderr


def test_refused_credentials_and_a_missing_source_fail_with_the_reason(tmp_path, target):
    flow = make(tmp_path, target.url)
    (tmp_path / "in.ndjson").unlink()
    target.script([{"status": 401, "body": {"errors": f"bad token {TOKEN}"}}])
    done = invoke("check", flow, cwd=tmp_path, env={"CHECK_SHOP_TOKEN": TOKEN})
    assert done.returncode == 1
    assert "shop (http; enrich): failed" in done.stdout
    assert "FAILED  GET the base URL: the credentials were refused (HTTP 401)" in done.stdout
    assert "FAILED  read " in done.stdout and "in.ndjson: no such file" in done.stdout
    assert "erp (sqlite; send): ok" in done.stdout
    assert TOKEN not in done.stdout


def test_an_unreachable_target_and_a_missing_secret(tmp_path):
    flow = make(tmp_path, "http://127.0.0.1:9")
    down = invoke("check", flow, cwd=tmp_path, env={"CHECK_SHOP_TOKEN": TOKEN})
    assert down.returncode == 1 and "ConnectError" in down.stdout
    missing = invoke("check", flow, cwd=tmp_path)
    assert missing.returncode == 2
    assert "environment variable CHECK_SHOP_TOKEN is not set" in missing.stderr


@pytest.mark.tryton
def test_tryton_logs_in_and_reads_then_refuses_a_wrong_password(tryton, tmp_path, monkeypatch):
    flow = ROOT / "flows" / "order_to_erp.yaml"
    args = ["--var", f"tryton_url={tryton.url}", "--var", f"tryton_database={tryton.database}"]
    done = flowyard("check", flow, *args, "-o", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    erp = next(r for r in json.loads(done.stdout) if r["connection"] == "erp")
    assert [c["ok"] for c in erp["checks"]] == [True, True]
    assert erp["checks"][1]["detail"].endswith("product(s)")
    wrong = flowyard("check", flow, *args, cwd=tmp_path, env={"TRYTON_PASSWORD": "wrong-pw-1"})
    assert wrong.returncode == 1 and "refused the login of user 'admin'" in wrong.stdout
