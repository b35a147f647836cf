"""Group commit (docs/semantics.md, "Group commit"; engine/group.py): what a group holds
until it commits, for a SQLite target that takes the group in one transaction and for
targets that do not, and what a run does when a target cannot commit its group."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from connectors import Connector, PermanentError, Request, Response, TransientError
from connectors.sqlite import SqliteConnector
from engine import Engine
from tests.conftest import write_flow, write_ndjson

UPSERT = {"table": "orders", "mode": "upsert", "key": ["id"]}


def rows(path, table="orders"):
    with closing(sqlite3.connect(path)) as db:
        try:
            return db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # no such table: nothing committed
            return []


# -- the sqlite connector's group ------------------------------------------------------------------
def test_a_groups_rows_are_seen_by_others_only_once_it_commits(tmp_path):
    db = tmp_path / "erp.db"
    with SqliteConnector({"path": str(db)}) as erp:
        assert erp.begin_group() is True
        for i in (1, 2, 3):
            erp.call(Request({**UPSERT, "row": {"id": i, "total": f"{i}.50"}}))
        assert rows(db) == []  # another connection sees nothing yet
        # a lookup of the group sees its own rows, and stays read-only
        found = erp.call(
            Request({"query": "SELECT id FROM orders WHERE id > :n", "params": {"n": 1}})
        )
        assert found.body == [{"id": 2}, {"id": 3}]
        with pytest.raises(PermanentError):
            erp.call(Request({"query": "DELETE FROM orders"}))
        erp.commit_group()
        assert rows(db) == [(1, "1.50"), (2, "2.50"), (3, "3.50")]
        # without a group, each call commits before it returns, as before groups
        erp.call(Request({**UPSERT, "row": {"id": 4, "total": "4.50"}}))
        assert len(rows(db)) == 4


def test_a_rolled_back_group_keeps_nothing_and_the_next_one_starts_afresh(tmp_path):
    db = tmp_path / "erp.db"
    with SqliteConnector({"path": str(db)}) as erp:
        erp.begin_group()
        erp.call(Request({**UPSERT, "row": {"id": 1, "total": "1.00"}}))  # creates the table
        erp.rollback_group()
        assert not db.exists() or rows(db) == []
        erp.begin_group()  # the table went with the rollback: it is made again
        erp.call(Request({**UPSERT, "row": {"id": 2, "total": "2.00", "note": "x"}}))
        erp.commit_group()
    assert rows(db) == [(2, "2.00", "x")]


def test_a_refused_row_leaves_the_rest_of_the_group(tmp_path):
    db = tmp_path / "erp.db"
    with SqliteConnector({"path": str(db)}) as erp:
        erp.begin_group()
        erp.call(Request({"table": "orders", "row": {"id": 1, "total": "1.00"}}))
        erp.call(Request({"table": "orders", "row": {"id": 2, "total": "2.00"}}))
        with pytest.raises(PermanentError, match="orders"):
            erp.call(Request({"table": "orders", "row": {"id": 3, "total": object()}}))
        erp.commit_group()
    assert [r[0] for r in rows(db)] == [1, 2]


def test_a_group_holds_the_file_for_other_writers_until_it_commits(tmp_path):
    db = tmp_path / "erp.db"
    with (
        SqliteConnector({"path": str(db)}) as first,
        SqliteConnector({"path": str(db), "timeout": 0.1}) as second,
    ):
        first.call(Request({**UPSERT, "row": {"id": 1, "total": "1.00"}}))
        first.begin_group()
        first.call(Request({**UPSERT, "row": {"id": 2, "total": "2.00"}}))
        with pytest.raises(TransientError, match="locked"):
            second.call(Request({**UPSERT, "row": {"id": 3, "total": "3.00"}}))
        first.commit_group()
        second.call(Request({**UPSERT, "row": {"id": 3, "total": "3.00"}}))
    assert [r[0] for r in rows(db)] == [1, 2, 3]


# -- runs ------------------------------------------------------------------------------------------
FLOW = """
flow: grouped
group: {{records: {records}, seconds: 60}}
connections:
  erp: {{connector: {connector}, path: erp.db}}
source: {{connector: file, path: orders.ndjson}}
steps:
  - name: upsert
    send:
      connection: erp
      idempotency_key: "order:{{{{ record.order }}}}"
      table: orders
      mode: upsert
      key: [id]
      row: {{id: "{{{{ record.order }}}}", total: "{{{{ record.total }}}}"}}
"""


def grouped_flow(tmp_path, orders, records=3, connector="sqlite"):
    write_ndjson(tmp_path / "orders.ndjson", orders)
    return write_flow(tmp_path, FLOW.format(records=records, connector=connector))


def test_a_key_sent_earlier_in_the_same_group_is_a_duplicate(tmp_path):
    # the second line of order 1 comes in the same group as the first, before the commit
    orders = [{"id": 1, "order": 1, "total": "5"}, {"id": 2, "order": 1, "total": "5"}]
    engine = Engine(state=tmp_path / "state.db")
    result = engine.run(grouped_flow(tmp_path, orders, records=10))
    assert (result.counts["done"], result.counts["skipped"]) == (1, 1)
    with closing(engine.store()) as store:
        key = store.get_key("grouped", "order:1")
    assert key is not None and key.state == "done" and key.response["changes"] == 1


class FailingCommit(SqliteConnector):
    """The sqlite connector, whose group commit fails once ``fail`` is set."""

    name = "failing_sqlite"
    fail = threading.Event()

    def commit_group(self) -> None:
        if self.fail.is_set():
            self.rollback_group()
            raise PermanentError("disk I/O error (made by the test)")
        super().commit_group()


def test_a_group_its_target_cannot_commit_is_kept_nowhere_and_the_next_run_takes_it(tmp_path):
    orders = [{"id": i, "order": i, "total": f"{i}.00"} for i in range(1, 8)]
    flow = grouped_flow(tmp_path, orders, records=3, connector="failing_sqlite")
    engine = Engine(state=tmp_path / "state.db")
    engine.register_connector("failing_sqlite", FailingCommit)

    seen: list[int] = []
    original = FailingCommit.call

    def call(self, request):
        seen.append(1)
        if len(seen) == 5:  # in the second group
            FailingCommit.fail.set()
        return original(self, request)

    FailingCommit.call = call  # type: ignore[method-assign]
    try:
        failed = engine.run(flow)
    finally:
        FailingCommit.call = original  # type: ignore[method-assign]
        FailingCommit.fail.clear()
    assert failed.status == "failed" and failed.exit_code == 3
    assert "could not be committed" in failed.message and "'erp'" in failed.message
    assert [r[0] for r in rows(tmp_path / "erp.db")] == [1, 2, 3]  # the first group only
    with closing(engine.store()) as store:
        traced = {t.record_key for t in store.run_records(failed.run_id)}
        keys = {k for k in ("order:3", "order:4", "order:5") if store.get_key("grouped", k)}
    assert traced == {"1", "2", "3"} and keys == {"order:3"}

    again = engine.run(flow)
    assert again.exit_code == 0
    assert (again.counts["skipped"], again.counts["done"]) == (3, 4)
    assert [r[0] for r in rows(tmp_path / "erp.db")] == list(range(1, 8))


class Peeking(Connector):
    """A target outside the state's transactions that notes, as each request arrives, which
    keys the state file (read by another connection, as another process would) holds in
    flight."""

    name = "peeking"
    description = "notes the keys in flight at each call"
    call_schema = {"type": "object", "properties": {"id": {"description": "an id"}}}
    state: Path
    seen: list[list[str]] = []

    def call(self, request: Request) -> Response:
        with closing(sqlite3.connect(self.state)) as db:
            keys = db.execute("SELECT key FROM keys WHERE state = 'in_flight'").fetchall()
        self.seen.append(sorted(k for (k,) in keys))
        return Response(body={"ok": request.options["id"]})


def test_an_answered_request_is_no_longer_in_flight_once_the_next_one_is_marked(tmp_path):
    # each request is marked in flight before it goes, and the answer of the one before
    # rides along with that mark: a kill leaves at most one answered request in flight
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(1, 5)])
    flow = write_flow(
        tmp_path,
        """
        flow: marked
        group: {records: 100, seconds: 60}
        connections:
          erp: {connector: peeking}
        source: {connector: file, path: orders.ndjson}
        steps:
          - name: post
            send: {connection: erp, id: "{{ record.id }}"}
        """,
    )
    Peeking.state, Peeking.seen = tmp_path / "state.db", []
    engine = Engine(state=Peeking.state)
    engine.register_connector("peeking", Peeking)
    result = engine.run(flow)
    assert result.counts["done"] == 4
    assert Peeking.seen == [[f"marked:post:{i}"] for i in range(1, 5)]
    with closing(sqlite3.connect(Peeking.state)) as db:
        states = db.execute("SELECT state, count(*) FROM keys GROUP BY state").fetchall()
    assert states == [("done", 4)]


@pytest.mark.parametrize(
    "group, message",
    [
        ("{records: 0}", "at least 1 and at most 100000; got 0"),
        ("{seconds: 0}", "got 0"),
        ("{records: 10, every: 5}", "every"),
    ],
)
def test_a_group_option_out_of_range_is_refused_where_it_is_written(tmp_path, group, message):
    write_ndjson(tmp_path / "orders.ndjson", [])
    flow = write_flow(tmp_path, FLOW.format(records=1, connector="sqlite"))
    flow.write_text(flow.read_text().replace("group: {records: 1, seconds: 60}", f"group: {group}"))
    problems = Engine(state=tmp_path / "state.db").check(flow)
    assert any(p.line == 2 and message in p.message for p in problems), problems


# -- a flow that can undo its sends ----------------------------------------------------------------
UNDOABLE = """
flow: undoable
connections:
  erp: {connector: sqlite, path: erp.db}
  erp_reader: {connector: sqlite, path: erp.db}
source: {connector: file, path: orders.ndjson}
steps:
  - name: upsert_order
    send:
      connection: erp
      idempotency_key: "order:{{ record.id }}"
      table: orders
      mode: upsert
      key: [id]
      row: {id: "{{ record.id }}", status: open}
      COMPENSATE
  - name: written
    enrich:
      connection: erp_reader
      query: SELECT status FROM orders WHERE id = :id
      params: {id: "{{ record.id }}"}
      not_found: "order {{ record.id }} is not in the ERP yet"
      save_as: seen
  - route:
      - when: record.id == 2
        steps:
          - fail: "order {{ record.id }} refused"
"""


def test_a_flow_that_can_undo_its_sends_commits_each_row_as_it_goes(tmp_path):
    # a compensation commits its key at once (engine/compensation.py): a target's rows must
    # be committed as they go, or a crash would keep the compensation's key and lose the
    # row change it made; another connection sees each row right after its send
    compensate = (
        "compensate: {table: orders, mode: upsert, key: [id], "
        'row: {id: "{{ record.id }}", status: cancelled}}'
    )
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in (1, 2, 3)])
    flow = write_flow(tmp_path, UNDOABLE.replace("COMPENSATE", compensate))
    result = Engine(state=tmp_path / "s.db").run(flow)
    assert (result.counts["done"], result.counts["dead_lettered"]) == (2, 1), result
    # order 2 failed after its send: its compensation ran and was committed
    assert rows(tmp_path / "erp.db") == [(1, "open"), (2, "cancelled"), (3, "open")]

    # the same flow without compensate: the row waits for the group's commit, so the reader
    # does not see it yet and the record is dead-lettered (docs/semantics.md, "Group
    # commit"); the send itself stays done and its row is committed with the group
    other = tmp_path / "grouped"
    other.mkdir()
    write_ndjson(other / "orders.ndjson", [{"id": 1}])
    flow = write_flow(other, UNDOABLE.replace("COMPENSATE", ""))
    result = Engine(state=other / "s.db").run(flow)
    assert (result.counts["done"], result.counts["dead_lettered"]) == (0, 1), result
    assert rows(other / "erp.db") == [(1, "open")]
