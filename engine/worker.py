"""A worker: one of many processes, on one or many machines, sharing a flow's work through a
PostgreSQL state (``flowyard worker``, :meth:`engine.Engine.work`).

The flow's source is read by one worker at a time, the **feeder**: whichever holds the
flow's lease (the same lease that keeps two ``flowyard run`` from overlapping). It queues
what it reads in the store's work queue and moves the source cursor in the same
transaction, so a record is queued once and the cursor never passes one that is not
queued. Every worker, the feeder too, **claims** queued records (``FOR UPDATE SKIP
LOCKED``: never one record by two workers) and takes them through the steps exactly as a
run does; a record leaves the queue in the commit that writes its final state.

Only the oldest queued record of a key can be claimed, so one key's records (the same
order, the same SKU) are taken in the order the source gave them, whichever worker takes
each. Claims are kept alive by a heartbeat every third of the lease time; a worker that
was killed stops beating, and once its heartbeat is overdue (at once, on its own host,
when its process is gone) its run is marked crashed and its claims are taken by the
others. What it had sent is decided by the idempotency keys, as after any crash: a key in
flight is sent again with the same ``Idempotency-Key``.

The feeder also resumes the records of approvals decided since (``flowyard approvals``
cannot run the flow while it holds the lease), as a run does before its source's records.

A worker is a :class:`~engine.runner.Runner` whose work comes from the queue: the same
executor, outcomes, dead letters, review items, traces, run log and commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from connectors import Item, Registry
from engine.errors import LockHeld
from engine.executor import Rec
from engine.lease import LEASE_TTL, LeaseKeeper
from engine.model import Flow
from engine.outcomes import RunStatus
from engine.progress import Watermark
from engine.runlog import Listener
from engine.runner import Runner, RunResult
from engine.store import (
    ClaimedRecord,
    DeadLetter,
    QueuedRecord,
    StateLocation,
    WorkQueue,
    holder_id,
)
from engine.work import BadInput, RecordWork, Work, record_key, resume_work

CLAIM = 16  # records a worker claims at a time (per lane of the flow's concurrency: 4)
FEED_BATCH = 500  # records the feeder queues per transaction
HIGH_WATER = 5000  # the feeder waits while this many records are queued


class NotShared(ValueError):
    """Workers need a state several processes share: a PostgreSQL database."""


class _NoCursor(Watermark):
    """A worker moves no cursor: the feeder moved it when it queued the records."""

    def add(self, seq: int, position: Any) -> None:
        pass

    def finish(self, seq: int, final: bool) -> None:
        pass

    def moved_to(self) -> Any:
        return None


class Worker(Runner):
    """One worker of a flow (see the module docstring). ``stop`` ends it gracefully (its
    records in flight are finished and committed, its claims freed); ``until_empty`` ends it
    once it has read the source to its end and the queue is empty."""

    def __init__(
        self,
        flow: Flow,
        *,
        registry: Registry,
        state: StateLocation,
        vars: dict[str, Any] | None = None,
        log_stderr: bool = False,
        listeners: Iterable[Listener] = (),
        lease_ttl: float = LEASE_TTL,
        stop: threading.Event | None = None,
        until_empty: bool = False,
        poll: float = 1.0,
    ):
        super().__init__(
            flow,
            registry=registry,
            state=state,
            vars=vars,
            log_stderr=log_stderr,
            listeners=listeners,
            kind="worker",
            lease_ttl=lease_ttl,
        )
        if not isinstance(self.store, WorkQueue):
            self.log.close()
            if self.log.path is not None:
                self.log.path.unlink(missing_ok=True)
            self.store.close()
            raise NotShared(
                f"workers share a flow's work through a PostgreSQL state, not a state file "
                f"({state}): pass --state postgresql://... (or set FLOWYARD_STATE)"
            )
        self.queue: WorkQueue = self.store
        self.holder = f"{holder_id()}:{self.run_id}"
        self.ttl = lease_ttl
        self.stopping = stop or threading.Event()
        self.until_empty = until_empty
        self.poll = poll
        self.claim = CLAIM * max(1, flow.concurrency)
        self._watermark = _NoCursor()
        self._gone = threading.Event()  # the heartbeat came too late: others took the claims
        self._ended = threading.Event()  # the run has ended: no more heartbeats
        self._feeding: Iterator[Item] | None = None  # the source, while this worker feeds
        self._read_to_end = False  # this run read the source to its end (as the feeder)
        self._next_read = 0.0  # when the feeder reads the source again, once at its end
        self._holding = False  # this worker holds the flow's lease: it is the feeder
        self._fed = 0  # records this worker queued (a record without a key is keyed #n)
        self._keys_read = 0.0  # when the keys of open items were last read
        self._joined = 0.0  # when it joined the flow's workers (the database's clock)
        self._decided_read = 0.0  # when the feeder last looked for decided approvals
        self._resuming: set[int] = set()  # approvals this worker took on (marked at commit)

    # -- start, heartbeat -----------------------------------------------------------------------
    def _start(self, replay: list[DeadLetter] | None) -> None:
        """Join the flow's workers and record the run; no lease is needed to take records."""
        try:
            self._joined = self.queue.join_workers(
                self.flow.name, self.holder, self.run_id, self.ttl
            )
            self.store.start_run(
                self.run_id,
                self.flow.name,
                kind=self.kind,
                vars=self.given_vars,
                holder=holder_id(),
            )
            self._open_keys = self.store.open_item_keys(self.flow.name)
            self._keys_read = time.monotonic()
        except BaseException:
            self.log.close()
            self.store.close()
            raise
        threading.Thread(target=self._beat, daemon=True, name="flowyard-heartbeat").start()
        self.log.event("worker_started", holder=self.holder, claim=self.claim)

    def _beat(self) -> None:
        # until the run has ended, not only until it was told to stop: the records in hand
        # when it was told are still being finished, and must stay claimed
        while not self._ended.wait(self.ttl / 3) and not self._gone.is_set():
            try:
                if not self.queue.heartbeat(self.flow.name, self.holder, self.ttl):
                    self._gone.set()
            except Exception:  # a busy or failing database: try again at the next beat
                pass

    def _check_lease(self) -> None:
        """A worker goes on when it loses the feeder's lease; it stops when it was found gone."""
        if self._gone.is_set() and self._stop is None:
            self._stop = (
                RunStatus.FAILED.value,
                f"worker {self.holder} missed its heartbeat and was taken for gone (its claims "
                f"went to the other workers); stopping so that the two do not overlap",
            )

    # -- the work: queued records, claimed ------------------------------------------------------
    def _work(
        self, records: Iterable[Any] | None, replay: list[DeadLetter] | None, from_start: bool
    ) -> Iterator[Work]:
        return iter(())  # a worker's work comes in claimed rounds: see _loop

    def _loop(self, work: Iterable[Work]) -> tuple[str, str] | None:
        """Take the claimed records round by round, each round on the flow's lanes to its
        end (so every record of it is accounted for before the next claim)."""
        try:
            for claimed in self._rounds():
                super()._loop(claimed)
                if self._stop is not None:
                    break
        finally:
            self._feeding = None
        return self._stop

    def _rounds(self) -> Iterator[list[Work]]:
        """Claimed records, a round at a time, until stopped (or the work is done)."""
        seq = 0
        while not self.stopping.is_set():
            self._check_lease()
            if self._stop is not None:
                return
            self._feed()
            resumed = self._decided(seq)
            if resumed:
                seq += len(resumed)
                yield resumed
                continue
            claimed = self.queue.claim_work(self.flow.name, self.holder, self.claim, self.ttl)
            if not claimed:
                # what is done but not committed holds back the next record of its key
                if self._batch.traces or self._batch.work_done:
                    self._flush()
                    continue  # the records of their keys that waited may be claimed now
                if self._finished_work():
                    return
                self.stopping.wait(min(self.poll, 0.2) if self._feeding else self.poll)
                continue
            if time.monotonic() - self._keys_read > 5:  # other workers park records too
                self._open_keys = self.store.open_item_keys(self.flow.name)
                self._keys_read = time.monotonic()
            yield [self._work_item(seq + n, c) for n, c in enumerate(claimed)]
            seq += len(claimed)

    def _decided(self, seq: int) -> list[Work]:
        """The feeder resumes the records of approvals decided since (as a run does before
        its source's records; ``flowyard approvals approve`` cannot run the flow while the
        feeder holds its lease). One feeder at a time: each is resumed by one process."""
        if not self._holding or time.monotonic() - self._decided_read < self.poll:
            return []
        self._decided_read = time.monotonic()
        decided = [
            item for item in self.store.to_resume(self.flow.name) if item.id not in self._resuming
        ]
        self._resuming.update(item.id for item in decided)
        return list(resume_work(self.flow, decided, seq))

    def _finished_work(self) -> bool:
        """With ``until_empty``: whether the source was read to its end since this worker
        joined (by it, or by the feeder of the moment) and no record waits in the queue
        (claimed or not) any more."""
        if not self.until_empty:
            return False
        if not self._read_to_end:
            read = self.queue.read_to_end(self.flow.name)
            if read is None or read < self._joined:
                return False
        return self.queue.queue_depth(self.flow.name) == 0

    def _work_item(self, seq: int, claimed: ClaimedRecord) -> Work:
        item = Item(
            data=claimed.item.get("data"),
            line=claimed.item.get("line"),
            raw=claimed.item.get("raw"),
            error=claimed.item.get("error"),
        )
        if item.error is not None:
            return BadInput(seq, item, queued=claimed.id)
        key = claimed.record_key
        meta = {"key": key, "line": item.line, "position": None}
        rec = Rec(key=key, data=item.data, meta=meta, source=item.data)
        return RecordWork(seq, rec, queued=claimed.id)

    # -- feeding: the holder of the flow's lease queues what the source delivers -----------------
    def _feed(self) -> None:
        """Queue a batch of the source's records, when this worker holds (or can take) the
        flow's lease and the queue is not full."""
        if self._feeding is None:
            if time.monotonic() < self._next_read or not self._take_lease():
                return
            self._feeding = self._source(None)  # from the cursor the last feeder committed
        if self.queue.queue_depth(self.flow.name) >= HIGH_WATER:
            return
        batch: list[QueuedRecord] = []
        cursor = None
        for item in self._feeding:
            batch.append(self._queued(item, self._fed))
            self._fed += 1
            if item.position is not None:
                cursor = item.position
            if len(batch) >= FEED_BATCH:
                break
        else:  # the source has nothing more for now: read it again after a poll
            self._feeding = None
            self._next_read = time.monotonic() + self.poll
        at_end = self._feeding is None
        if (batch or cursor is not None or at_end) and not self.queue.enqueue(
            self.flow.name, self._lease.holder, batch, cursor, at_end
        ):
            # another worker took the lease (this one stalled): it reads from the cursor
            self._feeding, self._holding = None, False
            self._lease.stop()
            self._lease = LeaseKeeper(self.store, self.flow.name, self._lease.holder, self.ttl)
            self.log.event("feeder_lease_lost", holder=self.holder)
            return
        self._read_to_end = self._read_to_end or at_end
        if batch:
            self.log.event("queued", records=len(batch))

    def _take_lease(self) -> bool:
        """Hold the flow's lease (the feeder's): take it when it is free or its holder is
        gone; False while another worker (or a ``flowyard run``) holds it."""
        if self._lease.lost:  # it expired and another took it: start over with a new one
            self._lease = LeaseKeeper(self.store, self.flow.name, self._lease.holder, self.ttl)
            self._holding = False
        if self._holding:
            return True
        try:
            dead = self._lease.acquire(0)
        except LockHeld:
            return False
        self._holding = True
        self.log.event("feeder", holder=self._lease.holder, taken_from=dead)
        return True

    def _queued(self, item: Item, n: int) -> QueuedRecord:
        """A source item as the queue keeps it, under its record key (an item that cannot
        be a record, under a key of its own: it holds back no other)."""
        facts = {"data": item.data, "line": item.line, "raw": item.raw, "error": item.error}
        if item.error is None:
            try:
                return QueuedRecord(record_key(self.flow, self.vars, item.data, item, n), facts)
            except Exception as exc:  # a key template failing on this record
                facts["error"] = f"the record key cannot be made: {exc}"
        return QueuedRecord(f"input:{self.run_id}#{time.monotonic_ns()}", facts)

    # -- the end ---------------------------------------------------------------------------------
    def _finish_run(self, result: RunResult) -> None:
        self._ended.set()
        try:
            self.queue.leave_workers(self.flow.name, self.holder)
        except Exception:
            pass  # its heartbeat stops: the others let its claims go after the lease time
        super()._finish_run(result)
