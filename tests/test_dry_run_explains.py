"""`--dry-run` names each record it would dead-letter or hold for review, and why, and the
requests each send would make, secrets masked."""

from __future__ import annotations

import json

from tests.conftest import invoke, write_flow, write_ndjson

GOOD = {
    "id": 1,
    "name": "#1",
    "created_at": "2026-11-30T10:00:00Z",
    "currency": "USD",
    "subtotal_price": "10.00",
    "total_price": "10.00",
    "line_items": [{"id": 1, "sku": "A", "quantity": 1, "price": "10.00"}],
}


def make(tmp_path):
    write_ndjson(
        tmp_path / "orders.ndjson",
        [
            GOOD,
            {**GOOD, "id": 2, "name": "#2", "currency": None},  # the mapping cannot map it
            {**GOOD, "id": 3, "name": "#3", "total_price": "250.00", "subtotal_price": "250.00"},
            {**GOOD, "id": 4, "name": "#4", "total_price": "99.00", "subtotal_price": "99.00"},
        ],
    )
    return write_flow(
        tmp_path,
        """
        flow: explained
        connections:
          erp:
            connector: http
            base_url: http://127.0.0.1:9
            headers: {X-Api-Key: "${env:DRY_RUN_API_KEY}"}
        source: {connector: file, path: orders.ndjson}
        steps:
          - map: shopify_order_to_canonical
          - name: big_orders
            route:
              - when: record.totals.total | round_decimal > 200
                steps:
                  - name: too_big
                    fail: "order {{ record.order_number }} is over 200"
              - when: record.totals.total | round_decimal > 50
                steps:
                  - name: check_by_hand
                    review: {queue: sales, reason: "{{ record.order_number }} over 50"}
          - name: erp_order
            send:
              connection: erp
              method: POST
              path: /orders
              headers: {X-Signature: "sig ${env:DRY_RUN_API_KEY}"}
              body: {number: "{{ record.order_number }}"}
        """,
    )


def test_json_names_each_record_the_step_and_the_reason(tmp_path):
    flow = make(tmp_path)
    env = {"DRY_RUN_API_KEY": "k-7f3a9c2e51"}
    done = invoke("run", flow, "--dry-run", "-o", "json", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["counts"]["dead_lettered"] == 2 and result["counts"]["review"] == 1
    letters = {d["record_key"]: d for d in result["would_dead_letter"]}
    assert letters["2"]["step"] == "map_1"
    assert letters["2"]["error"].startswith("TemplateRenderError: order #2 (shopify:2): ")
    assert "currency_code: expected a 3-letter code, got None" in letters["2"]["error"]
    assert letters["3"] == {
        "record_key": "3",
        "step": "too_big",
        "error": "RecordRejected: order #3 is over 200",
    }
    assert result["would_review"] == [
        {"record_key": "4", "step": "check_by_hand", "queue": "sales", "reason": "#4 over 50"}
    ]
    (send,) = result["would_send"]
    assert send["record_key"] == "1"
    assert send["request"]["headers"] == {"X-Signature": "sig ***"}
    assert "k-7f3a9c2e51" not in done.stdout + done.stderr
    assert not (tmp_path / ".flowyard").exists()


def test_the_table_says_it_too(tmp_path):
    flow = make(tmp_path)
    done = invoke("run", flow, "--dry-run", cwd=tmp_path, env={"DRY_RUN_API_KEY": "k-7f3a9c2e51"})
    assert "  would dead-letter 3 at too_big: RecordRejected: order #3 is over 200" in done.stdout
    assert "  would dead-letter 2 at map_1: TemplateRenderError: order #2" in done.stdout
    assert "  would hold 4 for review (sales) at check_by_hand: #4 over 50" in done.stdout
    assert '"X-Signature": "sig ***"' in done.stdout
    assert "k-7f3a9c2e51" not in done.stdout


def test_a_real_run_keeps_its_summary_as_before(tmp_path):
    flow = make(tmp_path)
    (tmp_path / "orders.ndjson").write_text(json.dumps({**GOOD, "currency": None}) + "\n")
    done = invoke("run", flow, "-o", "json", cwd=tmp_path, env={"DRY_RUN_API_KEY": "x-key"})
    result = json.loads(done.stdout)
    assert "would_dead_letter" not in result and result["dead_letter_ids"] == [1]
