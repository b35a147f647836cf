"""The SQLite state store passes the store contract; the dry run's null store writes nothing."""

from __future__ import annotations

from engine.outcomes import Outcome
from engine.store import NullStore, Progress, SqliteStore, StateStore, Trace
from engine.store.contract import FLOW, StoreContract, _key


class TestSqliteStoreContract(StoreContract):
    def open_store(self, tmp_path):
        return SqliteStore(tmp_path / "state.db")


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
