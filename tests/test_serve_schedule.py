"""Schedules: a flow due every minute runs once per minute across two ``flowyard serve``
processes on one state (a clock the test speeds up: a minute passes in three seconds);
missed slots are run once or skipped, as the flow says; ``flowyard schedule list``."""

from __future__ import annotations

import json
import threading
import time
from contextlib import closing
from datetime import UTC, datetime

import pytest

from engine.model import Schedule
from engine.serve.scheduler import Clock, Scheduler, last_due, next_due
from engine.store import SqliteStore
from tests.support.cli import invoke
from tests.support.files import write_flow, write_ndjson
from tests.support.serving import Serving

SPEED = 20.0  # a minute in 3 s

FLOW = """
flow: stock_every_minute
schedule: "* * * * *"
source: {connector: file, path: levels.ndjson}
connections:
  out: {connector: file}
steps:
  - send: {connection: out, path: out.ndjson, record: "{{ record }}"}
"""


def virtual(t: float, origin: float) -> float:
    return origin + (t - origin) * SPEED


@pytest.mark.slow
def test_a_flow_due_every_minute_runs_once_per_minute_across_two_processes(tmp_path):
    write_ndjson(tmp_path / "levels.ndjson", [{"id": "SKU-1", "available": 3}])
    flow = write_flow(tmp_path, FLOW)
    origin = float(int(time.time()) // 60 * 60)
    env = {"FLOWYARD_CLOCK": f"{SPEED}@{origin}"}
    state = tmp_path / "state" / "state.db"
    one = Serving(tmp_path, [flow], env=env, state=state)
    two = Serving(tmp_path, [flow], env=env, state=state)
    with one, two:
        started = time.time()
        time.sleep(8 * 60 / SPEED + 0.5)  # eight minutes
        ended = time.time()
        assert one.stop() == 0 and two.stop() == 0
    with closing(SqliteStore(state)) as store:
        runs = sorted(store.list_runs("stock_every_minute", 100), key=lambda r: r.started_at)
    minutes = [int(virtual(r.started_at, origin) // 60) for r in runs]
    assert len(minutes) == len(set(minutes)), minutes  # never twice in a minute
    # the slots due while both served, against the runs that started meanwhile: the slot
    # just before may start late (one more), the last one may not have started (one less)
    expected = int(virtual(ended, origin) // 60) - int(virtual(started, origin) // 60)
    meanwhile = [r for r in runs if started <= r.started_at <= ended]
    assert expected - 1 <= len(meanwhile) <= expected + 1, (len(meanwhile), expected, minutes)
    assert all(r.status == "ok" for r in runs)
    # one run at a time: each ended before the next began (the lease)
    for before, after in zip(runs, runs[1:], strict=False):
        assert before.ended_at is not None and before.ended_at <= after.started_at
    holders = {r.holder for r in runs}
    assert 1 <= len(holders) <= 2

    listed = invoke("schedule", "list", str(flow), "--state", str(state), "--output", "json")
    [row] = json.loads(listed.stdout)
    assert (row["flow"], row["cron"], row["timezone"], row["missed"]) == (
        "stock_every_minute",
        "* * * * *",
        "UTC",
        "run_once",
    )
    assert row["last_run_id"] == runs[-1].run_id and row["last_run_status"] == "ok"
    table = invoke("schedule", "list", str(flow), "--state", str(state))
    assert "stock_every_minute" in table.stdout and "* * * * * (UTC)" in table.stdout


# -- the scheduler with a clock the test moves ------------------------------------------------
class StepClock(Clock):
    """A clock that jumps to each due time at once."""

    def __init__(self, now: float):
        self.t = now

    def now(self) -> float:
        return self.t

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        if stop.is_set():
            return True
        self.t += max(seconds, 0.0) or 0.001
        time.sleep(0.001)
        return stop.is_set()


def run_scheduler(tmp_path, flow_text: str, start: float, last: float | None, until: float):
    from engine import Engine

    eng = Engine(state=tmp_path / "state.db")
    flow = eng.load(write_flow(tmp_path, flow_text))
    claimed: dict[float, int] = {}
    ran: list[float] = []
    done = threading.Event()
    state = {"last": last}

    def claim(name: str, due: float) -> bool:
        if state["last"] is not None and due <= state["last"]:
            return False
        claimed[due] = claimed.get(due, 0) + 1
        state["last"] = due
        return True

    def run(flow, due):
        ran.append(due)
        if due >= until:
            done.set()

    clock = StepClock(start)
    scheduler = Scheduler([flow], claim=claim, last_claimed=lambda n: last, run=run, clock=clock)
    scheduler.start()
    assert done.wait(10)
    scheduler.stop()
    return ran


NOON = datetime(2026, 12, 2, 12, 0, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("missed", "expected_first"),
    [("run_once", NOON - 30), ("skip", NOON + 30)],
)
def test_missed_slots_run_once_at_start_or_are_skipped(tmp_path, missed, expected_first):
    text = FLOW.replace(
        'schedule: "* * * * *"', f'schedule: {{cron: "* * * * *", missed: {missed}}}'
    )
    write_ndjson(tmp_path / "levels.ndjson", [])
    # the last slot a process ran was ten minutes ago: nine were missed
    ran = run_scheduler(tmp_path, text, NOON, last=NOON - 30 - 600, until=NOON + 150)
    assert ran[0] == expected_first  # run_once: the latest missed slot, once; skip: the next
    assert ran[1:] == [t for t in (NOON + 30, NOON + 90, NOON + 150) if t > ran[0]]


def test_due_times_follow_the_time_zone_and_its_daylight_saving_change():
    berlin = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")

    def slots(after: datetime, n: int = 3) -> list[datetime]:
        found, t = [], after.timestamp()
        for _ in range(n):
            t = next_due(berlin, t)
            found.append(datetime.fromtimestamp(t, UTC))
        return found

    # 2026-03-28 02:30 CET is 01:30 UTC; on 03-29 clocks jump from 02:00 to 03:00, so the
    # slot runs at the jump (01:00 UTC); then 02:30 CEST, 00:30 UTC
    assert slots(datetime(2026, 3, 27, 12, tzinfo=UTC)) == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]
    # 2026-10-25: 02:30 comes twice (CEST, then CET): it runs once
    assert slots(datetime(2026, 10, 24, 12, tzinfo=UTC)) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
        datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]
    first = datetime(2026, 10, 26, 1, 30, tzinfo=UTC).timestamp()
    assert last_due(berlin, first) == first and last_due(berlin, first + 59) == first
    utc = Schedule(cron="*/5 * * * *")
    assert next_due(utc, NOON) - NOON == 270
