"""Retention forgets what the source stopped delivering, never what it keeps delivering.

Time is made to pass by moving the state's own timestamps back (runs, keys, digests), as
the minutes between two cron runs would; everything else is a real run on a real file.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from engine import Engine
from tests.conftest import read_ndjson, write_flow, write_ndjson


def age(state, seconds: float) -> None:
    """Everything the state remembers happened ``seconds`` earlier."""
    with closing(sqlite3.connect(state)) as conn:
        conn.execute(
            "UPDATE runs SET started_at = started_at - ?, ended_at = ended_at - ?",
            (seconds, seconds),
        )
        conn.execute("UPDATE keys SET updated_at = updated_at - ?", (seconds,))
        conn.execute("UPDATE record_digests SET at = at - ?", (seconds,))
        conn.execute("UPDATE traces SET at = at - ?", (seconds,))
        conn.commit()


def export_flow(tmp_path, extra_step: str = "") -> object:
    return write_flow(
        tmp_path,
        f"""
        flow: full_export
        retention: 1m
        connections:
          out: {{connector: file}}
        source: {{connector: file, path: orders.ndjson}}
        steps:
          {extra_step}
          - name: deliver
            send: {{connection: out, path: sent.ndjson, record: "{{{{ record.id }}}}"}}
        """,
    )


@pytest.mark.parametrize(
    "extra_step",
    [
        "",  # records skipped as unchanged before their first step
        '- set: {seen_at: "{{ now_utc() }}"}',  # no digests: sends skipped as duplicates
    ],
    ids=["unchanged", "duplicates"],
)
def test_a_full_export_is_never_sent_again_because_of_pruning(tmp_path, extra_step):
    flow = export_flow(tmp_path, extra_step)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(20)])
    state = tmp_path / "state.db"
    eng = Engine(state=state)
    assert eng.run(flow).counts["done"] == 20
    for _ in range(4):  # every two minutes, the same 20 orders; a prune falls in between
        age(state, 120)
        result = eng.run(flow)
        assert result.counts["done"] == 0, result.counts
    assert sorted(read_ndjson(tmp_path / "sent.ndjson")) == list(range(20))
    with closing(sqlite3.connect(state)) as conn:
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert runs < 5  # pruning did run: the old runs are gone, the orders' keys are not


def test_what_the_source_stopped_delivering_is_forgotten(tmp_path):
    flow = export_flow(tmp_path)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(20)])
    state = tmp_path / "state.db"
    eng = Engine(state=state)
    eng.run(flow)
    write_ndjson(tmp_path / "orders.ndjson", [{"id": i} for i in range(10)])  # 10..19 gone
    for _ in range(3):
        age(state, 120)
        eng.run(flow)
    with closing(sqlite3.connect(state)) as conn:
        kept = {row[0] for row in conn.execute("SELECT record_key FROM keys")}
    assert kept == {str(i) for i in range(10)}
