"""The work queue of a PostgreSQL state, as workers use it: queued once by the lease holder
with the cursor, claimed by one worker each, one key at a time in order, and taken over
when a worker's heartbeat stops."""

from __future__ import annotations

import threading
import time

import pytest

from engine.store import Progress, QueuedRecord
from engine.store.postgres import PostgresStore

FLOW = "stock"


def queued(*keys: str) -> list[QueuedRecord]:
    return [QueuedRecord(key, {"data": {"sku": key, "n": n}}) for n, key in enumerate(keys)]


@pytest.fixture
def store(postgres_state):
    with PostgresStore(postgres_state) as store:
        yield store


def test_only_the_lease_holder_queues_and_the_cursor_moves_with_its_records(store):
    assert store.enqueue(FLOW, "feeder-1", queued("A"), cursor=1) is False  # no lease
    assert store.queue_depth(FLOW) == 0 and store.cursor(FLOW) is None
    store.acquire_lease(FLOW, "feeder-1", 60)
    assert store.enqueue(FLOW, "feeder-1", queued("A", "B"), cursor=2, at_end=True) is True
    assert store.queue_depth(FLOW) == 2 and store.cursor(FLOW).position == 2
    assert store.read_to_end(FLOW) is not None
    assert store.enqueue(FLOW, "feeder-2", queued("C"), cursor=3) is False  # not its lease
    assert store.queue_depth(FLOW) == 2 and store.cursor(FLOW).position == 2


def test_a_keys_next_record_waits_until_its_last_one_is_final(store):
    store.acquire_lease(FLOW, "feeder", 60)
    store.enqueue(FLOW, "feeder", queued("A", "B", "A", "C", "A"), cursor=None)
    store.join_workers(FLOW, "w1", "run-1", 60)
    first = store.claim_work(FLOW, "w1", 10, 60)
    assert [(c.record_key, c.item["data"]["n"]) for c in first] == [("A", 0), ("B", 1), ("C", 3)]
    assert store.claim_work(FLOW, "w1", 10, 60) == []  # A's second waits for its first
    store.commit_progress(FLOW, Progress("run-1", work_done=[first[0].id]))
    [second] = store.claim_work(FLOW, "w1", 10, 60)
    assert (second.record_key, second.item["data"]["n"]) == ("A", 2)
    assert store.queue_depth(FLOW) == 4  # claimed records wait in the queue until final


def test_workers_claiming_at_once_never_get_the_same_record(store, postgres_state):
    store.acquire_lease(FLOW, "feeder", 60)
    store.enqueue(FLOW, "feeder", queued(*(f"K{i}" for i in range(200))), cursor=None)
    got: dict[str, list[int]] = {}

    def work(name: str) -> None:
        with PostgresStore(postgres_state) as mine:  # a process of its own, as it were
            mine.join_workers(FLOW, name, f"run-{name}", 60)
            got[name] = []
            while claimed := mine.claim_work(FLOW, name, 7, 60):
                got[name] += [c.id for c in claimed]

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in got.values() for i in ids]
    assert len(every) == 200 and len(set(every)) == 200  # each record claimed exactly once


def test_a_worker_whose_heartbeat_stopped_is_let_go_and_its_records_taken_over(store):
    store.acquire_lease(FLOW, "feeder", 60)
    store.enqueue(FLOW, "feeder", queued("A", "B"), cursor=None)
    store.start_run("run-1", FLOW, kind="worker")
    store.join_workers(FLOW, "w1", "run-1", 0.2)
    assert len(store.claim_work(FLOW, "w1", 10, 0.2)) == 2
    store.join_workers(FLOW, "w2", "run-2", 60)
    assert store.claim_work(FLOW, "w2", 10, 60) == []  # w1 holds them while it beats
    assert store.heartbeat(FLOW, "w1", 0.2) is True
    time.sleep(0.3)  # w1 missed its beat
    taken = store.claim_work(FLOW, "w2", 10, 60)
    assert sorted(c.record_key for c in taken) == ["A", "B"]
    assert store.get_run("run-1").status == "crashed"
    assert store.heartbeat(FLOW, "w1", 0.2) is False  # it learns it was let go, and stops
    assert store.leave_workers(FLOW, "w2") == 2  # a worker that ends gives its claims back
