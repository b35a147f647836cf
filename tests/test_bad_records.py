"""One bad record never stops a run, nor every later run: each is dead-lettered with its
reason and raw text, the others go on, and a run that cannot go on ends ``failed`` with a
one-line reason, never ``running`` and never a traceback on stderr."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

from connectors import Connector, Item
from engine import Engine
from engine.store import SqliteStore
from tests.conftest import flowyard, invoke, read_ndjson, write_flow

# Inputs a JSON parser reads, or half-reads, that a record must not hold.
DEEP = "[" * 100_000 + "]" * 100_000
LONG_INT = '{"id": 3, "n": ' + "9" * 5000 + "}"
SURROGATE = '{"id": 4, "name": "\\ud800"}'
NAN = '{"id": 5, "total": NaN}'
INFINITY = '{"id": 6, "total": -Infinity}'
BAD_LINES = {2: DEEP, 3: LONG_INT, 4: SURROGATE, 5: NAN, 6: INFINITY}


def file_flow(tmp_path, source="in.ndjson", extra=""):
    return write_flow(
        tmp_path,
        f"""
        flow: bad_input
        connections:
          out: {{connector: file}}
        source: {{connector: file, path: {source}}}
        steps:
          - name: write
            send: {{connection: out, path: out.ndjson, record: "{{{{ record }}}}"}}
        {extra}
        """,
    )


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_unreadable_lines_are_dead_lettered_at_the_source_and_the_rest_goes_on(tmp_path):
    flow = file_flow(tmp_path)
    write_lines(tmp_path / "in.ndjson", ['{"id": 1}', *BAD_LINES.values(), '{"id": 7}'])
    state = tmp_path / "state.db"
    for attempt in (1, 2):  # the file is read again: the same lines, the same dead letters
        done = invoke("run", flow, "--state", state, "--output", "json", cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        counts = json.loads(done.stdout)["counts"]
        assert counts["dead_lettered"] == 5 and counts["read"] == 7
        assert counts["done" if attempt == 1 else "skipped"] == 2
    assert read_ndjson(tmp_path / "out.ndjson") == [{"id": 1}, {"id": 7}]
    letters = json.loads(
        invoke("dlq", "list", "--state", state, "--output", "json", cwd=tmp_path).stdout
    )
    assert {d["line"]: d["step"] for d in letters} == {n: "source" for n in BAD_LINES}
    by_line = {d["line"]: d for d in letters}
    reasons = {n: by_line[n]["message"] for n in BAD_LINES}
    assert "nested deeper than" in reasons[2]
    assert "more than 4300 digits" in reasons[3]
    assert "surrogate" in reasons[4]
    assert "NaN is not a JSON number" in reasons[5]
    assert "Infinity is not a JSON number" in reasons[6]
    for n, line in BAD_LINES.items():
        assert by_line[n]["raw"] == line  # the raw text, to fix and feed again
    runs = json.loads(invoke("runs", "list", "--state", state, "-o", "json").stdout)
    assert [r["status"] for r in runs] == ["dead_lettered", "dead_lettered"]


def test_a_record_a_step_chokes_on_is_dead_lettered_whatever_the_error(tmp_path):
    """A request that cannot even be fingerprinted (a mapping with keys of two types) used
    to end the run with a TypeError and a traceback."""
    flow = write_flow(
        tmp_path,
        """
        flow: odd_request
        connections:
          out: {connector: file}
        source: {connector: file, path: in.ndjson}
        steps:
          - name: write
            send:
              connection: out
              path: out.ndjson
              record: "{{ {1: 'one', 'two': 2} if record.odd | default(false) else record }}"
        """,
    )
    write_lines(tmp_path / "in.ndjson", ['{"id": 1}', '{"id": 2, "odd": true}', '{"id": 3}'])
    result = Engine(state=tmp_path / "s.db").run(flow)
    assert (result.status, result.exit_code) == ("dead_lettered", 1)
    assert result.counts["done"] == 2 and result.counts["dead_lettered"] == 1
    with closing(SqliteStore(tmp_path / "s.db")) as store:
        [letter] = store.dead_letters()
    assert (letter.record_key, letter.step, letter.error_class) == ("2", "write", "TypeError")


def test_a_source_that_fails_unexpectedly_ends_the_run_failed_with_one_line(tmp_path):
    """A JSON array nested 100,000 deep makes the parser recurse out of stack: the run
    ends ``failed`` with exit 3 and a one-line reason; the traceback is in the run log."""
    (tmp_path / "in.json").write_text(DEEP)
    flow = file_flow(tmp_path, source="in.json")
    state = tmp_path / "state.db"
    done = flowyard("run", flow, "--state", state, "--output", "json", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert result["status"] == "failed" and "\n" not in result["message"]
    assert "RecursionError" in result["message"] and result["log_path"] in result["message"]
    log = [json.loads(line) for line in open(result["log_path"])]
    [error] = [e for e in log if e["event"] == "run_error"]
    assert "Traceback" in error["traceback"]
    runs = json.loads(flowyard("runs", "list", "--state", state, "-o", "json").stdout)
    assert [(r["status"], r["exit_code"]) for r in runs] == [("failed", 3)]
    # the lease was released: the next run starts at once (and fails the same way)
    assert flowyard("run", flow, "--state", state, cwd=tmp_path).returncode == 3


class _Breaks(Connector):
    """A source that delivers two records, then fails with an error no one expected."""

    name = "breaks"
    description = "test source"
    options_schema = {"type": "object"}
    read_schema = {"type": "object"}

    def read(self, options, cursor=None):
        yield Item(data={"id": 1})
        yield Item(data={"id": 2})
        raise KeyError("bug in a plugin")


def test_records_before_an_unexpected_failure_are_kept_and_the_run_is_not_left_running(
    tmp_path,
):
    flow = write_flow(
        tmp_path,
        """
        flow: breaks
        connections:
          src: {connector: breaks}
          out: {connector: file}
        source: {connection: src}
        steps:
          - send: {connection: out, path: out.ndjson, record: "{{ record }}"}
        """,
    )
    eng = Engine(state=tmp_path / "s.db")
    eng.register_connector("breaks", _Breaks)
    result = eng.run(flow)
    assert (result.status, result.exit_code) == ("failed", 3)
    assert result.counts["done"] == 2 and "KeyError" in result.message
    assert read_ndjson(tmp_path / "out.ndjson") == [{"id": 1}, {"id": 2}]
    with closing(SqliteStore(tmp_path / "s.db")) as store:
        [run] = store.list_runs()
        traced = {t.record_key for t in store.run_records(run.run_id)}
    assert (run.status, run.exit_code) == ("failed", 3) and traced == {"1", "2"}


def test_records_whose_key_cannot_be_made_are_each_kept_with_their_record(tmp_path):
    """From an incremental source, unkeyed records used to share the key ``line:None``: each
    overwrote the last one's dead letter, which kept neither record nor text."""
    db = tmp_path / "shop.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE items (seq INTEGER, kind TEXT, sku TEXT)")
        rows = [(1, "item", "A"), (2, "bundle", None), (3, "bundle", None), (4, "item", "B")]
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)", rows)
        conn.commit()
    flow = write_flow(
        tmp_path,
        f"""
        flow: unkeyed
        connections:
          shop: {{connector: sqlite, path: "{db}"}}
          out: {{connector: file}}
        source:
          connection: shop
          table: items
          cursor: seq
          key: "{{{{ record.sku if record.kind == 'item' else record.bundle_code }}}}"
        steps:
          - send: {{connection: out, path: out.ndjson, record: "{{{{ record.seq }}}}"}}
        """,
    )
    eng = Engine(state=tmp_path / "s.db")
    first = eng.run(flow)
    assert first.counts == {**first.counts, "read": 4, "done": 2, "dead_lettered": 2}
    assert eng.run(flow).counts["read"] == 0  # the cursor moved past them: they are kept
    with closing(SqliteStore(tmp_path / "s.db")) as store:
        letters = store.dead_letters()
    assert len({d.record_key for d in letters}) == 2
    assert sorted(d.record["seq"] for d in letters) == [2, 3]
    for letter in letters:
        assert letter.error_class == "UnkeyedRecord" and "bundle_code" in letter.message
        assert json.loads(letter.raw) == letter.record and letter.source_record == letter.record


def test_unkeyed_lines_of_a_file_keep_their_line_and_text(tmp_path):
    flow = (
        file_flow(tmp_path)
        .read_text()
        .replace("path: in.ndjson}", 'path: in.ndjson, key: "{{ record.order.id }}"}')
    )
    (tmp_path / "flow.yaml").write_text(flow)
    write_lines(tmp_path / "in.ndjson", ['{"order": {"id": 1}}', '{"id": 2}', '{"x": 3}'])
    result = Engine(state=tmp_path / "s.db").run(tmp_path / "flow.yaml")
    assert result.counts["done"] == 1 and result.counts["dead_lettered"] == 2
    with closing(SqliteStore(tmp_path / "s.db")) as store:
        letters = {d.record_key: d for d in store.dead_letters()}
    assert set(letters) == {"line:2", "line:3"}
    assert letters["line:3"].record == {"x": 3} and json.loads(letters["line:3"].raw) == {"x": 3}


def test_text_no_encoding_can_write_is_stored_escaped_not_a_crash(tmp_path):
    """A record given by a library caller may hold a lone surrogate; the store keeps it."""
    flow = write_flow(
        tmp_path,
        """
        flow: surrogates
        source: {connector: file, path: unused.ndjson}
        steps:
          - fail: "refused {{ record.name }}"
        """,
    )
    eng = Engine(state=tmp_path / "s.db")
    result = eng.run(flow, records=[{"id": "k\ud800", "name": "x\udfff"}])
    assert (result.status, result.counts["dead_lettered"]) == ("dead_lettered", 1)
    with closing(SqliteStore(tmp_path / "s.db")) as store:
        [letter] = store.dead_letters()
    assert letter.record == {"id": "k\ud800", "name": "x\udfff"}  # JSON columns: as it was
    assert letter.record_key == "k\\ud800"  # plain text: escaped, readable
