"""kill -9 at random moments, then run again, as cron would: nothing is lost and nothing is
applied twice by a target that honours Idempotency-Key; a target that ignores it applies at
most the requests in flight at each kill twice; a SQLite target that takes each group in
one transaction gets every row once.

Each HTTP scenario starts ``flowyard run`` (the real CLI) against a target in its own
process, which applies each request and fsyncs its log before it answers, and SIGKILLs the
CLI at seeded random moments (most while sends are in flight, some at any moment from
start) at least ``KILLS`` times in a row, re-running it each time, until a run completes.
Then it reads what the target applied. Runs commit in groups (docs/semantics.md, "Group
commit"): most kills come inside a group, with answered requests not yet committed.

The HTTP flows' sends run on lanes in worker processes (engine/lane_processes.py): each
kill of the run must take its lane processes with it, and a lane process killed on its own
fails the run, whose next run delivers what it had in flight, once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.lane_processes import fork_context
from tests.conftest import ROOT, write_flow, write_ndjson
from tests.support.target import APPLIED_FILE, read_applied, spawn_target, stop_target

KILLS = 20
RECORDS = 500  # enough for KILLS kills even when each run starts fast (bytecode cached)
CONCURRENCY = 4
LATENCY_MS = 20

FLOW = """
flow: crash_{source}
concurrency: {concurrency}
group: {group}
connections:
  shop: {{connector: sqlite, path: shop.db}}
  erp:
    connector: http
    base_url: "{{{{ vars.url }}}}"
    timeout: 5
    retry: {{attempts: 8, backoff: 0.05, max_backoff: 0.2}}
source: {source_spec}
steps:
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{{{ record.id }}}}"
      body: {{id: "{{{{ record.id }}}}", total: "{{{{ record.total }}}}"}}
"""

SOURCES = {
    # read whole on every run: the idempotency keys alone keep records from going twice
    "file": "{connector: file, path: orders.ndjson}",
    # read from the cursor on: the cursor must never pass a record that is not final
    "sqlite": "{connection: shop, table: orders, cursor: id}",
}


def lane_processes(pid: int) -> list[int]:
    """The lane processes of the run ``pid``: its children forked from it (same command)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    lanes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid and (entry / "cmdline").read_bytes() == command:
                lanes.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
    return lanes


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Crashes:
    """What happened over the kills: how many, how many runs, and when each kill came."""

    kills: int = 0
    runs: int = 0
    in_flight_kills: int = 0  # kills that came while the target was applying this run's sends
    in_group_kills: int = 0  # kills that left answered requests whose outcome was not committed
    codes: list[int] = field(default_factory=list)
    lanes_seen: int = 0  # lane processes of the runs killed (each must die with its run)


# records per group, and its time: long enough that a kill comes inside a group
GROUP = "{records: 100, seconds: 2}"


def make_orders(directory: Path, count: int = RECORDS) -> None:
    orders = [{"id": i, "total": f"{i}.95"} for i in range(1, count + 1)]
    write_ndjson(directory / "orders.ndjson", orders)
    db = sqlite3.connect(directory / "shop.db")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT)")
    db.executemany("INSERT INTO orders VALUES (:id, :total)", orders)
    db.commit()
    db.close()


def make_flow(directory: Path, source: str, group: str = GROUP) -> Path:
    make_orders(directory)
    text = FLOW.format(
        source=source, concurrency=CONCURRENCY, source_spec=SOURCES[source], group=group
    )
    return write_flow(directory, text)


def applied_count(target_dir: Path) -> int:
    try:
        with open(target_dir / APPLIED_FILE, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def committed_keys(state: Path) -> int:
    """Keys the state holds done: requests whose outcome was committed."""
    try:
        with closing(sqlite3.connect(state, timeout=5)) as db:
            return db.execute("SELECT count(*) FROM keys WHERE state = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # not made yet
        return 0


def crash_until_done(
    flow: Path,
    state: Path,
    seed: int,
    applied: Callable[[], int],
    url: str | None = None,
    window: float = LATENCY_MS / 1000,
    any_moment: tuple[float, float] = (0.05, 0.8),
) -> Crashes:
    """Run the flow, SIGKILL it at random moments KILLS times, then let a run finish.

    ``applied()`` counts what the target has applied so far; most kills wait until this
    run made it apply 1 to 3 more, then up to ``window`` seconds longer; every third comes
    ``any_moment`` seconds (a range) after the start.
    """
    rng = random.Random(seed)
    crashes = Crashes()
    command = [sys.executable, "-m", "cli", "run", str(flow), "--state", str(state)]
    if url is not None:
        command += ["--var", f"url={url}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWYARD_LEASE_TTL": "60"}
    while True:
        assert crashes.runs < 3 * KILLS, f"the records ran out before the kills did: {crashes}"
        before = applied()
        proc = subprocess.Popen(
            command, cwd=flow.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        crashes.runs += 1
        if crashes.kills < KILLS:
            if crashes.kills % 3 == 2:  # any moment: starting, reading, sending, committing
                deadline = time.monotonic() + rng.uniform(*any_moment)
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.002)
            else:  # while sends are in flight: after the target applied 1 to 3 of this run's
                wanted = before + rng.randint(1, 3)
                deadline = time.monotonic() + 10
                while applied() < wanted and proc.poll() is None:
                    assert time.monotonic() < deadline, "the run made no progress"
                    time.sleep(0.001)
                time.sleep(rng.uniform(0, window))
            if proc.poll() is None:
                lanes = lane_processes(proc.pid)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                crashes.kills += 1
                crashes.lanes_seen += len(lanes)
                deadline = time.monotonic() + 5
                while any(map(alive, lanes)):
                    assert time.monotonic() < deadline, (
                        f"lane processes outlived their run: {lanes}"
                    )
                    time.sleep(0.01)
                now = applied()
                crashes.in_flight_kills += now > before
                crashes.in_group_kills += now > committed_keys(state)
                proc.stdout.close()
                continue
        out, _ = proc.communicate(timeout=60)
        crashes.codes.append(proc.returncode)
        assert proc.returncode == 0, out.decode()
        if crashes.kills >= KILLS:
            return crashes


def crash_scenario(
    tmp_path: Path, source: str, group: str = GROUP, **target_options
) -> tuple[Crashes, Counter]:
    """Crash a flow reading ``source`` KILLS times; what the target applied, per record."""
    target_dir = tmp_path / "target"
    proc, url = spawn_target(target_dir, latency_ms=LATENCY_MS, **target_options)
    try:
        flow = make_flow(tmp_path, source, group)
        crashes = crash_until_done(
            flow, tmp_path / "state.db", 4, lambda: applied_count(target_dir), url
        )
    finally:
        stop_target(proc)
    assert crashes.kills >= KILLS and crashes.in_flight_kills >= KILLS // 2, crashes
    if lane_processes_expected():
        assert crashes.lanes_seen >= KILLS, crashes  # the runs killed had lane processes
    return crashes, Counter(int(a["body"]["id"]) for a in read_applied(target_dir))


def lane_processes_expected() -> bool:
    """Whether the CLI runs the HTTP flows' lanes in processes here: on Linux, with two
    cores or more, or FLOWYARD_LANE_PROCESSES saying at least two."""
    given = os.environ.get("FLOWYARD_LANE_PROCESSES", "").strip()
    processes = int(given) if given.isdigit() else len(os.sched_getaffinity(0))
    return fork_context() is not None and min(processes, CONCURRENCY) >= 2


@pytest.mark.slow  # twenty kill -9 and restarts: ~11 s
def test_kill_9_at_random_moments_then_run_again_delivers_every_record_once(tmp_path):
    # a file source is read whole on every run: the idempotency keys alone keep records
    # from going twice, and the target answers a repeated key with its stored response;
    # groups of 100 records: most kills leave answered requests of the group uncommitted
    crashes, applied = crash_scenario(tmp_path, "file")
    assert sorted(applied) == list(range(1, RECORDS + 1))  # every record
    assert set(applied.values()) == {1}, crashes  # none twice
    assert crashes.in_group_kills >= KILLS // 2, crashes


@pytest.mark.slow  # twenty kill -9 and restarts: ~11 s
def test_a_target_ignoring_the_key_gets_at_most_the_requests_in_flight_at_each_kill_twice(
    tmp_path,
):
    # read from a cursor: the cursor must never pass a record that is not final; in groups
    # of 100 records, each request's answer rides along with the next request's mark
    crashes, applied = crash_scenario(tmp_path, "sqlite", ignore_idempotency_key=True)
    assert sorted(applied) == list(range(1, RECORDS + 1))  # every record, none lost
    duplicates = sum(applied.values()) - len(applied)
    # docs/semantics.md: at most the requests in flight at a kill, at most one per lane
    assert duplicates <= crashes.kills * CONCURRENCY, (duplicates, crashes)
    print(f"{duplicates} duplicates after {crashes.kills} kills, concurrency {CONCURRENCY}")


# -- a lane process killed on its own ------------------------------------------------------------
LANE_KILLS = 8


@pytest.mark.slow  # eight runs, each with a lane process killed: ~15 s
def test_a_lane_process_killed_fails_the_run_and_the_next_runs_deliver_every_record_once(
    tmp_path,
):
    if not lane_processes_expected():
        pytest.skip("lane processes need Linux and two cores")
    target_dir = tmp_path / "target"
    proc, url = spawn_target(target_dir, latency_ms=LATENCY_MS)
    rng = random.Random(11)
    command = [sys.executable, "-m", "cli", "run", str(make_flow(tmp_path, "file"))]
    command += ["--state", str(tmp_path / "state.db"), "--var", f"url={url}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    messages = []
    try:
        kills = 0
        while True:
            run = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
            )
            if kills < LANE_KILLS:
                before = applied_count(target_dir)
                deadline = time.monotonic() + 20
                # while sends are in flight: the group open, answers not yet committed
                while applied_count(target_dir) < before + rng.randint(1, 6):
                    assert run.poll() is None and time.monotonic() < deadline, run.poll()
                    time.sleep(0.001)
                lanes = lane_processes(run.pid)
                assert lanes, "the run has no lane processes"
                os.kill(rng.choice(lanes), signal.SIGKILL)
                kills += 1
                out, _ = run.communicate(timeout=60)
                assert run.returncode == 3, out  # the run could not proceed
                messages.append(out)
                continue
            out, _ = run.communicate(timeout=120)
            assert run.returncode == 0, out
            break
    finally:
        stop_target(proc)
    assert all("killed by signal 9" in m and "lane process" in m for m in messages), messages
    applied = Counter(int(a["body"]["id"]) for a in read_applied(target_dir))
    assert sorted(applied) == list(range(1, RECORDS + 1))  # every record
    assert set(applied.values()) == {1}  # none twice: repeated with the same key


# -- a SQLite target: each group's rows in one transaction of the target -------------------------
# A run of this flow writes ~13,000 rows a second on a quiet machine (no mapping, no
# latency): a run reads far more records than it gets through before its kill, so that it
# is killed rather than finishes, and the records do not run out before the kills do.
SQLITE_RECORDS = 40000
SQLITE_GROUP = 100
SQLITE_CHUNK = 20000  # records a run reads (a cron job taking the next ones each time)
SQLITE_WINDOW = 0.03  # a few groups' time: the kill comes inside one of the next groups
SQLITE_ANY_MOMENT = (0.05, 0.5)  # starting, loading, reading, the first groups

SQLITE_FLOW = """
flow: crash_to_sqlite
group: {records: GROUP, seconds: 0.5}
connections:
  shop: {connector: sqlite, path: shop.db}
  erp: {connector: sqlite, path: erp.db}
source:
  connection: shop
  query: SELECT * FROM orders WHERE :cursor IS NULL OR id > :cursor ORDER BY id LIMIT CHUNK
  cursor: id
steps:
  - set: {doubled: "{{ record.id * 2 }}"}
  - name: upsert_order
    send:
      connection: erp
      idempotency_key: "order:{{ record.id }}"
      table: orders
      mode: upsert
      key: [id]
      row: {id: "{{ record.id }}", total: "{{ record.total }}", doubled: "{{ record.doubled }}"}
""".replace("GROUP", str(SQLITE_GROUP)).replace("CHUNK", str(SQLITE_CHUNK))


@pytest.mark.slow  # twenty kill -9 and restarts, then 40,000 rows: ~15-40 s
def test_kill_9_inside_groups_of_a_sqlite_target_keeps_every_row_once(tmp_path):
    # the target's table logs every write it applies (a trigger, in the same transaction)
    make_orders(tmp_path, SQLITE_RECORDS)
    erp = tmp_path / "erp.db"
    with closing(sqlite3.connect(erp)) as db:
        db.executescript(
            """
            PRAGMA journal_mode = WAL;
            CREATE TABLE orders (id PRIMARY KEY, total, doubled);
            CREATE TABLE applied (id);
            CREATE TRIGGER inserted AFTER INSERT ON orders
                BEGIN INSERT INTO applied VALUES (new.id); END;
            CREATE TRIGGER updated AFTER UPDATE ON orders
                BEGIN INSERT INTO applied VALUES (new.id); END;
            """
        )

    def applied() -> int:  # what the target committed
        with closing(sqlite3.connect(erp, timeout=5)) as db:
            return db.execute("SELECT count(*) FROM applied").fetchone()[0]

    flow = write_flow(tmp_path, SQLITE_FLOW)
    state = tmp_path / "state.db"
    # kill after the target committed a group, at a random moment of the next ones
    crashes = crash_until_done(
        flow, state, 9, applied, window=SQLITE_WINDOW, any_moment=SQLITE_ANY_MOMENT
    )
    assert crashes.kills >= KILLS and crashes.in_flight_kills >= KILLS // 2, crashes
    while True:  # then let cron take the rest
        done = subprocess.run(
            [sys.executable, "-m", "cli", "run", str(flow), "--state", str(state)]
            + ["--output", "json"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        if json.loads(done.stdout)["counts"]["read"] == 0:
            break

    with closing(sqlite3.connect(erp)) as db:
        rows = db.execute("SELECT id, total, doubled FROM orders ORDER BY id").fetchall()
        writes = Counter(i for (i,) in db.execute("SELECT id FROM applied"))
    # every row, once, as the flow computed it: nothing lost behind the cursor
    assert rows == [(i, f"{i}.95", i * 2) for i in range(1, SQLITE_RECORDS + 1)]
    # a row is written again only when a kill came between the target's commit of its group
    # and the state's (docs/semantics.md): at most one group per kill, and the same values
    again = sum(writes.values()) - len(writes)
    assert len(writes) == SQLITE_RECORDS and again <= crashes.kills * SQLITE_GROUP, crashes
    print(f"{again} rows written twice after {crashes.kills} kills, groups of {SQLITE_GROUP}")
