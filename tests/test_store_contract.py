"""Both state stores pass the store contract (SQLite, and PostgreSQL on a real server the
tests start); the dry run's null store writes nothing."""

from __future__ import annotations

import dataclasses

import pytest

from engine.outcomes import Outcome
from engine.store import NullStore, Progress, SqliteStore, StateStore, Trace
from engine.store.contract import FLOW, StoreContract, _key


class TestSqliteStoreContract(StoreContract):
    def open_store(self, tmp_path):
        return SqliteStore(tmp_path / "state.db")


class TestPostgresStoreContract(StoreContract):
    """The same suite on PostgreSQL: one database per test, opened once per handle."""

    @pytest.fixture(autouse=True)
    def _database(self, postgres_state):
        self.dsn = postgres_state

    def open_store(self, tmp_path):
        from engine.store.postgres import PostgresStore

        return PostgresStore(self.dsn)


def test_the_null_store_reads_through_and_writes_nothing(tmp_path):
    with SqliteStore(tmp_path / "state.db") as real:
        real.write_keys(FLOW, [_key("k1")])
        real.commit_progress(FLOW, Progress("run-1", cursor=5))
    before = (tmp_path / "state.db").read_bytes()
    with NullStore(SqliteStore(tmp_path / "state.db", readonly=True)) as dry:
        assert isinstance(dry, StateStore)
        assert dry.get_key(FLOW, "k1") is not None and dry.cursor(FLOW).position == 5
        dry.write_keys(FLOW, [_key("k2")])
        trace = Trace("run-2", FLOW, "1", Outcome.DONE, [], None, 0.0)
        assert dry.commit_progress(FLOW, Progress("run-2", traces=[trace], cursor=9)) == []
        assert dry.get_key(FLOW, "k2") is None and dry.cursor(FLOW).position == 5
        assert dry.acquire_lease(FLOW, "me", 60) is None and dry.oldest_run(FLOW) is None
    assert (tmp_path / "state.db").read_bytes() == before
    with NullStore() as nothing:  # a dry run before any state exists
        assert nothing.get_key(FLOW, "k1") is None and nothing.cursor(FLOW) is None


class _CarelessStore(SqliteStore):
    """A store that breaks the contract: it drops the cursor of a commit, adds a new item
    for a failure that is already open, and forgets the responses of keys."""

    def commit_progress(self, flow, progress):
        progress.cursor = None
        for item in progress.items:  # each failure a new item, the open one closed
            for known in self.dead_letters(flow):
                if (known.record_key, known.step) == (item.record_key, item.step):
                    self.close_dead_letter(known.id, "superseded", progress.run_id)
        return super().commit_progress(flow, progress)

    def write_keys(self, flow, writes):
        super().write_keys(flow, [dataclasses.replace(w, response=None) for w in writes])


def test_the_contract_fails_a_store_that_breaks_it(tmp_path):
    class Contract(StoreContract):
        def open_store(self, tmp_path):
            return _CarelessStore(tmp_path / "state.db")

    suite = Contract()
    for n, check in enumerate(
        (
            suite.test_the_cursor_moves_only_with_a_commit_that_moves_it,
            suite.test_the_same_failure_again_refreshes_its_open_item,
            suite.test_a_key_is_read_back_as_written_with_its_response,
        )
    ):
        (tmp_path / str(n)).mkdir()
        with suite.open_store(tmp_path / str(n)) as store, pytest.raises(AssertionError):
            check(store)
