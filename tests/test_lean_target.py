"""The benchmarks' lean HTTP target (tests/support/lean_target.py): a real server on
127.0.0.1 that applies each write once per Idempotency-Key, after its latency."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.target import RemoteTarget, stop_target

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def lean() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.lean_target", "--port", "0", "--latency-ms", "20"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    assert ready[:1] == ["READY"], ready
    try:
        yield ready[1]
    finally:
        stop_target(proc)


def test_a_write_is_applied_once_per_key_and_answered_after_the_latency(lean):
    body = {"order_id": "A-1", "total": 12.5, "lines": [{"sku": "TEE", "qty": 2}]}
    key = {"Idempotency-Key": '"sales_order:A-1"'}
    with httpx.Client(base_url=lean, timeout=5) as client:
        started = time.perf_counter()
        first = client.post("/orders", json=body, headers=key)
        took = time.perf_counter() - started
        again = client.post("/orders", json=body, headers=key)
        other = client.post("/orders", json={**body, "total": 13}, headers=key)
        bad = client.post("/orders", content=b"{not json", headers={"Idempotency-Key": "b"})
        missing = client.get("/orders/1")
    assert first.status_code == 201 and took >= 0.02
    assert first.json() == {"id": 1, "received": body, "path": "/orders"}
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422
    assert bad.status_code == 400
    assert missing.status_code == 404
    applied = RemoteTarget(lean).applied
    assert [(a["idempotency_key"], json.loads(a["body"])) for a in applied] == [
        ("sales_order:A-1", body)
    ]


def test_a_key_repeated_while_its_first_request_waits_is_refused(lean):
    key = {"Idempotency-Key": "k-1"}
    answers: list[int] = []
    with httpx.Client(base_url=lean, timeout=5) as one, httpx.Client(base_url=lean) as two:
        first = threading.Thread(
            target=lambda: answers.append(
                one.post("/orders", json={"n": 1}, headers=key).status_code
            )
        )
        first.start()
        time.sleep(0.005)  # the first waits out its 20 ms, its key in progress
        during = two.post("/orders", json={"n": 1}, headers=key)
        first.join()
    # whichever reached the server first was applied; the other found its key in progress
    assert sorted([during.status_code, *answers]) == [201, 409]
    assert RemoteTarget(lean)._call("GET", "stats") == {"most_at_once": 2}


def test_reset_forgets_what_was_applied(lean):
    remote = RemoteTarget(lean)
    with httpx.Client(base_url=lean, timeout=5) as client:
        client.post("/orders", json={"n": 1}, headers={"Idempotency-Key": "k"})
        assert len(remote.applied) == 1 and remote.health()
        remote.reset()
        assert remote.applied == []
        assert (
            client.post("/orders", json={"n": 1}, headers={"Idempotency-Key": "k"}).json()["id"]
            == 1
        )
