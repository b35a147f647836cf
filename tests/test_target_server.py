"""The test target server itself behaves as documented (real sockets, real httpx client)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

try:
    from tests.support.target import (
        RemoteTarget,
        Target,
        read_applied,
        spawn_target,
        stop_target,
    )
except ModuleNotFoundError:  # pytest started without the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.target import (
        RemoteTarget,
        Target,
        read_applied,
        spawn_target,
        stop_target,
    )


@pytest.fixture
def target(tmp_path):
    with Target(state_dir=tmp_path) as t:
        yield t


@pytest.fixture
def client():
    with httpx.Client(timeout=5.0, trust_env=False) as c:
        yield c


def test_post_is_applied_with_sequential_ids(target, client, tmp_path):
    r1 = client.post(target.url + "/orders", json={"order_id": 1})
    r2 = client.put(target.url + "/orders/2", json={"order_id": 2})
    r3 = client.patch(target.url + "/orders/2", json={"qty": 3})
    assert (r1.status_code, r2.status_code, r3.status_code) == (201, 200, 200)
    assert r1.json() == {"id": 1, "received": {"order_id": 1}, "path": "/orders"}
    assert r2.json()["id"] == 2 and r3.json() == {
        "id": 3,
        "received": {"qty": 3},
        "path": "/orders/2",
    }
    applied = target.applied
    assert [a["method"] for a in applied] == ["POST", "PUT", "PATCH"]
    assert applied[0]["body"] == {"order_id": 1} and applied[0]["idempotency_key"] is None
    assert read_applied(tmp_path) == applied
    assert [r["outcome"] for r in target.requests] == ["applied"] * 3


def test_invalid_json_is_refused_and_not_applied(target, client):
    r = client.post(target.url + "/orders", content=b"{nope", headers={"Content-Type": "x"})
    assert r.status_code == 400
    assert target.applied == []
    assert target.requests[0]["outcome"] == "invalid_json"


def test_get_fixture_with_headers_and_default_404(target, client):
    nxt = f'<{target.url}/orders?page=2>; rel="next"'
    target.set_get("/orders", [{"order_id": 1}], headers={"Link": nxt})
    target.set_get("/orders?page=2", {"items": [{"order_id": 2}], "next_cursor": None})
    r = client.get(target.url + "/orders")
    assert r.status_code == 200 and r.json() == [{"order_id": 1}]
    assert r.links["next"]["url"] == f"{target.url}/orders?page=2"
    assert client.get(r.links["next"]["url"]).json()["items"] == [{"order_id": 2}]
    assert client.get(target.url + "/nothing").status_code == 404
    assert target.applied == []


def test_idempotency_replay_and_mismatch(target, client):
    url = target.url + "/orders"
    h = {"Idempotency-Key": '"order:1"'}
    first = client.post(url, json={"a": 1}, headers=h)
    again = client.post(url, json={"a": 1}, headers={"Idempotency-Key": "order:1"})
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    other = client.post(url, json={"a": 2}, headers=h)
    assert other.status_code == 422
    assert len(target.applied) == 1 and target.applied[0]["idempotency_key"] == "order:1"
    assert [r["outcome"] for r in target.requests] == ["applied", "replayed", "mismatch_422"]


def test_idempotency_conflict_while_in_progress(target, client):
    target.script([{"delay": 0.5}])
    url, h = target.url + "/orders", {"Idempotency-Key": "k1"}
    results = {}
    th = threading.Thread(
        target=lambda: results.setdefault("first", client.post(url, json={"a": 1}, headers=h))
    )
    th.start()
    time.sleep(0.2)
    with httpx.Client(timeout=5, trust_env=False) as c2:
        dup = c2.post(url, json={"a": 1}, headers=h)
    th.join()
    assert dup.status_code == 409
    assert results["first"].status_code == 201
    assert len(target.applied) == 1
    # after completion the repeat is a replay
    assert client.post(url, json={"a": 1}, headers=h).headers["Idempotent-Replayed"] == "true"


def test_ignore_idempotency_key_applies_every_request(tmp_path, client):
    with Target(ignore_idempotency_key=True) as t:
        for _ in range(3):
            r = client.post(t.url + "/x", json={"a": 1}, headers={"Idempotency-Key": "same"})
            assert r.status_code == 201 and "idempotent-replayed" not in r.headers
        assert [a["id"] for a in t.applied] == [1, 2, 3]


def test_require_idempotency_key(client):
    with Target(require_idempotency_key=True) as t:
        assert client.post(t.url + "/x", json={}).status_code == 400
        assert client.post(t.url + "/x", json={}, headers={"Idempotency-Key": "k"}).is_success
        assert len(t.applied) == 1


def test_scripted_statuses_are_consumed_in_order(target, client):
    target.script(
        [
            {"status": 503},
            {"status": 429, "retry_after": 2},
            {"status": 400, "body": {"error": "bad sku"}},
        ]
    )
    url, h = target.url + "/orders", {"Idempotency-Key": "k"}
    r1 = client.post(url, json={"a": 1}, headers=h)
    r2 = client.post(url, json={"a": 1}, headers=h)
    r3 = client.post(url, json={"a": 1}, headers=h)
    r4 = client.post(url, json={"a": 1}, headers=h)
    assert r1.status_code == 503
    assert r2.status_code == 429 and r2.headers["Retry-After"] == "2"
    assert r3.status_code == 400 and r3.json() == {"error": "bad sku"}
    # faults before processing store nothing for the key: the retry is applied, once
    assert r4.status_code == 201 and "idempotent-replayed" not in r4.headers
    assert len(target.applied) == 1
    assert target.pending_script == []


def test_path_and_method_specific_script_and_times(target, client):
    target.script(
        [{"path": "/orders", "status": 500, "times": 2}, {"method": "GET", "status": 502}]
    )
    assert client.post(target.url + "/stock", json={}).status_code == 201
    assert client.get(target.url + "/stock").status_code == 502
    assert client.post(target.url + "/orders", json={}).status_code == 500
    assert client.post(target.url + "/orders", json={}).status_code == 500
    assert client.post(target.url + "/orders", json={}).status_code == 201


def test_unknown_behaviour_key_is_rejected(target):
    with pytest.raises(ValueError, match="unknown behaviour"):
        target.script([{"stauts": 503}])


def test_delay_and_latency(tmp_path, client):
    with Target(latency_ms=50) as t:
        t.script([{"delay": 0.3}])
        t0 = time.monotonic()
        assert client.post(t.url + "/x", json={}).status_code == 201
        slow = time.monotonic() - t0
        t0 = time.monotonic()
        assert client.post(t.url + "/x", json={}).status_code == 201
        normal = time.monotonic() - t0
    assert slow >= 0.34
    assert 0.045 <= normal < 0.3


def test_delay_longer_than_client_timeout_still_applies(target, client):
    target.script([{"delay": 0.4}])
    with pytest.raises(httpx.ReadTimeout):
        client.post(target.url + "/x", json={"a": 1}, timeout=0.1)
    deadline = time.monotonic() + 2
    while not target.applied and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(target.applied) == 1


def test_hang_never_answers_and_releases_when_client_gives_up(target, client):
    target.script([{"hang": True}])
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post(target.url + "/x", json={}, timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    assert target.applied == []
    assert target.requests[0]["outcome"] == "hung"
    # the server goes on answering normally
    assert client.post(target.url + "/x", json={}).status_code == 201


def test_drop_without_apply(target, client):
    target.script([{"drop": True}])
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(target.url + "/x", json={"a": 1}, headers={"Idempotency-Key": "k"})
    assert target.applied == []
    r = client.post(target.url + "/x", json={"a": 1}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


def test_drop_after_apply_then_retry_is_replayed(target, client, tmp_path):
    target.script([{"drop_after_apply": True}])
    url, h = target.url + "/orders", {"Idempotency-Key": "order:7"}
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(url, json={"order_id": 7}, headers=h)
    # applied and on disk although the client never got an answer
    assert [a["body"] for a in read_applied(tmp_path)] == [{"order_id": 7}]
    r = client.post(url, json={"order_id": 7}, headers=h)
    assert r.status_code == 201 and r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["id"] == 1
    assert len(target.applied) == 1
    assert [x["outcome"] for x in target.requests] == ["applied_dropped", "replayed"]


def test_status_after_apply(target, client):
    target.script([{"status": 502, "after_apply": True}])
    h = {"Idempotency-Key": "k"}
    assert client.post(target.url + "/x", json={}, headers=h).status_code == 502
    r = client.post(target.url + "/x", json={}, headers=h)
    assert r.status_code == 201 and r.headers["Idempotent-Replayed"] == "true"
    assert len(target.applied) == 1


def test_fail_rate_is_seeded_and_roughly_right(client):
    def run() -> list[int]:
        with Target(fail_rate=0.3, seed=7) as t:
            return [client.post(t.url + "/x", json={}).status_code for _ in range(100)]

    a, b = run(), run()
    assert a == b
    assert 15 <= a.count(503) <= 45
    assert set(a) == {201, 503}


def test_applied_log_is_fsynced_before_the_response(tmp_path, client, monkeypatch):
    import os

    import tests.support.target as mod  # the same module object the Target class uses

    events = []
    real_fsync = os.fsync

    def slow_fsync(fd):  # a slow disk: if the answer went out first, the client sees it first
        time.sleep(0.2)
        real_fsync(fd)
        events.append("fsync")

    monkeypatch.setattr(mod.os, "fsync", slow_fsync)
    with Target(state_dir=tmp_path) as t:
        client.post(t.url + "/x", json={"n": 1})
        events.append("response")
    assert events == ["fsync", "response"]
    line = (tmp_path / "applied.jsonl").read_text().splitlines()
    assert len(line) == 1
    assert set(json.loads(line[0])) >= {"method", "path", "idempotency_key", "body", "time"}


def test_restart_on_same_state_dir_keeps_ids_and_keys(tmp_path, client):
    with Target(state_dir=tmp_path) as t:
        client.post(t.url + "/x", json={"a": 1}, headers={"Idempotency-Key": "k"})
    with Target(state_dir=tmp_path) as t:
        r = client.post(t.url + "/x", json={"a": 1}, headers={"Idempotency-Key": "k"})
        assert r.headers["Idempotent-Replayed"] == "true" and r.json()["id"] == 1
        assert client.post(t.url + "/x", json={"a": 2}).json()["id"] == 2
    assert [a["id"] for a in read_applied(tmp_path)] == [1, 2]


def test_requests_record_headers_and_refusals(target, client):
    target.script([{"status": 503}])
    client.post(target.url + "/x?y=1", json={"a": 1}, headers={"X-Trace": "t1"})
    (req,) = target.requests
    assert req["headers"]["x-trace"] == "t1" and req["query"] == "y=1"
    assert req["outcome"] == "status_503" and json.loads(req["body"]) == {"a": 1}


def test_reset_clears_everything_including_the_file(target, client, tmp_path):
    client.post(target.url + "/x", json={}, headers={"Idempotency-Key": "k"})
    target.script([{"status": 500}])
    target.reset()
    assert target.applied == target.requests == target.pending_script == []
    assert read_applied(tmp_path) == []
    r = client.post(target.url + "/x", json={}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 201 and r.json()["id"] == 1


def test_control_api_in_process(target, client):
    rt = RemoteTarget(target.url)
    assert rt.health()
    assert rt.script([{"status": 503}, {"drop": True}]) == 2
    assert rt.configure(latency_ms=1)["latency_ms"] == 1
    assert client.post(target.url + "/x", json={}).status_code == 503
    bad = client.post(target.url + "/_control/config", json={"latncy": 1})
    assert bad.status_code == 400
    assert client.get(target.url + "/_control/nope").status_code == 404
    # control calls are neither scripted nor recorded
    assert rt.pending_script == [{"drop": True}]
    assert len(rt.requests) == 1


def test_stop_is_fast_with_a_hanging_request(tmp_path):
    t = Target(state_dir=tmp_path).start()
    t.script([{"hang": True}, {"delay": 30}])
    errors = []

    def call(timeout):
        try:
            with httpx.Client(timeout=timeout, trust_env=False) as c:
                c.post(t.url + "/x", json={})
        except httpx.HTTPError as e:
            errors.append(type(e).__name__)

    threads = [threading.Thread(target=call, args=(60,)) for _ in range(2)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 2
    while len(t.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    t.stop()
    assert time.monotonic() - t0 < 1.0
    for th in threads:
        th.join(2)
        assert not th.is_alive()
    assert len(errors) == 2  # both clients saw the connection close, neither got an answer
    assert t.applied == []


def test_subprocess_ready_and_control_api(tmp_path):
    t0 = time.monotonic()
    proc, url = spawn_target(tmp_path, latency_ms=5)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert time.monotonic() - t0 < 10
        rt = RemoteTarget(url)
        assert rt.config["latency_ms"] == 5
        rt.script([{"path": "/orders", "status": 503}, {"drop_after_apply": True}])
        rt.set_get("/orders", [{"order_id": 1}], headers={"X-Total": "1"})
        with httpx.Client(timeout=5, trust_env=False) as c:
            assert c.post(url + "/orders", json={"o": 1}).status_code == 503
            with pytest.raises(httpx.RemoteProtocolError):
                c.post(url + "/orders", json={"o": 1}, headers={"Idempotency-Key": "o1"})
            r = c.post(url + "/orders", json={"o": 1}, headers={"Idempotency-Key": "o1"})
            assert r.headers["Idempotent-Replayed"] == "true"
            g = c.get(url + "/orders")
            assert g.json() == [{"order_id": 1}] and g.headers["X-Total"] == "1"
        assert [a["body"] for a in rt.applied] == [{"o": 1}]
        assert read_applied(tmp_path) == rt.applied
        assert [r["outcome"] for r in rt.requests] == [
            "status_503",
            "applied_dropped",
            "replayed",
            "get",
        ]
        rt.configure(ignore_idempotency_key=True)
        with httpx.Client(timeout=5, trust_env=False) as c:
            c.post(url + "/orders", json={"o": 1}, headers={"Idempotency-Key": "o1"})
        assert len(read_applied(tmp_path)) == 2
        rt.reset()
        assert rt.applied == [] and read_applied(tmp_path) == []
    finally:
        t1 = time.monotonic()
        assert stop_target(proc) == 0  # SIGTERM -> clean exit
        assert time.monotonic() - t1 < 3
