"""The state store's declared interface: what the engine asks of any store.

:class:`StateStore` is what the runner, the executor, the library API and the CLI use;
nothing outside ``engine/store/`` sees SQL. The SQLite store (engine/store/sqlite.py) is
the embedded default; a PostgreSQL store for workers on several machines implements the
same protocol and passes the same contract suite (engine/store/contract.py). The null
store (engine/store/null.py) is what a dry run writes to.

What every implementation promises, beyond the signatures:

- **Durability**: a method that writes has committed when it returns. :meth:`write_keys`
  commits its writes together (all or none), so a group of sends can be marked in flight
  in one transaction; :meth:`commit_progress` commits traces, items, digests, refreshed
  times, resolved items and the cursor together: the cursor never passes a record whose
  final state was not written; the inbox events it names are marked done with them.
- **Faults**: anything wrong with the store's medium (a damaged, read-only or full file; a
  lost connection) raises :class:`~engine.errors.StateError` saying what and where.
- **Threads**: a store may be used from several threads at once (a run's lanes).
- **Lifecycle**: ``with store:`` closes it at the end; :meth:`close` may be called twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, Self, runtime_checkable

from engine.store.rows import (
    ClaimedRecord,
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
    QueuedRecord,
    RecordDigest,
    ReviewItem,
    Run,
    ScheduleState,
    Trace,
)
from engine.store.work_rows import Compensation, CompensationWrite, WorkItem


@runtime_checkable
class StateStore(Protocol):
    """What a run must remember, and what people ask of it afterwards."""

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the store's connection; further calls are not allowed."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def schema_version(self) -> int:
        """The version of the store's layout (engine/store/schema.py)."""
        ...

    # -- idempotency keys ------------------------------------------------------------------------
    def get_key(self, flow: str, key: str) -> KeyState | None:
        """What is remembered of idempotency ``key`` of ``flow``, or None."""
        ...

    def write_keys(self, flow: str, writes: Sequence[KeyWrite]) -> None:
        """Record the new states of keys, all in one transaction, committed on return (a
        request is only sent once its key's ``in_flight`` is committed)."""
        ...

    def keys_in_flight(self, flow: str) -> list[KeyState]:
        """The flow's keys whose last request may or may not have been applied."""
        ...

    # -- cursors and digests -----------------------------------------------------------------------
    def cursor(self, flow: str) -> Cursor | None:
        """Where the flow's source resumes, or None before its first commit."""
        ...

    def record_digest(self, flow: str, record_key: str) -> RecordDigest | None:
        """The record's digest from its last clean pass, or None."""
        ...

    def forget_record_digests(self, flow: str) -> None:
        """Forget every record digest of the flow (a run that may change keys behind them)."""
        ...

    # -- progress ----------------------------------------------------------------------------------
    def commit_progress(self, flow: str, progress: Progress) -> list[int]:
        """Write one batch of final record states and move the cursor, atomically.

        Returns the ids of ``progress.items`` in their order (a store that keeps nothing,
        the null store, returns none). An item with the same flow, record key, step and kind
        as an open one refreshes that one (same id) instead of adding another: a record
        that fails the same way on every run keeps one open item.
        """
        ...

    # -- runs --------------------------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        flow: str,
        *,
        kind: str = "run",
        vars: dict[str, Any] | None = None,
        holder: str | None = None,
    ) -> None:
        """Record a run as ``running`` with the vars it was given (never a secret: the values
        of ``${env:NAME}`` are not vars) and who runs it."""
        ...

    def finish_run(
        self,
        run_id: str,
        status: str,
        counts: dict[str, int],
        exit_code: int,
        message: str | None = None,
    ) -> None:
        """Record how a run ended."""
        ...

    def mark_abandoned_runs(self, flow: str) -> int:
        """Mark the flow's runs still ``running`` as ``crashed`` (call it holding the
        flow's lease: they were killed); returns how many."""
        ...

    def run_vars(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The vars each of ``run_ids`` was given (runs from before they were kept: absent)."""
        ...

    def oldest_run(self, flow: str) -> float | None:
        """When the flow's oldest finished run started, or None."""
        ...

    def list_runs(self, flow: str | None = None, limit: int = 20) -> list[Run]:
        """Recent runs (of one flow, or all), newest first."""
        ...

    def get_run(self, run_id: str) -> Run | None:
        """Run ``run_id``, or the one run whose id starts with it; None if none or several."""
        ...

    def run_records(self, run_id: str, limit: int = 1000) -> list[Trace]:
        """The traces of one run, in the order they were committed."""
        ...

    def trace(self, record_key: str, flow: str | None = None) -> list[Trace]:
        """Every trace of a record across runs (with the run's kind), oldest first."""
        ...

    # -- dead letters ------------------------------------------------------------------------------
    def dead_letters(
        self, flow: str | None = None, status: str | None = "open", limit: int | None = None
    ) -> list[DeadLetter]:
        """A flow's (or every flow's) dead letters with ``status`` (None: any), oldest first."""
        ...

    def dead_letter(self, id: int) -> DeadLetter | None:
        """Dead letter ``id``, or None (a review item is not a dead letter)."""
        ...

    def open_item_keys(self, flow: str) -> set[str]:
        """The record keys of a flow's open dead letters and review items."""
        ...

    def close_dead_letter(self, id: int, status: str, replay_run: str) -> None:
        """Close a dead letter as ``replayed`` or ``superseded`` by run ``replay_run``."""
        ...

    def purge_dead_letters(self, ids: list[int] | None = None, flow: str | None = None) -> int:
        """Delete dead letters (by id, by flow, or all) for good; review items stay."""
        ...

    # -- review items ------------------------------------------------------------------------------
    def reviews(
        self,
        flow: str | None = None,
        queue: str | None = None,
        status: str | None = "open",
        limit: int | None = None,
    ) -> list[ReviewItem]:
        """Review items of a flow and queue (None: all) with ``status`` (None: any), oldest
        first."""
        ...

    def review(self, id: int) -> ReviewItem | None:
        """Review item ``id``, or None (a dead letter is not a review item)."""
        ...

    def close_review(self, id: int, by: str, comment: str | None = None) -> ReviewItem:
        """Close open review item ``id`` as decided by ``by``, now, with ``comment``.

        Raises :class:`LookupError` when there is no such item and :class:`ValueError` when
        it is no longer open.
        """
        ...

    # -- work items: every dead letter, review item and approval ------------------------------
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
        """Work items of a kind (``dead_letter``, ``review``, ``approval``), flow, queue and
        owner (None: all) with ``status`` (one, several, or None: any), created at or after
        ``since``, oldest first."""
        ...

    def work_item(self, id: int) -> WorkItem | None:
        """Work item ``id`` of any kind, or None."""
        ...

    def approval(self, flow: str, record_key: str, step: str) -> WorkItem | None:
        """The latest approval of a record at an ``approve`` step (not resolved), or None."""
        ...

    def decide(
        self,
        id: int,
        decision: str,
        by: str,
        comment: str | None = None,
        at: float | None = None,
    ) -> WorkItem:
        """Record a person's decision on open item ``id``: an approval ``approved`` or
        ``rejected``, a review item ``closed``; who, when, why (and for an approval the
        record and figures decided on) go to its history. Raises :class:`LookupError` for no
        such item (or a dead letter) and :class:`ValueError` for an item not open or a
        decision its kind does not take."""
        ...

    def to_resume(self, flow: str) -> list[WorkItem]:
        """The flow's approvals decided and not yet resumed, in the order they were decided."""
        ...

    def mark_resumed(self, ids: Sequence[int], run_id: str) -> None:
        """Note that run ``run_id`` resumed the records of approvals ``ids``."""
        ...

    def escalate_due(self, now: float | None = None, flow: str | None = None) -> list[WorkItem]:
        """Escalate every open item past its due time (of one flow, or all) not escalated
        yet: moved to its ``escalate_to`` queue and owner, counted as an SLA breach, noted in
        its history; returns them, escalated. ``now`` is the clock (default: the time)."""
        ...

    # -- compensations -----------------------------------------------------------------------------
    def add_compensation(self, flow: str, write: CompensationWrite) -> None:
        """Remember how to undo a send that was performed (committed on return)."""
        ...

    def compensations(
        self, flow: str, source_key: str | None = None, state: str | None = "pending"
    ) -> list[Compensation]:
        """A flow's (or one source record's) compensations in the order they were registered."""
        ...

    def finish_compensation(
        self, id: int, run_id: str, *, error: str | None = None, response: Any = None
    ) -> None:
        """Compensation ``id`` ran: ``done`` (its send's key becomes ``compensated``), or,
        with ``error``, failed and stays pending."""
        ...

    def settle_compensations(self, flow: str, source_key: str) -> None:
        """The record went through: its pending compensations will never run."""
        ...

    def traces_since(self, since: float | None = None, flow: str | None = None) -> Iterator[Trace]:
        """Every trace (of one flow, or all) at or after ``since``, oldest first, with the
        run's kind: the history stats are computed from."""
        ...

    # -- leases ------------------------------------------------------------------------------------
    def acquire_lease(self, flow: str, holder: str, ttl: float) -> str | None:
        """Take the flow's lease for ``ttl`` seconds or raise :class:`~engine.errors.LockHeld`
        naming the live holder. An expired lease is taken over; so is one whose holder is
        gone (:meth:`Lease.holder_gone`) before it expired, and that holder is returned."""
        ...

    def renew_lease(self, flow: str, holder: str, ttl: float) -> bool:
        """Extend ``holder``'s lease; False when it no longer holds it."""
        ...

    def release_lease(self, flow: str, holder: str) -> None:
        """Give the lease up (nothing happens when ``holder`` does not hold it)."""
        ...

    def lease(self, flow: str) -> Lease | None:
        """The flow's lease as it stands (perhaps expired), or None."""
        ...

    # -- retention ---------------------------------------------------------------------------------
    def prune(self, older_than_s: float, flow: str | None = None) -> Pruned:
        """Delete finished runs, traces and closed items older than the limit, and keys not
        written or seen again since then (never in flight), with the digests of their
        records. Open items stay. The run logs of ``Pruned.run_ids`` are the caller's."""
        ...

    # -- the inbox: events pushed to flowyard (webhooks, engine/serve/) ------------------------
    def add_to_inbox(self, events: Sequence[tuple[str, InboxEvent]]) -> list[InboxAdded]:
        """Keep ``(flow, event)`` pairs in the flows' inboxes, all in one transaction,
        committed on return: intake answers 2xx only after it. An event whose id the flow's
        inbox already holds is not kept again (its ``deliveries`` go up; ``new`` is False).
        Returns one :class:`InboxAdded` per pair, in order."""
        ...

    def claim_inbox(self, flow: str, holder: str, limit: int, ttl: float) -> list[InboxEntry]:
        """Claim up to ``limit`` pending events of the flow for ``holder`` for ``ttl``
        seconds, oldest first, and return them; in the same transaction, renew the claims
        ``holder`` has and free those of holders that are gone (a process on this host that
        no longer exists) or whose claim expired. Events ``holder`` already holds are not
        returned again. Several processes (on several machines) may claim at once: no event
        is held by two of them."""
        ...

    def release_inbox(self, flow: str, holder: str) -> int:
        """Give up ``holder``'s claims on pending events (a run that ends before their
        records are final); returns how many."""
        ...

    def inbox_depth(self, flow: str | None = None) -> dict[str, int]:
        """Pending events per flow (of one flow, or of every flow with some)."""
        ...

    def inbox_events(
        self, flow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        """A flow's (or every flow's) inbox events with ``status`` (None: any), oldest first."""
        ...

    def prune_inbox(self, older_than_s: float, flow: str | None = None) -> int:
        """Delete done events received longer ago than the limit (their ids are then no
        longer known as duplicates); pending ones stay. Returns how many went."""
        ...

    # -- schedules ---------------------------------------------------------------------------------
    def claim_schedule(self, flow: str, due: float, holder: str) -> bool:
        """Claim the scheduled flow's slot due at ``due`` (epoch seconds) for ``holder``:
        True for the one caller that claims it first, False for every other and for a slot
        not later than the last one claimed."""
        ...

    def schedule_state(self, flow: str) -> ScheduleState | None:
        """The flow's last claimed slot, or None before its first."""
        ...

    # -- monitoring -------------------------------------------------------------------------------
    def flow_health(self) -> list[FlowHealth]:
        """Per flow that has any: open dead letters and review items, pending inbox events,
        its last run and its last completed run; by flow name."""
        ...


@runtime_checkable
class WorkQueue(Protocol):
    """What a shared state (PostgreSQL) adds for ``flowyard worker``: a flow's records
    queued once by the holder of its lease (the feeder), claimed by any number of worker
    processes on any number of machines.

    Claims are taken with ``FOR UPDATE SKIP LOCKED`` (no two workers claim one record) and
    only the oldest queued record of a key can be claimed, so one key's records are taken
    in order across every worker. Claims expire unless the worker's heartbeat renews them;
    a worker that stopped beating is gone: its run is marked crashed and its claims are
    taken over, and the in-flight keys of its sends decide what is sent again.
    """

    def enqueue(
        self,
        flow: str,
        holder: str,
        records: Sequence[QueuedRecord],
        cursor: Any,
        at_end: bool = False,
    ) -> bool:
        """Queue ``records`` and move the flow's cursor to ``cursor`` (None: it stays), in
        one transaction, if ``holder`` still holds the flow's lease; False (nothing written)
        when it no longer does. ``at_end``: the source has nothing after these for now
        (:meth:`read_to_end` says when)."""
        ...

    def read_to_end(self, flow: str) -> float | None:
        """When a feeder last queued the flow's source to its end (the database's clock)."""
        ...

    def join_workers(self, flow: str, holder: str, run_id: str, ttl: float) -> float:
        """Count ``holder`` (of run ``run_id``) among the flow's workers for ``ttl`` seconds;
        returns the time it joined (the database's clock)."""
        ...

    def heartbeat(self, flow: str, holder: str, ttl: float) -> bool:
        """Renew the worker and its claims for ``ttl`` seconds; False when it was found gone
        (its heartbeat came too late): it must stop taking records."""
        ...

    def claim_work(self, flow: str, holder: str, limit: int, ttl: float) -> list[ClaimedRecord]:
        """Claim up to ``limit`` records for ``holder``, oldest first, never two of one key
        nor one that an earlier record of its key still waits before; workers found gone
        are let go first (their runs marked ``crashed``, their claims freed)."""
        ...

    def leave_workers(self, flow: str, holder: str) -> int:
        """Free ``holder``'s claims and leave the workers; returns how many claims it had."""
        ...

    def queue_depth(self, flow: str) -> int:
        """How many of the flow's records wait in the queue (claimed or not)."""
        ...
