"""The store of a dry run: it writes nothing and answers from the real state, if any.

A dry run must show what a run would do without changing anything: it asks the state the
same questions (is this send a duplicate? where does the source resume?), so those are
answered by the state file opened read-only when there is one; every write is dropped,
and what only a writing run has (a lease, record digests, a run to prune) is absent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Self

from engine.store.protocol import StateStore
from engine.store.rows import (
    Cursor,
    DeadLetter,
    FlowHealth,
    InboxAdded,
    InboxEntry,
    InboxEvent,
    KeyState,
    KeyWrite,
    Lease,
    Progress,
    Pruned,
    RecordDigest,
    ReviewItem,
    Run,
    ScheduleState,
    Trace,
)
from engine.store.work_rows import Compensation, CompensationWrite, WorkItem


class NullStore:
    """A :class:`~engine.store.protocol.StateStore` that keeps nothing; reads go to
    ``reads_from`` (a read-only store, closed with this one) or find nothing."""

    def __init__(self, reads_from: StateStore | None = None):
        self.reads_from = reads_from

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        if self.reads_from is not None:
            self.reads_from.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        return self.reads_from.schema_version() if self.reads_from else 0

    # -- what a dry run reads --------------------------------------------------------------------
    def get_key(self, flow: str, key: str) -> KeyState | None:
        return self.reads_from.get_key(flow, key) if self.reads_from else None

    def keys_in_flight(self, flow: str) -> list[KeyState]:
        return self.reads_from.keys_in_flight(flow) if self.reads_from else []

    def cursor(self, flow: str) -> Cursor | None:
        return self.reads_from.cursor(flow) if self.reads_from else None

    def run_vars(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self.reads_from.run_vars(run_ids) if self.reads_from else {}

    def list_runs(self, flow: str | None = None, limit: int = 20) -> list[Run]:
        return self.reads_from.list_runs(flow, limit) if self.reads_from else []

    def get_run(self, run_id: str) -> Run | None:
        return self.reads_from.get_run(run_id) if self.reads_from else None

    def run_records(self, run_id: str, limit: int = 1000) -> list[Trace]:
        return self.reads_from.run_records(run_id, limit) if self.reads_from else []

    def trace(self, record_key: str, flow: str | None = None) -> list[Trace]:
        return self.reads_from.trace(record_key, flow) if self.reads_from else []

    def dead_letters(
        self, flow: str | None = None, status: str | None = "open", limit: int | None = None
    ) -> list[DeadLetter]:
        return self.reads_from.dead_letters(flow, status, limit) if self.reads_from else []

    def dead_letter(self, id: int) -> DeadLetter | None:
        return self.reads_from.dead_letter(id) if self.reads_from else None

    def open_item_keys(self, flow: str) -> set[str]:
        return self.reads_from.open_item_keys(flow) if self.reads_from else set()

    def reviews(
        self,
        flow: str | None = None,
        queue: str | None = None,
        status: str | None = "open",
        limit: int | None = None,
    ) -> list[ReviewItem]:
        return self.reads_from.reviews(flow, queue, status, limit) if self.reads_from else []

    def review(self, id: int) -> ReviewItem | None:
        return self.reads_from.review(id) if self.reads_from else None

    def inbox_depth(self, flow: str | None = None) -> dict[str, int]:
        return self.reads_from.inbox_depth(flow) if self.reads_from else {}

    def inbox_events(
        self, flow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        return self.reads_from.inbox_events(flow, status, limit) if self.reads_from else []

    def schedule_state(self, flow: str) -> ScheduleState | None:
        return self.reads_from.schedule_state(flow) if self.reads_from else None

    def flow_health(self) -> list[FlowHealth]:
        return self.reads_from.flow_health() if self.reads_from else []

    def work_items(
        self,
        kind: str | None = None,
        flow: str | None = None,
        queue: str | None = None,
        owner: str | None = None,
        status: str | Sequence[str] | None = "open",
        since: float | None = None,
        limit: int | None = None,
    ) -> list[WorkItem]:
        if self.reads_from is None:
            return []
        return self.reads_from.work_items(kind, flow, queue, owner, status, since, limit)

    def work_item(self, id: int) -> WorkItem | None:
        return self.reads_from.work_item(id) if self.reads_from else None

    def approval(self, flow: str, record_key: str, step: str) -> WorkItem | None:
        return self.reads_from.approval(flow, record_key, step) if self.reads_from else None

    def to_resume(self, flow: str) -> list[WorkItem]:
        return []  # a dry run resumes nothing

    def compensations(
        self, flow: str, source_key: str | None = None, state: str | None = "pending"
    ) -> list[Compensation]:
        return self.reads_from.compensations(flow, source_key, state) if self.reads_from else []

    def traces_since(self, since: float | None = None, flow: str | None = None) -> Iterator[Trace]:
        return self.reads_from.traces_since(since, flow) if self.reads_from else iter(())

    # -- what only a writing run has ---------------------------------------------------------------
    def record_digest(self, flow: str, record_key: str) -> RecordDigest | None:
        return None  # a dry run takes every record through its steps

    def oldest_run(self, flow: str) -> float | None:
        return None  # nothing to prune: a dry run deletes nothing

    def lease(self, flow: str) -> Lease | None:
        return None

    def acquire_lease(self, flow: str, holder: str, ttl: float) -> str | None:
        return None  # a dry run never waits for, nor blocks, a real one

    def renew_lease(self, flow: str, holder: str, ttl: float) -> bool:
        return True

    # -- writes, dropped -------------------------------------------------------------------------
    def write_keys(self, flow: str, writes: Sequence[KeyWrite]) -> None:
        pass

    def forget_record_digests(self, flow: str) -> None:
        pass

    def commit_progress(self, flow: str, progress: Progress) -> list[int]:
        return []

    def start_run(
        self,
        run_id: str,
        flow: str,
        *,
        kind: str = "run",
        vars: dict[str, Any] | None = None,
        holder: str | None = None,
    ) -> None:
        pass

    def finish_run(
        self,
        run_id: str,
        status: str,
        counts: dict[str, int],
        exit_code: int,
        message: str | None = None,
    ) -> None:
        pass

    def mark_abandoned_runs(self, flow: str) -> int:
        return 0

    def close_dead_letter(self, id: int, status: str, replay_run: str) -> None:
        pass

    def purge_dead_letters(self, ids: list[int] | None = None, flow: str | None = None) -> int:
        return 0

    def close_review(self, id: int, by: str, comment: str | None = None) -> ReviewItem:
        raise LookupError(f"no review item {id} (a dry run closes nothing)")

    def release_lease(self, flow: str, holder: str) -> None:
        pass

    def decide(
        self,
        id: int,
        decision: str,
        by: str,
        comment: str | None = None,
        at: float | None = None,
    ) -> WorkItem:
        raise LookupError(f"no item {id} (a dry run decides nothing)")

    def mark_resumed(self, ids: Sequence[int], run_id: str) -> None:
        pass

    def escalate_due(self, now: float | None = None, flow: str | None = None) -> list[WorkItem]:
        return []

    def add_compensation(self, flow: str, write: CompensationWrite) -> None:
        pass

    def finish_compensation(
        self, id: int, run_id: str, *, error: str | None = None, response: Any = None
    ) -> None:
        pass

    def settle_compensations(self, flow: str, source_key: str) -> None:
        pass

    def prune(self, older_than_s: float, flow: str | None = None) -> Pruned:
        return Pruned()

    def add_to_inbox(self, events: Sequence[tuple[str, InboxEvent]]) -> list[InboxAdded]:
        raise RuntimeError("a dry run keeps no events")  # intake never opens a dry store

    def claim_inbox(self, flow: str, holder: str, limit: int, ttl: float) -> list[InboxEntry]:
        return []  # a dry run takes no event from the inbox

    def release_inbox(self, flow: str, holder: str) -> int:
        return 0

    def prune_inbox(self, older_than_s: float, flow: str | None = None) -> int:
        return 0

    def claim_schedule(self, flow: str, due: float, holder: str) -> bool:
        return False
