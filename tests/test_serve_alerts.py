"""Alerts from ``flowyard serve``: a dead letter, a review item, a failed run and an overdue
flow reach a local chat-webhook server and a local SMTP server, batched, rate-limited and
with nothing secret in them."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from engine.serve.alerts import Alerts
from engine.serve.signatures import sign
from tests.support.files import write_flow
from tests.support.serving import Serving, free_port
from tests.support.target import RemoteTarget, spawn_target, stop_target

SECRET = "shpss_alert_test_secret"
ERP_TOKEN = "erp-T0KEN-never-shown"
ALERT_TOKEN = "T0KEN-in-the-alert-url"
SMTP_PASSWORD = "smtp-pa55word-never-shown"

FLOW = """
flow: shop_orders
vars: {erp_url: "URL"}
source:
  webhook: {scheme: shopify, secret: "${env:SHOP_WEBHOOK_SECRET}"}
  key: "{{ record.id }}"
connections:
  erp:
    connector: http
    base_url: "{{ vars.erp_url }}"
    auth: {type: bearer, token: "${env:ERP_TOKEN}"}
    retry: {attempts: 1}
steps:
  - route:
      - when: record.financial_status != 'paid'
        steps:
          - name: not_paid
            review: "order {{ record.name }} is {{ record.financial_status }}: not charged yet"
      - otherwise:
          - name: to_erp
            send:
              connection: erp
              method: POST
              path: /orders
              body: {order: "{{ record.name }}"}
"""


class ChatHook:
    """A local incoming-webhook server that keeps what is POSTed to it."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append({"path": self.path, "json": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/{ALERT_TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope.content.decode("utf-8", errors="replace"))
        return "250 OK"


@pytest.fixture
def chat():
    hook = ChatHook()
    yield hook
    hook.close()


@pytest.fixture
def mailbox():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("not within the time")


def test_dead_letters_and_review_items_are_alerted_by_chat_and_mail_with_no_secret(
    tmp_path, chat, mailbox
):
    box, smtp_port = mailbox
    erp_proc, erp_url = spawn_target(tmp_path / "erp")
    try:
        # the ERP refuses the order and echoes the token it was sent: the alert must not
        RemoteTarget(erp_url).script([{"status": 422, "body": {"error": f"bad {ERP_TOKEN}"}}])
        flow = write_flow(tmp_path, FLOW.replace("URL", erp_url))
        env = {
            "SHOP_WEBHOOK_SECRET": SECRET,
            "ERP_TOKEN": ERP_TOKEN,
            "FLOWYARD_ALERT_URL": chat.url,
            "FLOWYARD_SMTP_PASSWORD": SMTP_PASSWORD,
        }
        args = [
            "--alert-email",
            "ops@example.com",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            str(smtp_port),
            "--alert-batch",
            "0.5",
            "--alert-interval",
            "3",
        ]
        with Serving(tmp_path, [flow], env=env, args=args) as srv:
            for n, status in ((1, "paid"), (2, "pending"), (3, "paid")):
                body = json.dumps(
                    {"id": 900 + n, "name": f"#{n}", "financial_status": status}
                ).encode()
                srv.deliver(
                    body,
                    sign("shopify", SECRET, body, event_id=f"e{n}", topic="orders/create"),
                    "/webhooks/shop_orders",
                )
            wait_for(lambda: chat.posts and box.messages)
            first_post_at = time.monotonic()
            time.sleep(1.0)
            # rate-limited: nothing more within the interval, though more may be pending
            assert len(chat.posts) == 1 and len(box.messages) == 1
            assert srv.stop() == 0
        text = chat.posts[0]["json"]["text"]
        assert set(chat.posts[0]["json"]) == {"text"}  # the common incoming-webhook format
        assert "dead letter" in text and "review item" in text and "shop_orders" in text
        assert "record 901 dead-lettered at step to_erp" in text
        assert "record 902 held for review" in text and "not charged yet" in text
        mail = box.messages[0]
        assert "Subject: flowyard:" in mail and "To: ops@example.com" in mail
        assert "record 901 dead-lettered" in mail
        posted = [p["json"] for p in chat.posts]
        everything = json.dumps(posted) + "".join(box.messages) + srv.output()
        for secret in (ERP_TOKEN, ALERT_TOKEN, SMTP_PASSWORD, SECRET):
            assert secret not in everything, secret
        assert time.monotonic() - first_post_at < 10
    finally:
        stop_target(erp_proc)


def test_alerts_are_batched_rate_limited_and_overdue_flows_are_told_once():
    now = [1000.0]
    sent: list[tuple[str, str]] = []

    class Channel:
        name = "test"

        def send(self, subject: str, text: str) -> None:
            sent.append((subject, text))

    alerts = Alerts(
        [Channel()],
        secrets={"s3cret-value"},
        batch_seconds=10,
        min_interval=60,
        clock=lambda: now[0],
    )
    alerts.add("run_failed", "a", "run r1 failed: token s3cret-value refused")
    alerts.flush()
    assert sent == []  # gathered for the batch time first
    now[0] += 10
    alerts.add("dead_letter", "b", "record 1 dead-lettered")
    alerts.flush()
    assert len(sent) == 1 and "1 dead letter, 1 failed run" in sent[0][0]
    assert "s3cret-value" not in sent[0][1] and "***" in sent[0][1]
    for n in range(30):
        alerts.add("dead_letter", "b", f"record {n} dead-lettered")
    now[0] += 30
    alerts.flush()
    assert len(sent) == 1  # within the interval: waits
    now[0] += 30
    alerts.flush()
    assert len(sent) == 2 and "30 dead letters" in sent[1][0] and "and 10 more" in sent[1][1]
    # a flow quiet for longer than it should be: told once, and again after it recovered
    alerts.check_overdue([("quiet", 3600.0, None, now[0] - 7200)])
    alerts.check_overdue([("quiet", 3600.0, None, now[0] - 7200)])
    now[0] += 60
    alerts.flush()
    assert "1 overdue flow" in sent[2][0] and sent[2][1].count("no completed run") == 1
