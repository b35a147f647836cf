"""`flowyard test`: offline flow tests from a test file beside the flow."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from engine import Engine
from tests.conftest import ROOT, invoke

FLOW = """\
flow: shop_orders
mappings: [{mappings}]
vars:
  out_dir: out
connections:
  erp:
    connector: http
    base_url: http://127.0.0.1:9/api
    auth: {{type: bearer, token: "${{env:FLOWTEST_ERP_TOKEN}}"}}
    retry: {{attempts: 3, backoff: 5}}
  queue:
    connector: file
source:
  connector: file
  path: orders.ndjson
steps:
  - name: canonical_order
    map: shopify_order_to_canonical
  - name: valid_order
    validate: order
  - name: stock
    enrich:
      connection: erp
      method: GET
      path: "/stock/{{{{ record.lines[0].sku }}}}"
      save_as: stock
  - name: by_stock
    route:
      - when: not record.stock.available
        steps:
          - name: out_of_stock
            fail: >-
              no stock of {{{{ record.lines[0].sku }}}} for order {{{{ record.order_number }}}}
  - name: erp_order
    send:
      connection: erp
      method: POST
      path: /orders
      body: {{number: "{{{{ record.order_number }}}}", total: "{{{{ record.totals.total }}}}"}}
  - name: to_queue
    send:
      connection: queue
      path: "{{{{ vars.out_dir }}}}/orders.ndjson"
      record: {{order: "{{{{ record.order_number }}}}"}}
"""

ORDER = {
    "id": 6600000000000000001,
    "name": "#3001",
    "created_at": "2026-11-30T10:00:00-05:00",
    "currency": "USD",
    "subtotal_price": "19.00",
    "total_price": "19.00",
    "line_items": [{"id": 1, "sku": "TEE-M", "title": "Tee", "quantity": 1, "price": "19.00"}],
}

TESTS = """\
# a comment that --update must keep
stubs:
  erp:
    - match: {method: GET, path: "/stock/*"}
      answer: {available: 3}
    - match: {method: POST, path: /orders}
      answer: {id: 77}
  queue:
    - answer: {path: written}
cases:
  - name: an order in stock is sent to the ERP and queued
    record_file: order.json
    expect:
      outcome: done
      path:
        - canonical_order: mapped
        - valid_order: valid
        - stock: looked up
        - by_stock: no branch
        - erp_order: sent
        - to_queue: sent
      requests:
        erp:
          - {method: GET, path: /stock/TEE-M}
          - {method: POST, path: /orders, body: {number: "#3001", total: "19.00"}}
        queue:
          - {path: out/orders.ndjson, record: {order: "#3001"}}
  # a comment between cases
  - name: an order out of stock is dead-lettered with the flow's reason
    record_file: order.json
    stubs:
      erp:
        - match: {method: GET}
          answer: {available: 0}
    expect:
      outcome: dead_lettered
      dead_letters:
        - step: out_of_stock
          reason: "no stock of TEE-M for order #3001"
"""


def make_project(tmp_path: Path, tests: str = TESTS) -> Path:
    (tmp_path / "flow.yaml").write_text(FLOW.format(mappings=ROOT / "mappings"))
    (tmp_path / "order.json").write_text(json.dumps(ORDER))
    (tmp_path / "flow.test.yaml").write_text(tests)
    return tmp_path


def test_passing_cases_exit_0_and_leave_nothing_behind(tmp_path):
    project = make_project(tmp_path)
    before = sorted(p.name for p in project.iterdir())
    done = invoke("test", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert sorted(p.name for p in project.iterdir()) == before  # no state, no out/


def test_a_failing_case_shows_a_diff_and_exits_1(tmp_path):
    project = make_project(tmp_path, TESTS.replace('total: "19.00"}}', 'total: "21.00"}}'))
    done = invoke("test", "flow.test.yaml", cwd=project)
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "1 passed, 1 failed" in done.stdout
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "--- expected" in lines and "+++ got" in lines
    assert "-        total: '21.00'" in done.stdout and "+        total: '19.00'" in done.stdout


def test_update_rewrites_only_the_expectations_that_failed_and_keeps_comments(tmp_path):
    project = make_project(tmp_path, TESTS.replace("no stock of TEE-M", "no stock for TEE-M"))
    done = invoke("test", "--update", cwd=project)
    assert done.returncode == 1 and "1 updated" in done.stdout
    text = (project / "flow.test.yaml").read_text()
    assert "# a comment that --update must keep" in text
    assert "# a comment between cases" in text
    assert "no stock of TEE-M for order #3001" in text
    assert "- {method: GET, path: /stock/TEE-M}" in text  # the passing case is untouched
    again = invoke("test", cwd=project)
    assert again.returncode == 0, again.stdout


def test_a_case_without_expectations_fails_until_update_records_them(tmp_path):
    tests = TESTS.split("cases:")[0] + "cases:\n  - name: new\n    record_file: order.json\n"
    project = make_project(tmp_path, tests)
    first = invoke("test", cwd=project)
    assert first.returncode == 1 and "expects nothing" in first.stdout
    invoke("test", "--update", cwd=project)
    text = (project / "flow.test.yaml").read_text()
    assert "    expect:\n      outcome: done\n" in text
    assert invoke("test", cwd=project).returncode == 0


def test_a_request_no_stub_answers_fails_the_case_naming_it(tmp_path):
    tests = TESTS.replace(
        "    - match: {method: POST, path: /orders}\n      answer: {id: 77}\n", ""
    )
    project = make_project(tmp_path, tests)
    done = invoke("test", "-k", "in stock", "--output", "json", cwd=project)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    case = report["files"][0]["cases"][0]
    assert case["status"] == "failed"
    unanswered = [d for d in case["differences"] if d["what"] == "unanswered"]
    assert "no stub matches the request" in unanswered[0]["got"]
    assert "'path': '/orders'" in unanswered[0]["got"]


def test_transient_errors_are_retried_without_waiting_then_the_next_stub_answers(tmp_path):
    tests = TESTS.replace(
        "    - match: {method: POST, path: /orders}\n",
        "    - match: {method: POST}\n      times: 2\n"
        "      error: {kind: transient, status: 503, message: busy}\n"
        "    - match: {method: POST, path: /orders}\n",
    )
    project = make_project(tmp_path, tests)
    report = Engine().test([project / "flow.test.yaml"], select="in stock")
    case = report.files[0].cases[0]
    assert case.duration_s < 2  # the flow's backoff of 5 s is not waited for
    posts = [r for r in case.got["requests"]["erp"] if r["method"] == "POST"]
    assert len(posts) == 3  # two refused, the third answered
    assert report.files[0].cases[0].status == "failed"  # the expectation lists one POST


def test_the_record_after_a_step_and_reason_contains(tmp_path):
    tests = TESTS.replace(
        '          reason: "no stock of TEE-M for order #3001"',
        "          reason_contains: no stock of TEE-M\n"
        "      records:\n"
        "        valid_order: {order_number: '#3001'}",
    )
    project = make_project(tmp_path, tests)
    report = Engine().test([project], select="out of stock")
    case = report.files[0].cases[0]
    assert [d.what for d in case.differences] == ["records"]  # only the record differs
    assert case.got["records"]["valid_order"]["order_id"] == "shopify:6600000000000000001"
    assert case.got["records"]["valid_order"]["lines"][0]["sku"] == "TEE-M"


def test_numbers_in_stubs_and_inline_records_keep_their_digits_as_json_would(tmp_path):
    """A 19.90 in a stubbed answer or an inline record reaches the flow as Decimal("19.90"),
    as a connector reads it from JSON, not as the float 19.9: money in reasons and figures
    reads as the target and the shop wrote it."""
    record = {**ORDER, "total_price": "__TOTAL__"}
    tests = TESTS.replace("answer: {available: 3}", "answer: {available: 3, price: 19.90}")
    tests = tests.replace(
        "    record_file: order.json\n    expect:\n      outcome: done\n",
        "    record: " + json.dumps(record).replace('"__TOTAL__"', "19.90") + "\n"
        "    expect:\n      outcome: done\n      records: {stock: {}}\n",
        1,
    )
    project = make_project(tmp_path, tests)
    report = Engine().test([project], select="in stock")
    [case] = report.files[0].cases
    assert case.got["records"]["stock"]["stock"] == {"available": 3, "price": "19.90"}
    assert case.got["records"]["stock"]["totals"]["total"] == "19.90"


def test_a_wrong_test_file_is_reported_with_line_and_column_exit_2(tmp_path):
    tests = TESTS.replace("  erp:\n    - match: {method: GET", "  erpp:\n    - match: {method: GET")
    tests = tests.replace(
        "    record_file: order.json\n    expect:", "    recrod: {}\n    expect:", 1
    )
    project = make_project(tmp_path, tests)
    done = invoke("test", cwd=project)
    assert done.returncode == 2
    assert "flow.test.yaml:12:5: error at cases[0].recrod: unknown key 'recrod'" in done.stdout
    assert "did you mean 'record'" in done.stdout


def test_a_stub_for_a_connection_the_flow_lacks_is_refused(tmp_path):
    tests = TESTS.replace("  queue:\n    - answer: {path: written}", "  queu:\n    - answer: {}")
    project = make_project(tmp_path, tests)
    report = Engine().test([project])
    assert report.exit_code == 2
    message = report.files[0].problems[0].message
    assert "no connection 'queu'" in message and "did you mean 'queue'" in message


def test_an_invalid_flow_makes_the_test_file_invalid(tmp_path):
    project = make_project(tmp_path)
    flow = project / "flow.yaml"
    flow.write_text(flow.read_text().replace("map: shopify_order", "map: shopfy_order"))
    done = invoke("test", cwd=project)
    assert done.returncode == 2
    assert "unknown mapping 'shopfy_order_to_canonical'" in done.stdout


def test_secrets_are_not_needed_and_records_come_from_ndjson_lines(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWYARD_TEST_ERP_TOKEN", raising=False)
    project = make_project(tmp_path)
    (project / "orders.ndjson").write_text(
        json.dumps({**ORDER, "name": "#1"}) + "\n" + json.dumps(ORDER) + "\n"
    )
    tests = TESTS.replace("record_file: order.json", "record_file: orders.ndjson\n    line: 2")
    (project / "flow.test.yaml").write_text(tests)
    assert Engine().test([project / "flow.yaml"]).ok


def test_running_the_starter_project_tests_from_pytest(tmp_path):
    # what docs/testing-flows.md shows for pytest
    shutil.copytree(ROOT / "engine" / "starter", tmp_path / "p")
    report = Engine().test([tmp_path / "p"])
    assert report.ok, report.text()
    assert report.count("passed") == 3
    assert textwrap.dedent(report.text()).endswith(report.summary())


def test_a_folder_is_searched_except_hidden_folders_and_installed_packages(tmp_path):
    project = make_project(tmp_path)
    for folder in (".venv/lib/python3.11/site-packages/x", "node_modules/y"):
        (project / folder).mkdir(parents=True)
        (project / folder / "broken.test.yaml").write_text("not: [a test file\n")
    report = Engine().test([project])
    assert [f.file for f in report.files] == [str(project / "flow.test.yaml")]
    assert report.ok
