"""The state store contract: a pytest suite any :class:`StateStore` runs against itself.

The SQLite store passes it (tests/test_store_contract.py); a second store (PostgreSQL)
must pass it unchanged. Subclass it in a test module and say how to open the store::

    from engine.store.contract import StoreContract

    class TestMyStoreContract(StoreContract):
        def open_store(self, tmp_path):
            return MyStore(dsn_for(tmp_path))

``open_store`` is called once per handle: called twice in one test, it must open the same
state twice, as two processes would. Each test starts from an empty state.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from engine.errors import LockHeld
from engine.outcomes import Outcome
from engine.store.protocol import StateStore
from engine.store.rows import (
    DigestWrite,
    InboxEvent,
    KeyWrite,
    ParkedItem,
    Progress,
    SendState,
    Trace,
)
from engine.store.work_rows import CompensationWrite

__all__ = ["StoreContract"]

FLOW = "orders_to_erp"


def _key(key: str, state: SendState = SendState.DONE, **kw: object) -> KeyWrite:
    facts: dict[str, object] = {
        "fingerprint": "fp-" + key,
        "sent_key": key + "#1",
        "step": "post",
        "record_key": key,
        "run_id": "run-1",
        **kw,
    }
    return KeyWrite(key=key, state=state, **facts)  # type: ignore[arg-type]


def _trace(record_key: str, outcome: Outcome = Outcome.DONE, run_id: str = "run-1") -> Trace:
    steps: list[list[object]] = [["map", "mapped"], ["post", "sent", {"status": 201}]]
    return Trace(run_id, FLOW, record_key, outcome, steps, None, time.time())


def _letter(record_key: str, step: str = "post", run_id: str = "run-1") -> ParkedItem:
    return ParkedItem(
        kind="dead_letter",
        run_id=run_id,
        record_key=record_key,
        step=step,
        message="the target answered 422",
        attempts=2,
        record={"id": record_key, "total": Decimal("10.50")},
        source_record={"id": record_key},
        context={"meta": {"key": record_key, "line": 3}},
        line=3,
        error_class="PermanentError",
    )


def _review(record_key: str, queue: str = "finance", run_id: str = "run-1") -> ParkedItem:
    return ParkedItem(
        kind="review",
        run_id=run_id,
        record_key=record_key,
        step="check_total",
        message="the ERP's total differs",
        record={"id": record_key},
        queue=queue,
        figures={"total": {"expected": Decimal("10.50"), "actual": Decimal("10.05")}},
    )


class StoreContract:
    """The behaviour every state store promises the engine; subclass it in a test module."""

    def open_store(self, tmp_path: Path) -> StateStore:
        """Open the store under test over the state that belongs to ``tmp_path``."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        with self.open_store(tmp_path) as store:
            yield store

    def _run(self, store: StateStore, run_id: str = "run-1", flow: str = FLOW) -> None:
        store.start_run(run_id, flow, vars={"day": "2026-12-01"}, holder="host:1")

    # -- the protocol and its lifecycle -------------------------------------------------------
    def test_is_a_state_store(self, store: StateStore) -> None:
        assert isinstance(store, StateStore)
        assert store.schema_version() >= 1

    def test_closing_twice_is_harmless(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path)
        store.close()
        store.close()

    def test_what_one_handle_commits_another_reads(self, tmp_path: Path) -> None:
        with self.open_store(tmp_path) as first:
            first.write_keys(FLOW, [_key("k1")])
            first.commit_progress(FLOW, Progress("run-1", traces=[_trace("1")], cursor=7))
        with self.open_store(tmp_path) as second:
            found = second.get_key(FLOW, "k1")
            assert found is not None and found.state == SendState.DONE
            cursor = second.cursor(FLOW)
            assert cursor is not None and cursor.position == 7
            assert [t.record_key for t in second.trace("1")] == ["1"]

    # -- idempotency keys ------------------------------------------------------------------------
    def test_a_key_is_read_back_as_written_with_its_response(self, store: StateStore) -> None:
        assert store.get_key(FLOW, "order:1") is None
        store.write_keys(FLOW, [_key("order:1", response={"id": 7, "total": Decimal("9.90")})])
        store.write_keys(FLOW, [_key("order:2", response={"total": 9.9})])
        second = store.get_key(FLOW, "order:2")
        assert second is not None and second.response == {"total": Decimal("9.9")}
        found = store.get_key(FLOW, "order:1")
        assert found is not None
        assert (found.key, found.state, found.fingerprint, found.sent_key, found.run_id) == (
            "order:1",
            "done",
            "fp-order:1",
            "order:1#1",
            "run-1",
        )
        # money stays exact: a Decimal comes back as its exact text, a fraction as a Decimal
        assert found.response == {"id": 7, "total": "9.90"}
        assert found.updated_at > 0
        assert store.get_key("another_flow", "order:1") is None

    def test_a_key_state_replaces_the_last_one(self, store: StateStore) -> None:
        store.write_keys(FLOW, [_key("order:1", SendState.IN_FLIGHT)])
        assert [k.key for k in store.keys_in_flight(FLOW)] == ["order:1"]
        store.write_keys(FLOW, [_key("order:1", SendState.DONE, response={"ok": True})])
        found = store.get_key(FLOW, "order:1")
        assert found is not None and found.state == "done" and found.response == {"ok": True}
        assert store.keys_in_flight(FLOW) == []

    def test_keys_written_together_are_all_kept(self, store: StateStore) -> None:
        store.write_keys(FLOW, [_key(f"k{i}", SendState.IN_FLIGHT) for i in range(5)])
        assert sorted(k.key for k in store.keys_in_flight(FLOW)) == [f"k{i}" for i in range(5)]
        store.write_keys(FLOW, [])

    def test_keys_written_from_several_threads_are_all_kept(self, store: StateStore) -> None:
        def write(lane: int) -> None:
            for i in range(20):
                store.write_keys(FLOW, [_key(f"lane{lane}:{i}")])

        threads = [threading.Thread(target=write, args=(lane,)) for lane in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(
            store.get_key(FLOW, f"lane{lane}:{i}") is not None
            for lane in range(4)
            for i in range(20)
        )

    def test_the_last_write_of_a_key_in_one_call_wins(self, store: StateStore) -> None:
        # group commit writes an earlier request's outcome and the next mark together,
        # in the order they happened, and may hold several states of one key
        store.write_keys(
            FLOW,
            [
                _key("k", SendState.IN_FLIGHT),
                _key("k", SendState.DONE, response={"n": 1}),
                _key("j", SendState.DONE),
                _key("j", SendState.IN_FLIGHT, sent_key="j#2"),
            ],
        )
        k, j = store.get_key(FLOW, "k"), store.get_key(FLOW, "j")
        assert k is not None and (k.state, k.response) == ("done", {"n": 1})
        assert j is not None and (j.state, j.sent_key) == ("in_flight", "j#2")

    # -- progress ----------------------------------------------------------------------------------
    def test_the_cursor_moves_only_with_a_commit_that_moves_it(self, store: StateStore) -> None:
        assert store.cursor(FLOW) is None
        store.commit_progress(FLOW, Progress("run-1", cursor={"offset": 3, "file": "a.ndjson"}))
        moved = store.cursor(FLOW)
        assert moved is not None and moved.position == {"offset": 3, "file": "a.ndjson"}
        store.commit_progress(FLOW, Progress("run-1", traces=[_trace("4")]))
        stayed = store.cursor(FLOW)
        assert stayed is not None and stayed.position == {"offset": 3, "file": "a.ndjson"}
        assert store.cursor("another_flow") is None

    def test_a_group_commits_its_keys_with_its_traces_and_cursor(self, tmp_path: Path) -> None:
        # group commit: the keys of a target that holds a group are committed with the
        # records' final states and the cursor, in one transaction, the last state of a
        # key winning; and what one handle committed is what another reads
        with self.open_store(tmp_path) as store:
            store.write_keys(FLOW, [_key("order:1", SendState.IN_FLIGHT)])
            store.commit_progress(
                FLOW,
                Progress(
                    "run-1",
                    traces=[_trace("1"), _trace("2")],
                    cursor={"id": 2},
                    keys=[
                        _key("order:1", response={"rowid": 1}),
                        _key("order:2", SendState.FAILED),
                        _key("order:2", response={"rowid": 2, "total": Decimal("9.90")}),
                    ],
                ),
            )
        with self.open_store(tmp_path) as other:
            one, two = other.get_key(FLOW, "order:1"), other.get_key(FLOW, "order:2")
            assert one is not None and (one.state, one.response) == ("done", {"rowid": 1})
            assert two is not None and two.state == "done"
            assert two.response == {"rowid": 2, "total": "9.90"}
            assert other.keys_in_flight(FLOW) == []
            cursor = other.cursor(FLOW)
            assert cursor is not None and cursor.position == {"id": 2}
            assert {t.record_key for t in other.run_records("run-1")} == {"1", "2"}

    def test_a_commit_that_fails_keeps_none_of_its_group(self, store: StateStore) -> None:
        # a trace that cannot be written (a record key no database can hold) fails the
        # whole commit: its keys and its cursor are not kept either, so no record is passed
        store.commit_progress(FLOW, Progress("run-1", cursor=1))
        broken = _trace("2")
        broken.record_key = object()  # type: ignore[assignment]
        bad = Progress("run-1", traces=[_trace("1"), broken], cursor=2, keys=[_key("order:2")])
        with pytest.raises(Exception):  # noqa: B017 (each store raises its own kind)
            store.commit_progress(FLOW, bad)
        assert store.get_key(FLOW, "order:2") is None
        cursor = store.cursor(FLOW)
        assert cursor is not None and cursor.position == 1
        assert store.run_records("run-1") == []

    def test_marks_and_commits_from_several_threads_are_all_kept(self, store: StateStore) -> None:
        # lanes mark keys in flight while the runner commits a group
        def mark(lane: int) -> None:
            for i in range(20):
                store.write_keys(FLOW, [_key(f"lane{lane}:{i}", SendState.IN_FLIGHT)])

        def commit() -> None:
            for i in range(20):
                store.commit_progress(
                    FLOW, Progress("run-1", traces=[_trace(f"g{i}")], keys=[_key(f"group:{i}")])
                )

        threads = [threading.Thread(target=mark, args=(lane,)) for lane in range(3)]
        threads.append(threading.Thread(target=commit))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(store.keys_in_flight(FLOW)) == 60
        assert all(store.get_key(FLOW, f"group:{i}") is not None for i in range(20))
        assert len(store.run_records("run-1")) == 20

    def test_traces_and_items_are_written_and_their_ids_returned_in_order(
        self, store: StateStore
    ) -> None:
        self._run(store)
        ids = store.commit_progress(
            FLOW,
            Progress(
                "run-1",
                traces=[_trace("1"), _trace("2", Outcome.DEAD_LETTERED), _trace("3")],
                items=[_letter("2"), _review("3")],
            ),
        )
        assert len(ids) == 2 and len(set(ids)) == 2
        letter = store.dead_letter(ids[0])
        assert letter is not None
        assert (letter.flow, letter.record_key, letter.step, letter.status) == (
            FLOW,
            "2",
            "post",
            "open",
        )
        assert (letter.error_class, letter.attempts, letter.line) == ("PermanentError", 2, 3)
        assert letter.record == {"id": "2", "total": "10.50"}
        assert letter.source_record == {"id": "2"}
        assert letter.context == {"meta": {"key": "2", "line": 3}}
        review = store.review(ids[1])
        assert review is not None
        assert (review.queue, review.reason, review.status) == (
            "finance",
            "the ERP's total differs",
            "open",
        )
        assert review.figures["total"]["actual"] == "10.05"
        # a dead letter is no review item and a review item no dead letter
        assert store.review(ids[0]) is None and store.dead_letter(ids[1]) is None
        traces = store.run_records("run-1")
        assert [(t.record_key, t.outcome) for t in traces] == [
            ("1", "done"),
            ("2", "dead_lettered"),
            ("3", "done"),
        ]
        assert traces[0].steps == [["map", "mapped"], ["post", "sent", {"status": 201}]]
        [traced] = store.trace("2")
        assert (traced.run_id, traced.flow, traced.outcome, traced.kind) == (
            "run-1",
            FLOW,
            Outcome.DEAD_LETTERED,
            "run",
        )
        assert store.trace("2", flow="another_flow") == []
        assert store.open_item_keys(FLOW) == {"2", "3"}

    def test_the_same_failure_again_refreshes_its_open_item(self, store: StateStore) -> None:
        [first] = store.commit_progress(FLOW, Progress("run-1", items=[_letter("2")]))
        [again] = store.commit_progress(
            FLOW, Progress("run-2", items=[_letter("2", run_id="run-2")])
        )
        assert again == first
        [letter] = store.dead_letters(FLOW)
        assert letter.run_id == "run-2"
        [elsewhere] = store.commit_progress(FLOW, Progress("run-3", items=[_letter("2", "map")]))
        assert elsewhere != first
        assert len(store.dead_letters(FLOW)) == 2

    def test_a_record_that_went_through_resolves_its_open_items(self, store: StateStore) -> None:
        ids = store.commit_progress(FLOW, Progress("run-1", items=[_letter("2"), _review("3")]))
        store.commit_progress(FLOW, Progress("run-2", resolved=["2", "3"]))
        letter, review = store.dead_letter(ids[0]), store.review(ids[1])
        assert letter is not None and (letter.status, letter.replay_run) == ("resolved", "run-2")
        assert review is not None and (review.status, review.resolved_run) == (
            "resolved",
            "run-2",
        )
        assert store.open_item_keys(FLOW) == set()

    def test_record_digests_are_remembered_and_forgotten(self, store: StateStore) -> None:
        now = time.time()
        store.commit_progress(
            FLOW,
            Progress(
                "run-1",
                digests=[
                    DigestWrite("1", "d1", "done", "run-1", now),
                    DigestWrite("2", "d2", "filtered", "run-1", now),
                ],
            ),
        )
        one = store.record_digest(FLOW, "1")
        assert one is not None and (one.digest, one.outcome, one.run_id) == ("d1", "done", "run-1")
        store.commit_progress(FLOW, Progress("run-2", digests=[DigestWrite("1", None, "", "", 0)]))
        assert store.record_digest(FLOW, "1") is None
        assert store.record_digest(FLOW, "2") is not None
        store.forget_record_digests(FLOW)
        assert store.record_digest(FLOW, "2") is None

    def test_what_the_source_delivers_again_is_kept_alive(self, store: StateStore) -> None:
        then = time.time() - 3600
        store.write_keys(FLOW, [_key("a", source_key="1"), _key("b", SendState.IN_FLIGHT)])
        store.write_keys(FLOW, [_key("c")])
        store.commit_progress(
            FLOW, Progress("run-1", digests=[DigestWrite("1", "d1", "done", "run-1", then)])
        )
        before = {k: store.get_key(FLOW, k) for k in "abc"}
        time.sleep(0.02)
        store.commit_progress(FLOW, Progress("run-2", seen_records=["1"], seen_keys=["c", "b"]))
        after = {k: store.get_key(FLOW, k) for k in "abc"}
        digest = store.record_digest(FLOW, "1")
        assert digest is not None and digest.at > then
        a0, a1, b0, b1, c0, c1 = (x for k in "abc" for x in (before[k], after[k]))
        assert a0 and a1 and a1.updated_at > a0.updated_at  # the record's key, with it
        assert c0 and c1 and c1.updated_at > c0.updated_at  # a duplicate send
        assert b0 and b1 and b1.updated_at == b0.updated_at  # in flight: never refreshed

    # -- runs --------------------------------------------------------------------------------------
    def test_runs_are_listed_newest_first_and_found_by_a_prefix(self, store: StateStore) -> None:
        store.start_run("20261201T000000-aaaaaa", FLOW, vars={"day": "1"}, holder="h:1")
        time.sleep(0.01)
        store.start_run("20261201T000001-bbbbbb", FLOW, kind="replay", holder="h:1")
        time.sleep(0.01)
        store.start_run("20261201T000002-cccccc", "another_flow")
        store.finish_run("20261201T000000-aaaaaa", "dead_lettered", {"read": 2}, 1, "one failed")
        assert [r.run_id[-6:] for r in store.list_runs()] == ["cccccc", "bbbbbb", "aaaaaa"]
        assert [r.run_id[-6:] for r in store.list_runs(FLOW, limit=1)] == ["bbbbbb"]
        run = store.get_run("20261201T000000")
        assert run is not None
        assert (run.flow, run.status, run.counts, run.exit_code, run.message, run.kind) == (
            FLOW,
            "dead_lettered",
            {"read": 2},
            1,
            "one failed",
            "run",
        )
        assert run.vars == {"day": "1"} and run.ended_at is not None and run.holder == "h:1"
        assert store.get_run("20261201T00000") is None  # three runs start so
        assert store.get_run("nothing") is None
        assert store.run_vars(["20261201T000000-aaaaaa", "20261201T000001-bbbbbb", "x"]) == {
            "20261201T000000-aaaaaa": {"day": "1"},
            "20261201T000001-bbbbbb": {},
        }

    def test_runs_that_never_ended_are_marked_crashed(self, store: StateStore) -> None:
        self._run(store, "run-1")
        self._run(store, "run-2")
        store.finish_run("run-2", "ok", {}, 0)
        assert store.oldest_run(FLOW) is not None  # the finished one
        assert store.mark_abandoned_runs(FLOW) == 1
        run = store.get_run("run-1")
        assert run is not None and run.status == "crashed"

    def test_the_oldest_run_counts_finished_runs_only(self, store: StateStore) -> None:
        self._run(store, "run-1")
        assert store.oldest_run(FLOW) is None
        store.finish_run("run-1", "ok", {}, 0)
        started = store.get_run("run-1")
        assert started is not None and store.oldest_run(FLOW) == started.started_at

    # -- dead letters and review items --------------------------------------------------------
    def test_dead_letters_are_listed_closed_and_purged(self, store: StateStore) -> None:
        ids = store.commit_progress(
            FLOW, Progress("run-1", items=[_letter("1"), _letter("2"), _review("3")])
        )
        store.commit_progress("another_flow", Progress("run-2", items=[_letter("9")]))
        assert [d.record_key for d in store.dead_letters(FLOW)] == ["1", "2"]
        assert [d.record_key for d in store.dead_letters()] == ["1", "2", "9"]
        store.close_dead_letter(ids[0], "replayed", "run-3")
        assert [d.record_key for d in store.dead_letters(FLOW)] == ["2"]
        [closed] = store.dead_letters(FLOW, status="replayed")
        assert (closed.id, closed.replay_run) == (ids[0], "run-3")
        assert len(store.dead_letters(FLOW, status=None)) == 2
        assert len(store.dead_letters(status=None, limit=1)) == 1
        assert store.purge_dead_letters([ids[1], ids[2]]) == 1  # review items stay
        assert store.purge_dead_letters(flow="another_flow") == 1
        assert store.purge_dead_letters() == 1
        assert store.dead_letters(status=None) == []
        assert store.review(ids[2]) is not None

    def test_review_items_are_listed_by_queue_and_closed_by_a_person(
        self, store: StateStore
    ) -> None:
        ids = store.commit_progress(
            FLOW, Progress("run-1", items=[_review("1"), _review("2", "returns"), _letter("3")])
        )
        assert [r.record_key for r in store.reviews()] == ["1", "2"]
        assert [r.record_key for r in store.reviews(FLOW, queue="returns")] == ["2"]
        assert store.reviews("another_flow") == []
        closed = store.close_review(ids[0], "ann", "voided in the shop")
        assert (closed.status, closed.decided_by, closed.comment) == (
            "closed",
            "ann",
            "voided in the shop",
        )
        assert closed.decided_at is not None and closed.decided_at > 0
        assert [r.record_key for r in store.reviews()] == ["2"]
        assert [r.status for r in store.reviews(status=None)] == ["closed", "open"]
        with pytest.raises(ValueError, match="not open"):
            store.close_review(ids[0], "bob")
        with pytest.raises(LookupError):
            store.close_review(ids[2], "bob")  # a dead letter
        with pytest.raises(LookupError):
            store.close_review(10_000, "bob")

    # -- work items: owners, decisions, SLAs -----------------------------------------------------
    def test_every_item_is_a_work_item_with_a_queue_owner_category_and_due_time(
        self, store: StateStore
    ) -> None:
        approval = _review("1", "finance")
        approval.kind, approval.owner, approval.category = "approval", "fin", "above_limit"
        approval.due_s, approval.escalate_to = 3600.0, {"owner": "cfo"}
        letter = _letter("2")
        letter.queue, letter.owner, letter.category = "dead_letters", "ops", "PermanentError"
        ids = store.commit_progress(FLOW, Progress("run-1", items=[approval, letter]))
        items = store.work_items()
        assert [(i.id, i.kind, i.queue, i.owner, i.category) for i in items] == [
            (ids[0], "approval", "finance", "fin", "above_limit"),
            (ids[1], "dead_letter", "dead_letters", "ops", "PermanentError"),
        ]
        first = items[0]
        assert first.due_at is not None and first.due_at == first.created_at + 3600
        assert [h["event"] for h in first.history] == ["created"]
        assert store.work_items("approval", owner="fin") == [first]
        assert store.work_items(queue="nowhere") == []
        found = store.approval(FLOW, "1", "check_total")
        assert found is not None and found.id == ids[0]

    def test_an_approval_is_decided_once_and_resumed_once(self, store: StateStore) -> None:
        approval = _review("1")
        approval.kind = "approval"
        [id] = store.commit_progress(FLOW, Progress("run-1", items=[approval]))
        with pytest.raises(ValueError, match="approved or rejected"):
            store.decide(id, "closed", "ann")
        decided = store.decide(id, "approved", "ann", "fine", at=1000.0)
        assert (decided.status, decided.decided_by, decided.decided_at) == ("approved", "ann", 1000)
        assert decided.history[-1]["record"] == {"id": "1"}
        with pytest.raises(ValueError, match="not open"):
            store.decide(id, "rejected", "bob")
        with pytest.raises(LookupError):
            store.decide(10_000, "approved", "bob")
        assert [i.id for i in store.to_resume(FLOW)] == [id]
        store.mark_resumed([id], "run-2")
        assert store.to_resume(FLOW) == []
        resumed = store.work_item(id)
        assert resumed is not None and resumed.resumed_run == "run-2"
        # decided and not yet resumed, an approval outlives prune
        other = _review("2")
        other.kind = "approval"
        [kept] = store.commit_progress(FLOW, Progress("run-1", items=[other]))
        store.decide(kept, "rejected", "bob")
        time.sleep(0.02)
        store.prune(0, FLOW)
        assert store.work_item(kept) is not None and store.work_item(id) is None

    def test_two_handles_deciding_the_same_approvals_at_once_decide_each_once(
        self, tmp_path: Path
    ) -> None:
        """Two people (two processes) decide the same approvals at the same moment: each
        approval takes one decision, the other is told it is no longer open."""
        items = []
        for n in range(20):
            approval = _review(str(n))
            approval.kind = "approval"
            items.append(approval)
        with self.open_store(tmp_path) as setup:
            ids = setup.commit_progress(FLOW, Progress("run-1", items=items))
        won: dict[str, list[int]] = {"approved": [], "rejected": []}
        refused: dict[str, list[int]] = {"approved": [], "rejected": []}
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def decide_all(decision: str, order: list[int]) -> None:
            try:
                with self.open_store(tmp_path) as handle:
                    start.wait()
                    for id in order:
                        try:
                            handle.decide(id, decision, decision[:3])
                            won[decision].append(id)
                        except ValueError:
                            refused[decision].append(id)
            except BaseException as exc:  # seen by the test, not lost in the thread
                errors.append(exc)

        threads = [
            threading.Thread(target=decide_all, args=("approved", ids)),
            threading.Thread(target=decide_all, args=("rejected", ids)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(won["approved"] + won["rejected"]) == sorted(ids)
        assert sorted(won["approved"]) == sorted(refused["rejected"])
        with self.open_store(tmp_path) as after:
            for id in ids:
                item = after.work_item(id)
                assert item is not None
                decisions = [h["event"] for h in item.history if h["event"] != "created"]
                assert decisions == [item.status]
                assert item.decided_by == item.status[:3]

    def test_two_handles_escalating_at_once_escalate_each_item_once(self, tmp_path: Path) -> None:
        items = []
        for n in range(20):
            item = _review(str(n), "finance")
            item.owner, item.due_s, item.escalate_to = "fin", 60.0, {"owner": "lead"}
            items.append(item)
        with self.open_store(tmp_path) as setup:
            ids = setup.commit_progress(FLOW, Progress("run-1", items=items))
        later = time.time() + 120
        escalated: list[list[int]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def escalate() -> None:
            try:
                with self.open_store(tmp_path) as handle:
                    start.wait()
                    escalated.append([i.id for i in handle.escalate_due(later)])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=escalate) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(escalated[0] + escalated[1]) == sorted(ids)
        with self.open_store(tmp_path) as after:
            for id in ids:
                found = after.work_item(id)
                assert found is not None and found.owner == "lead"
                assert [h["event"] for h in found.history].count("escalated") == 1

    def test_items_past_due_are_escalated_once(self, store: StateStore) -> None:
        item = _review("1", "finance")
        item.owner, item.due_s, item.escalate_to = "fin", 60.0, {"queue": "leads"}
        [id] = store.commit_progress(FLOW, Progress("run-1", items=[item]))
        created = store.work_item(id)
        assert created is not None and created.due_at is not None
        assert store.escalate_due(created.due_at - 1) == []
        [escalated] = store.escalate_due(created.due_at + 5)
        assert (escalated.queue, escalated.owner, escalated.breached) == ("leads", "fin", True)
        assert escalated.escalated_at == created.due_at + 5
        assert store.escalate_due(created.due_at + 500) == []
        # the record held again keeps the escalated queue
        store.commit_progress(FLOW, Progress("run-2", items=[_review("1", run_id="run-2")]))
        again = store.work_item(id)
        assert again is not None and again.queue == "leads" and again.run_id == "run-2"

    def test_compensations_are_kept_until_run_or_settled(self, store: StateStore) -> None:
        store.write_keys(FLOW, [_key("draft:1", source_key="1")])
        for step, key in (("draft", "draft:1"), ("reserve", "reserve:1")):
            store.add_compensation(
                FLOW,
                CompensationWrite("1", "1", step, key, "run-1", record={"id": 1, "k": key}),
            )
        store.add_compensation(FLOW, CompensationWrite("2", "2", "draft", "draft:2", "run-1"))
        pending = store.compensations(FLOW, "1")
        assert [(c.step, c.key, c.record) for c in pending] == [
            ("draft", "draft:1", {"id": 1, "k": "draft:1"}),
            ("reserve", "reserve:1", {"id": 1, "k": "reserve:1"}),
        ]
        store.finish_compensation(pending[1].id, "run-2", error="the target answered 500")
        store.finish_compensation(pending[0].id, "run-2", response={"cancelled": True})
        [still] = store.compensations(FLOW, "1")
        assert (still.step, still.error) == ("reserve", "the target answered 500")
        undone = store.get_key(FLOW, "draft:1")
        assert undone is not None and undone.state == SendState.COMPENSATED
        store.settle_compensations(FLOW, "2")
        assert store.compensations(FLOW, "2") == []
        assert [c.state for c in store.compensations(FLOW, "2", state=None)] == ["settled"]

    def test_traces_are_read_back_for_stats_with_start_and_labels(self, store: StateStore) -> None:
        self._run(store)
        early = _trace("1")
        early.started_at, early.labels = early.at - 2, {"store": "S1"}
        store.commit_progress(FLOW, Progress("run-1", traces=[early, _trace("2")]))
        traces = list(store.traces_since(None, FLOW))
        assert [(t.record_key, t.labels, t.kind) for t in traces] == [
            ("1", {"store": "S1"}, "run"),
            ("2", None, "run"),
        ]
        assert traces[0].started_at == early.at - 2
        assert list(store.traces_since(time.time() + 60)) == []

    # -- leases ------------------------------------------------------------------------------------
    def test_a_lease_is_held_renewed_and_released(self, store: StateStore) -> None:
        assert store.acquire_lease(FLOW, "me:run-1", 60) is None
        lease = store.lease(FLOW)
        assert lease is not None and lease.holder == "me:run-1"
        assert lease.expires_at > time.time() + 50
        with pytest.raises(LockHeld, match="being run by me:run-1"):
            store.acquire_lease(FLOW, "you:run-2", 60)
        assert store.acquire_lease("another_flow", "you:run-2", 60) is None
        assert store.renew_lease(FLOW, "me:run-1", 60) is True
        assert store.renew_lease(FLOW, "you:run-2", 60) is False
        store.release_lease(FLOW, "you:run-2")  # not the holder: nothing happens
        assert store.lease(FLOW) is not None
        store.release_lease(FLOW, "me:run-1")
        assert store.lease(FLOW) is None
        assert store.acquire_lease(FLOW, "you:run-2", 60) is None

    def test_an_expired_lease_is_taken_over(self, store: StateStore) -> None:
        store.acquire_lease(FLOW, "me:run-1", 0.05)
        time.sleep(0.1)
        assert store.acquire_lease(FLOW, "you:run-2", 60) is None
        assert store.renew_lease(FLOW, "me:run-1", 60) is False  # it lost the lease
        lease = store.lease(FLOW)
        assert lease is not None and lease.holder == "you:run-2"

    # -- retention ---------------------------------------------------------------------------------
    def test_prune_deletes_what_is_old_and_finished_and_keeps_the_rest(
        self, store: StateStore
    ) -> None:
        self._run(store, "old")
        store.finish_run("old", "ok", {}, 0)
        self._run(store, "still-running")
        ids = store.commit_progress(
            FLOW,
            Progress(
                "old",
                traces=[_trace("1", run_id="old")],
                items=[_letter("1", run_id="old"), _letter("2", run_id="old")],
                digests=[DigestWrite("1", "d1", "done", "old", time.time())],
            ),
        )
        store.close_dead_letter(ids[0], "replayed", "old")
        store.write_keys(FLOW, [_key("done", source_key="1"), _key("sent", SendState.IN_FLIGHT)])
        time.sleep(0.02)
        assert store.prune(3600).counts() == {"traces": 0, "runs": 0, "dead_letters": 0, "keys": 0}
        pruned = store.prune(0, FLOW)
        assert pruned.counts() == {"traces": 1, "runs": 1, "dead_letters": 1, "keys": 1}
        assert pruned.run_ids == ["old"]
        assert store.get_run("old") is None and store.get_run("still-running") is not None
        assert [d.record_key for d in store.dead_letters(FLOW)] == ["2"]  # open: kept
        assert store.get_key(FLOW, "done") is None
        assert store.get_key(FLOW, "sent") is not None  # in flight: kept
        assert store.record_digest(FLOW, "1") is None  # its keys went: it goes through again

    # -- the inbox (events pushed to flowyard) -----------------------------------------------
    def test_an_event_is_kept_once_per_event_id(self, store: StateStore) -> None:
        body = b'{"id": 5234567890123456789, "total_price": "10.50"}'
        first = InboxEvent("ev-1", body, "orders/create", "shopify", {"x-shop": "a"}, 1.5)
        added = store.add_to_inbox(
            [(FLOW, first), (FLOW, InboxEvent("ev-2", b"{}")), (FLOW, InboxEvent("ev-1", b"x"))]
        )
        assert [(a.new, a.deliveries) for a in added] == [(True, 1), (True, 1), (False, 2)]
        assert added[0].id == added[2].id != added[1].id
        [again] = store.add_to_inbox([("another_flow", InboxEvent("ev-1", b"{}"))])
        assert again.new  # event ids are per flow
        assert store.inbox_depth() == {FLOW: 2, "another_flow": 1}
        assert store.inbox_depth(FLOW) == {FLOW: 2}
        kept = store.inbox_events(FLOW)
        assert [(e.event_id, e.status, e.deliveries) for e in kept] == [
            ("ev-1", "pending", 2),
            ("ev-2", "pending", 1),
        ]
        assert kept[0].body == body  # the first delivery's bytes, exactly
        assert (kept[0].topic, kept[0].scheme, kept[0].headers) == (
            "orders/create",
            "shopify",
            {"x-shop": "a"},
        )
        assert kept[0].received_at == 1.5 and kept[1].received_at > 0

    def test_claims_are_held_by_one_holder_until_released(self, store: StateStore) -> None:
        store.add_to_inbox([(FLOW, InboxEvent(f"ev-{i}", b"{}")) for i in range(3)])
        mine = store.claim_inbox(FLOW, "me", 2, 60)
        assert [e.event_id for e in mine] == ["ev-0", "ev-1"]
        assert store.claim_inbox(FLOW, "me", 2, 60)[0].event_id == "ev-2"  # never twice
        assert store.claim_inbox(FLOW, "you", 10, 60) == []
        assert store.release_inbox(FLOW, "me") == 3
        assert [e.event_id for e in store.claim_inbox(FLOW, "you", 10, 60)] == [
            "ev-0",
            "ev-1",
            "ev-2",
        ]
        assert store.claim_inbox("another_flow", "you", 10, 60) == []

    def test_an_expired_claim_is_taken_over(self, store: StateStore) -> None:
        store.add_to_inbox([(FLOW, InboxEvent("ev-1", b"{}"))])
        assert len(store.claim_inbox(FLOW, "me", 10, 0.05)) == 1
        time.sleep(0.1)
        assert [e.event_id for e in store.claim_inbox(FLOW, "you", 10, 60)] == ["ev-1"]

    def test_events_are_done_with_the_commit_of_their_records(self, store: StateStore) -> None:
        [one, two] = store.add_to_inbox(
            [(FLOW, InboxEvent("ev-1", b"{}")), (FLOW, InboxEvent("ev-2", b"{}"))]
        )
        store.claim_inbox(FLOW, "me", 10, 60)
        store.commit_progress(FLOW, Progress("run-1", traces=[_trace("1")], inbox_done=[one.id]))
        store.release_inbox(FLOW, "me")
        assert store.inbox_depth(FLOW) == {FLOW: 1}
        [done] = store.inbox_events(FLOW, status="done")
        assert (done.id, done.run_id) == (one.id, "run-1") and done.done_at
        assert [e.id for e in store.claim_inbox(FLOW, "you", 10, 60)] == [two.id]
        # a done event's id is still known: a late duplicate is not kept again
        [late] = store.add_to_inbox([(FLOW, InboxEvent("ev-1", b"{}"))])
        assert not late.new
        assert store.prune_inbox(3600) == 0
        assert store.prune_inbox(0) == 1  # done and old: gone; pending stays
        assert [e.event_id for e in store.inbox_events(FLOW)] == ["ev-2"]

    def test_two_handles_claiming_at_once_never_share_an_event(self, tmp_path: Path) -> None:
        with self.open_store(tmp_path) as setup:
            setup.add_to_inbox([(FLOW, InboxEvent(f"ev-{i}", b"{}")) for i in range(200)])
        got: dict[str, list[int]] = {"a": [], "b": []}

        def claim(name: str) -> None:
            with self.open_store(tmp_path) as handle:
                while batch := handle.claim_inbox(FLOW, name, 7, 60):
                    got[name] += [e.id for e in batch]

        threads = [threading.Thread(target=claim, args=(n,)) for n in got]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not set(got["a"]) & set(got["b"])
        assert len(got["a"]) + len(got["b"]) == 200

    # -- schedules -------------------------------------------------------------------------------
    def test_a_schedule_slot_is_claimed_by_one_holder(self, tmp_path: Path) -> None:
        with self.open_store(tmp_path) as a, self.open_store(tmp_path) as b:
            assert a.schedule_state(FLOW) is None
            assert a.claim_schedule(FLOW, 120.0, "a") is True
            assert b.claim_schedule(FLOW, 120.0, "b") is False  # the same slot
            assert b.claim_schedule(FLOW, 60.0, "b") is False  # an earlier one
            state = b.schedule_state(FLOW)
            assert state is not None and (state.last_due, state.holder) == (120.0, "a")
            assert b.claim_schedule(FLOW, 180.0, "b") is True
            assert a.claim_schedule("another_flow", 120.0, "a") is True

    # -- monitoring -------------------------------------------------------------------------------
    def test_flow_health_counts_open_items_pending_events_and_last_runs(
        self, store: StateStore
    ) -> None:
        assert store.flow_health() == []
        store.start_run("run-1", FLOW)
        store.finish_run("run-1", "dead_lettered", {}, 1)
        time.sleep(0.01)
        store.start_run("run-2", FLOW)
        store.finish_run("run-2", "failed", {}, 3)
        store.commit_progress(
            FLOW,
            Progress("run-1", items=[_letter("1"), _letter("2"), _review("3"), _review("4", "x")]),
        )
        store.add_to_inbox([("hooked", InboxEvent("ev-1", b"{}"))])
        health = {h.flow: h for h in store.flow_health()}
        assert set(health) == {FLOW, "hooked"}
        mine = health[FLOW]
        assert (mine.dead_letters_open, mine.reviews_open, mine.inbox_pending) == (
            2,
            {"finance": 1, "x": 1},
            0,
        )
        first, second = store.get_run("run-1"), store.get_run("run-2")
        assert first is not None and second is not None
        assert (mine.last_run_at, mine.last_status) == (second.started_at, "failed")
        assert mine.last_success_at == first.ended_at  # dead-lettered: it ran to its end
        assert health["hooked"].inbox_pending == 1 and health["hooked"].last_run_at is None
