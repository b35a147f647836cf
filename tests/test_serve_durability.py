"""Durability under load: a real load client (wrk, with a Lua script) sends 20,000 signed
deliveries, some of them duplicates, while ``flowyard serve`` is killed with SIGKILL ten
times and started again; like a platform, the client delivers again what was not
acknowledged. Every acknowledged event reaches the target exactly once (the target records
each request it applied, fsynced before it answers), and a duplicate delivery is never sent
on.

Where wrk is missing, the test installs it (``apt-get install -y wrk``, when it runs as
root on a machine with apt-get: tests/support/system.py); when it cannot, the test is
skipped and says why (a client of our own would prove less than a real load client)."""

from __future__ import annotations

import collections
import random
import subprocess
import sys
import threading
import time
from contextlib import closing

import pytest

from engine.store import InboxEvent, SqliteStore
from tests.support.files import write_flow
from tests.support.serving import Serving
from tests.support.system import program
from tests.support.target import RemoteTarget, read_applied, spawn_target, stop_target
from tests.support.webhook_load import (
    answer_statuses,
    make_deliveries,
    send_with_wrk,
)

SECRET = "shpss_durability_secret"
EVENTS = 20_000
KILLS = 10

FLOW = """
flow: shop_orders
vars: {erp_url: "URL"}
concurrency: 8
source:
  webhook: {scheme: shopify, secret: "${env:SHOP_WEBHOOK_SECRET}", topics: [orders/create]}
  key: "{{ record.id }}"
connections:
  erp:
    connector: http
    base_url: "{{ vars.erp_url }}"
    timeout: 10
    retry: {attempts: 8, backoff: 0.05, max_backoff: 0.5}
steps:
  - name: to_erp
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{ record.id }}"
      body:
        event: "{{ record.event }}"
        order: "{{ record.name }}"
        total: "{{ record.total_price }}"
"""


@pytest.mark.slow
def test_every_acknowledged_event_is_applied_once_across_ten_sigkills(tmp_path, capsys):
    wrk = program("wrk", package="wrk")  # installed where it may be, else skipped
    deliveries = make_deliveries(EVENTS, duplicates=0.1, secret=SECRET)
    assert len(deliveries) == EVENTS and len({d.event_id for d in deliveries}) == 18_000
    erp_proc, erp_url = spawn_target(tmp_path / "erp")
    flow = write_flow(tmp_path, FLOW.replace("URL", erp_url))
    srv = Serving(tmp_path, [flow], env={"SHOP_WEBHOOK_SECRET": SECRET})
    try:
        srv.start()
        url = srv.url + "/webhooks/shop_orders"
        result: dict = {}

        def load() -> None:
            result["acks"], result["report"] = send_with_wrk(
                url, deliveries, tmp_path / "wrk", wrk=wrk, connections=16, delay_ms=25
            )

        sender = threading.Thread(target=load)
        sender.start()
        rng = random.Random(17)
        kills = 0
        while kills < KILLS and sender.is_alive():
            time.sleep(rng.uniform(1.0, 2.5))
            if not sender.is_alive():
                break  # every kill comes while the load is going
            srv.kill()
            kills += 1
            srv.start()
        sender.join(timeout=600)
        assert kills == KILLS, f"the load ended after {kills} kills"
        acks = result["acks"]
        acked = {event for event, _ in acks}
        with capsys.disabled():
            states = collections.Counter(state for _, state in acks)
            print(f"\n[durability] {len(acks)} acknowledged ({dict(states)}), {kills} SIGKILLs")
            print(f"[durability] answers by status: {answer_statuses(tmp_path / 'wrk')}")
        # the client sends again what no answer acknowledged, as a platform retries
        assert acked == {d.event_id for d in deliveries}

        def applied_events() -> list[str]:
            return [a["body"]["event"] for a in read_applied(tmp_path / "erp")]

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not acked <= set(applied_events()):
            time.sleep(0.5)
        time.sleep(2.0)  # anything more that would arrive, would arrive now
        assert srv.stop() == 0
        applied = collections.Counter(applied_events())
        missing = acked - set(applied)
        assert not missing, f"{len(missing)} acknowledged events never applied"
        twice = {event: n for event, n in applied.items() if n > 1}
        assert not twice, f"applied more than once: {list(twice.items())[:5]}"
        with closing(SqliteStore(srv.state)) as store:
            assert store.inbox_depth() == {}
            kept = store.inbox_events(limit=EVENTS)
        assert {e.event_id for e in kept} >= acked
        # duplicates are not sent on: the target saw one request per event, except the few
        # that were in flight when a kill came (repeated under the same Idempotency-Key, and
        # answered from the target's memory, not applied again)
        requests = RemoteTarget(erp_url).requests
        per_key = collections.Counter(r["idempotency_key"] for r in requests)
        repeated = sum(n - 1 for n in per_key.values())
        assert repeated <= KILLS * 8, repeated
        assert all(r["outcome"] in ("applied", "replayed") for r in requests), collections.Counter(
            r["outcome"] for r in requests
        )
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill()
        stop_target(erp_proc)


def _count_elsewhere(state) -> int:
    """The inbox's events as another process sees them (its one connection then closed)."""
    code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    code += "print(c.execute('SELECT count(*) FROM inbox').fetchone()[0]); c.close()"
    done = subprocess.run(
        [sys.executable, "-c", code, str(state)], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_a_store_opened_beside_another_in_one_process_leaves_the_commits_durable(tmp_path):
    # flowyard serve keeps one store open and each run opens another on the same file;
    # reading the file's header for that must not drop the process's locks, or another
    # process (flowyard trace, a scrape) closing its connection deletes the write-ahead
    # log under serve, and what serve commits afterwards is gone
    state = tmp_path / "state.db"

    def event(n: int) -> InboxEvent:
        return InboxEvent(f"ev-{n}", b"{}", "orders/create", "shopify", {}, 1.0)

    with closing(SqliteStore(state)) as serving:
        serving.add_to_inbox([("shop_orders", event(1))])
        SqliteStore(state).close()  # a run's store, opened and closed
        assert _count_elsewhere(state) == 1
        serving.add_to_inbox([("shop_orders", event(2))])
        assert _count_elsewhere(state) == 2
        assert (tmp_path / "state.db-wal").exists()
