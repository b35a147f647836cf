"""Two ``flowyard serve`` processes on one PostgreSQL state, as behind one load balancer:
each takes deliveries into the one inbox they share, and every event is processed once,
also when the process working on the inbox is killed and the other takes over (the
inbox's unique event ids and claims, the flow's lease, the idempotency keys;
engine/store/pg_inbox.py)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from engine.store.postgres import PostgresStore
from tests.support.serving import Serving
from tests.support.target import read_applied, spawn_target, stop_target
from tests.test_serve import PATH, SECRET, applied_orders, delivery, flow_with, wait_for

EVENTS = 120
FLOW = "shop_orders"


@pytest.fixture
def slow_erp(tmp_path):
    """A target that takes 20 ms per request: the inbox is worked on for a few seconds."""
    proc, url = spawn_target(tmp_path / "erp", latency_ms=20)
    yield url, tmp_path / "erp"
    stop_target(proc)


def test_two_serve_processes_share_one_inbox_and_process_each_event_once(
    tmp_path, slow_erp, postgres_state
):
    url, erp_dir = slow_erp
    flow = flow_with(tmp_path, url)
    env = {"SHOP_WEBHOOK_SECRET": SECRET}
    with (
        Serving(tmp_path, [flow], env=env, state=postgres_state) as a,
        Serving(tmp_path, [flow], env=env, state=postgres_state) as b,
        PostgresStore(postgres_state) as store,
    ):
        answers: Counter[str] = Counter()
        for n in range(1, EVENTS + 1):
            body, headers = delivery(n)
            first, second = (a, b) if n % 2 else (b, a)  # the balancer alternates
            answers[first.deliver(body, headers, PATH).json()["status"]] += 1
            if n % 10 == 0:  # the platform delivers it again, to the other process
                answers[second.deliver(body, headers, PATH).json()["status"]] += 1
        assert answers == {"accepted": EVENTS, "duplicate": EVENTS // 10}

        # the process working on the inbox is killed mid-way; the other takes over
        wait_for(lambda: len(read_applied(erp_dir)) >= 20, timeout=30)
        lease = store.lease(FLOW)
        assert lease is not None and a.proc is not None and b.proc is not None
        victim, survivor = (a, b) if lease.pid == a.proc.pid else (b, a)
        assert lease.pid == victim.proc.pid  # type: ignore[union-attr]
        victim.kill()
        wait_for(lambda: len(read_applied(erp_dir)) >= EVENTS, timeout=60)
        wait_for(lambda: store.inbox_depth(FLOW) == {}, timeout=30)
        time.sleep(1.0)  # anything processed twice would have come by now
        assert survivor.proc is not None and survivor.proc.poll() is None

        events = store.inbox_events(FLOW, limit=1000)
        traces = list(store.traces_since(None, FLOW))
        runs = store.list_runs(FLOW, 1000)
    applied = Counter(applied_orders(erp_dir))
    assert len(applied) == EVENTS and set(applied.values()) == {1}
    assert len(events) == EVENTS and {e.status for e in events} == {"done"}
    again = EVENTS // 10
    assert sorted(e.deliveries for e in events) == [1] * (EVENTS - again) + [2] * again
    # one final state per event: what the killed process had committed stays, what it had
    # not is done by the other (a send it made is then a duplicate, not sent again)
    assert Counter(t.record_key for t in traces) == Counter(
        {key: 1 for key in {t.record_key for t in traces}}
    )
    assert len(traces) == EVENTS and {t.outcome for t in traces} <= {"done", "skipped"}
    holders = {r.holder for r in runs}
    assert {r.kind for r in runs} == {"webhook"} and len(holders) == 2  # both worked on it
