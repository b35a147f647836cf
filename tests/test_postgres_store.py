"""The PostgreSQL state, chosen with ``--state postgresql://...``, ``FLOWYARD_STATE`` or
``Engine(state=...)``: flows run on it as on a file, its layout is migrated by numbered
versions, and its password never shows."""

from __future__ import annotations

import threading

import psycopg
import pytest

from engine import Engine, StateError
from engine.store import StateLocation, mask_dsn, open_store, pg_schema
from engine.store.postgres import PostgresStore
from tests.conftest import flowyard, invoke, shop_order, write_flow, write_ndjson

FLOW = """
flow: orders_pg
connections:
  erp:
    connector: http
    base_url: "{{ vars.erp_url }}"
    retry: {attempts: 3, backoff: 0.01}
source: {connector: file, path: orders.ndjson}
steps:
  - name: post_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{ record.id }}"
      body: "{{ record }}"
"""


def test_a_flow_runs_on_a_postgres_state_from_the_command_line(tmp_path, target, postgres_dsn):
    flow = write_flow(tmp_path, FLOW)
    write_ndjson(tmp_path / "orders.ndjson", [shop_order(i) for i in range(1, 6)])
    args = ["run", flow, "--state", postgres_dsn, "--var", f"erp_url={target.url}"]
    first = invoke(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "read 5" in first.stdout and "done 5" in first.stdout
    again = invoke(*args, cwd=tmp_path)
    assert again.returncode == 0 and "skipped 5" in again.stdout
    assert len(target.applied) == 5  # the second run sent nothing: the keys are in PostgreSQL
    runs = invoke("runs", "list", "--state", postgres_dsn, "-o", "json", cwd=tmp_path)
    assert runs.returncode == 0 and runs.stdout.count('"orders_pg"') == 2
    # the same state through the environment, as a worker on another machine would see it
    traced = invoke(
        "trace", str(shop_order(3)["id"]), cwd=tmp_path, env={"FLOWYARD_STATE": postgres_dsn}
    )
    assert traced.returncode == 0 and "post_order" in traced.stdout
    # run logs of a database state are kept on each machine, under .flowyard/runs
    assert len(list((tmp_path / ".flowyard" / "runs").glob("*.jsonl"))) == 2


def test_the_library_takes_a_postgres_url_as_its_state(tmp_path, target, postgres_dsn, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run logs go under .flowyard/runs where the engine runs
    flow = write_flow(tmp_path, FLOW)
    write_ndjson(tmp_path / "orders.ndjson", [shop_order(1), shop_order(2)])
    eng = Engine(state=postgres_dsn)
    assert eng.state.shared and eng.state.dsn == postgres_dsn
    result = eng.run(flow, vars={"erp_url": target.url})
    assert result.counts["done"] == 2
    assert [r.run_id for r in eng.runs()] == [result.run_id]
    with eng.store() as store:
        assert isinstance(store, PostgresStore)
        assert store.get_key("orders_pg", f"order:{shop_order(1)['id']}") is not None


def test_a_dry_run_on_a_database_flowyard_never_wrote_changes_nothing(
    tmp_path, target, postgres_dsn, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    flow = write_flow(tmp_path, FLOW)
    write_ndjson(tmp_path / "orders.ndjson", [shop_order(1)])
    result = Engine(state=postgres_dsn).run(flow, vars={"erp_url": target.url}, dry_run=True)
    assert result.dry_run and len(result.would_send) == 1 and target.applied == []
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('flowyard')").fetchone() == (None,)


def test_a_password_in_the_url_is_never_shown(tmp_path, postgres_server):
    port = postgres_server.local.port if postgres_server.local else 5432
    dsn = f"postgresql://flowyard:s3cr3t-pw@127.0.0.1:{port}/nowhere"
    done = flowyard("runs", "list", "--state", dsn, cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    assert "s3cr3t-pw" not in done.stdout + done.stderr
    assert "postgresql://flowyard:***@127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr
    assert mask_dsn("host=db password=pw user=me") == "host=db password=*** user=me"
    assert str(StateLocation.of(dsn)) == f"postgresql://flowyard:***@127.0.0.1:{port}/nowhere"


def test_a_database_that_cannot_be_reached_is_a_state_error_naming_it(postgres_server):
    with pytest.raises(StateError, match=r"state database postgresql://x:\*\*\*@127\.0\.0\.1:1/"):
        open_store("postgresql://x:pw@127.0.0.1:1/db")


def test_a_new_database_gets_every_migration_recorded_once(postgres_dsn):
    opened: list[int] = []

    def open_one() -> None:  # four workers starting at once: one migrates, three find it done
        with PostgresStore(postgres_dsn) as store:
            opened.append(store.schema_version())

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opened == [pg_schema.LATEST] * 4
    with psycopg.connect(postgres_dsn) as conn:
        versions = conn.execute("SELECT version FROM flowyard.schema_versions").fetchall()
    assert versions == [(m.version,) for m in pg_schema.MIGRATIONS]


def test_a_state_written_by_a_newer_flowyard_is_refused_and_left_alone(postgres_state):
    with psycopg.connect(postgres_state, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO flowyard.schema_versions (version, description) VALUES (99, 'later')"
        )
    with pytest.raises(StateError, match="written by a newer flowyard .schema 99"):
        PostgresStore(postgres_state)
    done = flowyard("runs", "list", "--state", postgres_state)
    assert done.returncode == 4 and "newer flowyard" in done.stderr


def test_text_postgres_cannot_hold_is_stored_escaped(postgres_state):
    from engine.outcomes import Outcome
    from engine.store import Progress, Trace

    odd = "a\x00b\ud800c"  # a NUL and a lone surrogate, as a broken source might deliver
    with PostgresStore(postgres_state) as store:
        trace = Trace("run-1", "f", odd, Outcome.DONE, [["map", odd]], odd, 1.0)
        store.commit_progress("f", Progress("run-1", traces=[trace]))
        [back] = store.run_records("run-1")
    assert back.record_key == "a\\u0000b\\ud800c"  # readable text in a plain column
    assert back.steps == [["map", odd]]  # the same characters once a JSON column is decoded


def _approval(store: PostgresStore, key: str = "1") -> int:
    from engine.store import ParkedItem, Progress

    item = ParkedItem(
        kind="approval",
        run_id="run-1",
        record_key=key,
        step="approve_po",
        message="above the buyer's limit",
        record={"id": key},
        queue="buyers",
    )
    [id] = store.commit_progress("f", Progress("run-1", items=[item]))
    return id


def test_a_decision_taken_by_another_process_meanwhile_is_not_overwritten(postgres_state):
    """Another process holds the approval's row in the middle of its own decision: this
    one waits for it, then finds the approval decided and says so, changing nothing."""
    with PostgresStore(postgres_state) as store:
        id = _approval(store)
        with psycopg.connect(postgres_state, options="-c search_path=flowyard") as other:
            other.execute("SELECT status FROM dead_letters WHERE id = %s FOR UPDATE", (id,))
            outcome: list[BaseException | str] = []

            def decide() -> None:
                try:
                    outcome.append(store.decide(id, "rejected", "bob").status)
                except BaseException as exc:
                    outcome.append(exc)

            waiting = threading.Thread(target=decide)
            waiting.start()
            waiting.join(0.5)
            assert waiting.is_alive() and outcome == []  # it waits for the row
            other.execute(
                "UPDATE dead_letters SET status = 'approved', decided_by = 'ann' WHERE id = %s",
                (id,),
            )
            other.commit()
        waiting.join(10)
        [refused] = outcome
        assert isinstance(refused, ValueError) and "approval" in str(refused)
        assert "is approved, not open" in str(refused)
        item = store.work_item(id)
        assert item is not None and (item.status, item.decided_by) == ("approved", "ann")


def test_a_state_of_version_3_is_upgraded_in_place_keeping_its_items(postgres_dsn):
    """A state written before work items (version 3) gains them when opened: its dead
    letter becomes a work item created when it was last written, nothing else changes."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(pg_schema.VERSIONS_TABLE)
        conn.execute("SET search_path = flowyard")
        conn.execute(pg_schema.MIGRATIONS[0].sql)
        conn.execute("INSERT INTO schema_versions (version, description) VALUES (3, 'v3')")
        conn.execute(
            "INSERT INTO dead_letters (flow, run_id, record_key, step, message, at) "
            "VALUES ('f', 'run-1', '1042', 'post', 'the target answered 422', 1000.0)"
        )
    with PostgresStore(postgres_dsn) as store:
        assert store.schema_version() == pg_schema.LATEST
        [item] = store.work_items()
        assert (item.kind, item.record_key, item.created_at, item.history) == (
            "dead_letter",
            "1042",
            1000.0,
            [],
        )
        assert store.compensations("f") == [] and store.escalate_due(2000.0) == []
