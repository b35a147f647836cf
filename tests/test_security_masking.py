"""Masking, tested as the leaks of issue 11: secrets in the forms they travel in.

A target that echoes every request back (``{"echo": ...}`` in tests/support/target.py)
puts the credentials into answers, and so into the state, the traces, the dead letters
and the run log. None of those may hold a secret, raw or encoded: base64 (Basic auth's
``user:secret``), URL-encoded (a query parameter), JSON-escaped (an answer stored as
text), nor a token a connector received during the run.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus

import httpx

from connectors import Connector, Request, Response
from engine import Engine
from engine.runlog import RunLog, encoded_forms
from tests.conftest import invoke, write_flow, write_ndjson

PASSWORD = 'p@ss"wö/rd 1+x'  # an @, a quote, a non-ASCII letter, a slash, a space, a plus
QUERY_KEY = "qk-9d4e+b/1 z"


def forms(secret: str, user: str = "shop") -> dict[str, str]:
    """The ways ``secret`` leaked in the probe, computed here independently of the engine."""
    return {
        "raw": secret,
        "basic": base64.b64encode(f"{user}:{secret}".encode()).decode(),
        "base64": base64.b64encode(secret.encode()).decode(),
        "url": quote(secret, safe=""),
        "url+": quote_plus(secret),
        "json": json.dumps(secret)[1:-1],
        "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
        "json-text-in-json": json.dumps(json.dumps(secret))[1:-1],
    }


def leaks(text: str, *secrets: str) -> list[str]:
    found = []
    for secret in secrets:
        for name, form in forms(secret).items():
            if name == "basic":
                # the credential's core: what depends on the secret, whatever the user name
                form = form[8:-4]
            if form in text:
                found.append(f"{secret!r} as {name}")
    return found


# -- the redactor on its own ---------------------------------------------------------------


def test_every_encoded_form_is_masked_and_ordinary_text_is_not():
    log = RunLog("r", "f", secrets=[PASSWORD])
    for user in ("a", "ab", "abc", "shop-berlin"):
        header = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        assert leaks(log.redact(header), PASSWORD) == [], user
    text = " | ".join(forms(PASSWORD).values())
    masked = log.redact({"answer": [text, ("PHP: " + json.dumps(PASSWORD).replace("/", "\\/"))]})
    assert leaks(json.dumps(masked), PASSWORD) == []
    assert "\\/" not in masked["answer"][1]
    assert log.redact("order 1042 for jane@example.com, 19.90 EUR") == (
        "order 1042 for jane@example.com, 19.90 EUR"
    )


def test_the_redactor_learns_secrets_during_a_run():
    log = RunLog("r", "f")
    assert log.redact({"token": "tok-5e1f0a"}) == {"token": "tok-5e1f0a"}
    log.redact.add("tok-5e1f0a")
    assert log.redact({"token": "Session tok-5e1f0a"}) == {"token": "Session ***"}
    assert "tok-5e1f0a" in encoded_forms("tok-5e1f0a")


# -- a run against an echoing target -------------------------------------------------------

FLOW = """
flow: masked
connections:
  shop:
    connector: http
    base_url: "{{ vars.url }}/api"
    auth: {type: basic, username: shop, password: "${env:SHOP_PASSWORD}"}
    retry: {attempts: 2, backoff: 0.01}
  out: {connector: file, base_dir: out}
source: {connector: file, path: orders.ndjson}
steps:
  - name: look_up
    enrich:
      connection: shop
      method: GET
      path: /customers
      params: {key: "${env:SHOP_QUERY_KEY}", id: "{{ record.id }}"}
      save_as: customer
  - name: post
    send:
      connection: shop
      path: /orders
      body: {id: "{{ record.id }}", note: "${env:SHOP_PASSWORD}"}
      save_as: answer
  - name: keep
    send:
      connection: out
      path: answers.ndjson
      record: "{{ record }}"
"""


def test_no_secret_reaches_the_state_traces_dead_letters_or_run_log(tmp_path, target):
    target.script(
        [
            {"echo": "text", "method": "GET", "times": 2},  # stored as text: JSON-escaped
            {"echo": "json", "method": "POST"},  # stored decoded
            {"echo": "json", "method": "POST", "status": 422},  # a refusal quoting it all
        ]
    )
    flow = write_flow(tmp_path, FLOW)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": 1}, {"id": 2}])
    env = {"SHOP_PASSWORD": PASSWORD, "SHOP_QUERY_KEY": QUERY_KEY}
    state = tmp_path / "state.db"
    run = invoke(
        "run", flow, "--state", state, "--var", f"url={target.url}", "--log-stderr", env=env
    )
    assert run.returncode == 1, run.stderr  # order 2 was refused
    # the target did receive the credentials: the test would prove nothing otherwise
    received = json.dumps(target.requests)
    assert leaks(received, PASSWORD), "the target never saw the password"
    assert f"key={quote_plus(QUERY_KEY)}" in received or quote(QUERY_KEY, safe="") in received

    shown = [
        run.stdout + run.stderr,
        invoke("trace", "1", "--state", state).stdout,
        invoke("trace", "2", "--state", state, "--output", "json").stdout,
        invoke("dlq", "list", "--state", state, "--output", "json").stdout,
        invoke("dlq", "show", "1", "--state", state).stdout,
    ]
    assert "Basic" in shown[1] and "422" in shown[4]  # the echoes are there, masked
    stored = state.read_bytes().decode("utf-8", "replace")
    logs = "".join(p.read_text() for p in (tmp_path / "runs").glob("*.jsonl"))
    for where, text in [("state", stored), ("run log", logs), ("output", "".join(shown))]:
        assert leaks(text, PASSWORD, QUERY_KEY) == [], where
    # a send delivers the record as it is: masking is for what flowyard shows and keeps
    delivered = json.loads((tmp_path / "out" / "answers.ndjson").read_text())
    assert json.loads(delivered["answer"]["body"])["note"] == PASSWORD


# -- a token received during the run -------------------------------------------------------


class SessionConnector(Connector):
    """Logs in on first use and sends the session token it gets with each call (like Tryton)."""

    name = "session"
    description = "test: a target with a login"
    options_schema: ClassVar[dict] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"url": {"type": "string", "description": "the target"}},
    }
    call_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {"id": {"description": "the record's id"}},
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.token: str | None = None

    def call(self, request: Request) -> Response:
        with httpx.Client(base_url=self.options["url"]) as client:
            if self.token is None:
                answer = client.post("/login", json={"user": "sync"}).json()
                self.token = self.declare_secret(answer["received"]["user"] + "-s3ss10n-4a7b")
            answer = client.post(
                "/echo", json=request.options, headers={"Authorization": f"Session {self.token}"}
            )
        return Response(body=answer.json(), status=answer.status_code)


SESSION_FLOW = """
flow: session
connections:
  erp: {connector: session, url: "{{ vars.url }}"}
source: {connector: file, path: none.ndjson}
steps:
  - name: post
    send: {connection: erp, id: "{{ record.id }}", save_as: answer}
"""


def test_a_token_a_connector_declares_at_run_time_is_masked(tmp_path, target):
    target.script([{"echo": "json", "path": "/echo", "times": 3}])
    eng = Engine(state=tmp_path / "state.db")
    eng.register_connector("session", SessionConnector)
    flow = eng.load(write_flow(tmp_path, SESSION_FLOW))
    result = eng.run(flow, vars={"url": target.url}, records=[{"id": n} for n in (1, 2, 3)])
    assert result.counts["done"] == 3
    token = "sync-s3ss10n-4a7b"
    assert token in json.dumps(target.requests)  # it was sent
    stored = (tmp_path / "state.db").read_bytes().decode("utf-8", "replace")
    assert "Session ***" in stored
    assert token not in stored
    assert not leaks(stored, token)


SOURCE_FLOW = """
flow: key_in_path
connections:
  shop:
    connector: http
    base_url: "{{ vars.url }}/bot${env:SHOP_BOT_TOKEN}"
source: {connection: shop, path: /orders}
steps:
  - filter: "true"
"""


def test_a_secret_in_a_url_path_is_masked_in_the_message_of_a_failed_run(
    tmp_path, target, monkeypatch
):
    monkeypatch.setenv("SHOP_BOT_TOKEN", "77310:AAH-bot-secret")
    target.script({"status": 404})
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(eng.load(write_flow(tmp_path, SOURCE_FLOW)), vars={"url": target.url})
    assert result.status == "failed" and "/bot***/orders" in result.message
    store = eng.store()
    stored = store.get_run(result.run_id)
    store.close()
    assert "AAH-bot-secret" not in json.dumps(stored.to_dict()) and "***" in stored.message
