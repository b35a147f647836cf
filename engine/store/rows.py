"""The rows a state store keeps and returns, one dataclass each.

Rows that are read back (:class:`Run`, :class:`Trace`, :class:`KeyState`,
:class:`DeadLetter`, :class:`ReviewItem`, :class:`Cursor`, :class:`RecordDigest`,
:class:`Lease`) and the writes a run hands the store (:class:`KeyWrite`, :class:`ParkedItem`,
:class:`DigestWrite`, and :class:`Progress`, one commit of final record states). Every
store implementation takes and returns these, so the runner and the CLI never see SQL.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from engine.codec import loads
from engine.outcomes import Outcome


class SendState(StrEnum):
    """Where a send under an idempotency key stands."""

    IN_FLIGHT = "in_flight"  # the request may have been applied: the next run repeats it
    DONE = "done"
    FAILED = "failed"  # refused for good: a later request with the key is a new operation
    COMPENSATED = "compensated"  # undone by its compensation: sending again is a new operation


# -- runs and traces ---------------------------------------------------------------------
@dataclass
class Run:
    """One run as the store remembers it; ``status`` is ``running`` until it ends (and
    ``crashed`` when a later run found it never ended)."""

    run_id: str
    flow: str
    started_at: float
    ended_at: float | None
    status: str
    counts: dict[str, int] | None
    exit_code: int | None
    kind: str | None  # run | replay
    holder: str | None  # host:pid of the process that ran it
    message: str | None
    vars: dict[str, Any] | None  # the vars it was given (None: written before they were kept)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Trace:
    """What happened to one record in one run: its outcome and its path through the steps.

    ``steps`` holds ``[step, what happened, detail?]`` per step; ``kind`` is the run's kind
    (``run`` or ``replay``) when the trace is read back across runs.
    """

    run_id: str
    flow: str
    record_key: str | None
    outcome: Outcome
    steps: list[list[Any]]
    error: str | None
    at: float
    kind: str | None = None
    # when the record's pass started (None: written before flowyard kept it) and the
    # flow's labels of the record (store, supplier ...), for stats (engine/stats.py)
    started_at: float | None = None
    labels: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- idempotency keys ------------------------------------------------------------------------
@dataclass(slots=True)
class KeyState:
    """What the store remembers of one idempotency key."""

    key: str
    state: str  # a SendState
    fingerprint: str
    sent_key: str
    response_json: str | None  # decoded on use: most skipped sends never read it
    run_id: str | None
    updated_at: float = 0.0  # when it was last written or seen again (retention counts from it)
    record_key: str | None = None
    step: str | None = None

    @property
    def response(self) -> Any:
        """The stored response of the key's last request, decoded."""
        return loads(self.response_json)


@dataclass(slots=True)
class KeyWrite:
    """A key's new state, as the executor hands it to the store around each request.

    ``source_key`` is the key of the source record the send belongs to (a record split by
    a foreach sends under its items' keys): when that record comes again, unchanged, its
    keys are kept alive with it (:attr:`Progress.seen_records`).
    """

    key: str
    state: SendState
    fingerprint: str
    sent_key: str
    step: str
    record_key: str | None
    run_id: str
    response: Any = None
    source_key: str | None = None


# -- dead letters and review items -------------------------------------------------------------
@dataclass
class DeadLetter:
    """A parked record with the step that failed and why.

    ``source_record`` is the record as the source delivered it (None for dead letters
    written before flowyard kept it, and for lines the source could not read).
    """

    id: int
    flow: str
    run_id: str
    record_key: str | None
    step: str | None
    error_class: str
    message: str
    attempts: int
    record: Any
    context: Any
    raw: str | None
    line: int | None
    at: float
    status: str  # open | replayed | superseded | resolved
    replay_run: str | None
    source_record: Any = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReviewItem:
    """A record held for a person: the queue it waits in, why, and the figures to judge.

    ``status`` is ``open``, ``resolved`` (the record went through on a later run; ``run_id``
    of that run in ``resolved_run``) or ``closed`` (by a person: ``decided_by``,
    ``decided_at``, ``comment``).
    """

    id: int
    flow: str
    queue: str
    reason: str
    figures: Any
    record_key: str | None
    step: str | None
    record: Any
    run_id: str
    at: float
    status: str
    resolved_run: str | None
    decided_by: str | None
    decided_at: float | None
    comment: str | None
    context: Any = None
    source_record: Any = None
    owner: str | None = None
    category: str | None = None
    due_at: float | None = None
    escalated_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ParkedItem:
    """A dead letter (``kind="dead_letter"``, with ``error_class``) or a review item
    (``kind="review"``, with ``queue`` and ``figures``) as a run writes it.

    ``message`` is the error, or the review's reason. ``context`` holds what a replay needs
    (the record's ``meta``, its ``parent`` and ``loop`` in a foreach, the first ``lookup``).
    """

    kind: str  # dead_letter | review | approval
    run_id: str
    record_key: str | None
    step: str | None
    message: str
    attempts: int = 1
    record: Any = None
    source_record: Any = None
    context: Any = None
    line: int | None = None
    raw: str | None = None
    error_class: str | None = None
    queue: str | None = None
    figures: Any = None
    # who owns it and by when (engine/work_items.py): kind ``approval`` waits for a decision
    owner: str | None = None
    category: str | None = None
    due_s: float | None = None  # seconds from when it is first written
    escalate_to: dict[str, Any] | None = None  # {queue, owner} once it is past due
    labels: dict[str, Any] | None = None
    flow_file: str | None = None


# -- cursors, digests, leases -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a flow's source resumes: the position after the last record that is final."""

    flow: str
    position: Any
    updated_at: float


@dataclass(slots=True)
class RecordDigest:
    """A record's digest as it last went through cleanly (engine/unchanged.py); ``at`` is
    when it went through, or was last seen again unchanged."""

    digest: str
    outcome: str
    run_id: str | None
    at: float


@dataclass(slots=True)
class DigestWrite:
    """A record's digest to remember after a clean pass; ``digest=None`` forgets it (the
    record did not go through, and may have sent part of its requests)."""

    record_key: str
    digest: str | None
    outcome: str
    run_id: str
    at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """Who runs a flow now, and until when, unless the holder renews it."""

    flow: str
    holder: str
    pid: int | None
    host: str | None
    acquired_at: float
    expires_at: float

    def holder_gone(self) -> bool:
        """Whether the holder was a process on this host that no longer exists (killed,
        crashed): its lease may be taken at once rather than after it expires."""
        return process_gone(self.host, self.pid)


def process_gone(host: str | None, pid: int | None) -> bool:
    """Whether ``pid`` on ``host`` was a process on this host that no longer exists; False
    for another host's (only its expiry tells) and for this process."""
    if host != socket.gethostname() or not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists (as another user's process)
        return False
    return False


def holder_id() -> str:
    """Who holds a lease: host and pid, enough for a person to find the process."""
    return f"{socket.gethostname()}:{os.getpid()}"


# -- one commit --------------------------------------------------------------------------------
@dataclass
class Progress:
    """Final record states a run commits together, in one transaction, with its cursor.

    ``cursor`` is the position the cursor moves to (None: it stays): it only ever passes
    records whose final state is in this commit or an earlier one. ``resolved`` are keys of
    records that had open items (dead letters, review items) and went through in run
    ``run_id``: those items are closed as ``resolved``. ``seen_records`` and ``seen_keys``
    are records skipped as unchanged and idempotency keys skipped as duplicates: their
    time is set to now (with the keys of the records), so that retention forgets only what
    the source stopped delivering. ``keys`` are the states of the group's sends
    (engine/group.py), written before everything else: a later write of the same key
    replaces an earlier one, as with :meth:`StateStore.write_keys`. ``work_done`` are
    entries of a shared state's work queue (engine/worker.py) whose records are final in
    this commit: they leave the queue with it. ``inbox_done`` are inbox events whose
    records are final in this commit: they are marked done with it, so an event is never
    taken again once its outcome is written, and always taken again when it is not.
    """

    run_id: str
    traces: list[Trace] = field(default_factory=list)
    items: list[ParkedItem] = field(default_factory=list)
    cursor: Any = None
    resolved: list[str] = field(default_factory=list)
    digests: list[DigestWrite] = field(default_factory=list)
    seen_records: list[str] = field(default_factory=list)
    seen_keys: list[str] = field(default_factory=list)
    keys: list[KeyWrite] = field(default_factory=list)
    work_done: list[int] = field(default_factory=list)
    # inbox events (their ids) whose records reached a final state in this commit
    inbox_done: list[int] = field(default_factory=list)


@dataclass
class Pruned:
    """What a prune deleted, by kind; ``run_ids`` are the runs whose run logs go too."""

    traces: int = 0
    runs: int = 0
    dead_letters: int = 0
    keys: int = 0
    run_ids: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "traces": self.traces,
            "runs": self.runs,
            "dead_letters": self.dead_letters,
            "keys": self.keys,
        }


# -- the work queue of a shared state (flowyard worker) ------------------------------------------
@dataclass(slots=True)
class QueuedRecord:
    """A record the flow's feeder read from its source, queued for the workers: its record
    key (one key's records are taken in order) and the item as the source read it
    (``data``, ``line``, ``raw``, ``error``)."""

    record_key: str
    item: dict[str, Any]


@dataclass(slots=True)
class ClaimedRecord:
    """A queued record a worker claimed: the queue entry's ``id`` goes back in
    :attr:`Progress.work_done` once the record is final."""

    id: int
    record_key: str
    item: dict[str, Any]


# -- the inbox of events pushed to flowyard (webhooks) -------------------------------------------
@dataclass(slots=True)
class InboxEvent:
    """An event to keep in a flow's inbox, as intake accepted it: the platform's event id
    (the same id again is a duplicate delivery), its topic, the raw body as it was signed,
    and the headers worth keeping (never the signature)."""

    event_id: str
    body: bytes
    topic: str | None = None
    scheme: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    received_at: float = 0.0


@dataclass(slots=True)
class InboxAdded:
    """What adding one event did: its inbox ``id``, and whether it is ``new`` (False: a
    duplicate of an event already kept, whose ``deliveries`` went up by one)."""

    id: int
    new: bool
    deliveries: int


@dataclass(slots=True)
class InboxEntry:
    """An event of a flow's inbox, as a processor claimed it (or as it is listed)."""

    id: int
    flow: str
    event_id: str
    topic: str | None
    scheme: str | None
    headers: dict[str, str]
    body: bytes
    received_at: float
    deliveries: int
    status: str  # pending | done
    run_id: str | None = None  # the run that took it to its final state
    done_at: float | None = None

    def arrival(self) -> dict[str, Any]:
        """The facts of its arrival a trace shows (never the body or the headers' values
        beyond the platform's own ids)."""
        received = datetime.fromtimestamp(self.received_at, UTC)
        return {
            "event_id": self.event_id,
            "topic": self.topic,
            "scheme": self.scheme,
            "received_at": received.isoformat(timespec="milliseconds"),
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A scheduled flow's last claimed slot: the due time (epoch seconds) one process won,
    who won it and when."""

    flow: str
    last_due: float
    holder: str | None
    claimed_at: float


@dataclass(slots=True)
class FlowHealth:
    """What monitoring asks of one flow (``/metrics``, alerts): open items, pending events,
    and its last run and last completed run (ended with every record final: ok, some
    dead-lettered or some held for review)."""

    flow: str
    dead_letters_open: int = 0
    reviews_open: dict[str, int] = field(default_factory=dict)  # by queue
    inbox_pending: int = 0
    last_run_at: float | None = None
    last_status: str | None = None
    last_success_at: float | None = None
