"""The rows of work items and compensations: what people decide on, and how sends are undone.

A **work item** is anything in the state that waits for a person: a dead letter, a review
item, an approval. They share one table (``dead_letters``, told apart by ``kind``) and one
row type, :class:`WorkItem`, so that one queue view (``flowyard queue list``), one SLA clock
and one decision history serve all three. :class:`~engine.store.rows.DeadLetter` and
:class:`~engine.store.rows.ReviewItem` stay the views the ``dlq`` and ``review`` commands
have always shown.

A **compensation** is how one performed send of a record is undone (``compensate:`` on
the send): the record as it was right after the send is kept, so the undo can be rendered
from what the target answered, and run later, in reverse order, if the record fails for
good or its approval is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.codec import loads

#: What each kind's ``status`` can be.
STATUSES = {
    "dead_letter": ("open", "replayed", "superseded", "resolved"),
    "review": ("open", "resolved", "closed"),
    "approval": ("open", "approved", "rejected", "resolved"),
}
#: The decisions a person records on an open item, by kind.
DECISIONS = {"review": ("closed",), "approval": ("approved", "rejected")}


@dataclass
class WorkItem:
    """One item in a work queue: a dead letter, a review item or an approval.

    ``created_at`` is when it was first written (``at``: when last refreshed by a run that
    held the record again); ``due_at`` when it is due (None: no SLA); ``escalated_at`` when
    it went past due and was escalated (``breached`` then counts it as an SLA breach).
    ``history`` lists what happened to it: ``{at, event, by?, comment?, ...}`` with the
    events ``created``, ``escalated``, ``approved``, ``rejected``, ``closed``, ``resumed``.
    An approval decided (``approved`` or ``rejected``) is resumed by a run of its flow
    (``resumed_run``).
    """

    id: int
    kind: str
    flow: str
    queue: str
    owner: str | None
    category: str | None
    reason: str
    figures: Any
    record_key: str | None
    step: str | None
    run_id: str
    created_at: float
    at: float
    due_at: float | None
    status: str
    decided_by: str | None = None
    decided_at: float | None = None
    comment: str | None = None
    escalated_at: float | None = None
    escalate_to: dict[str, Any] | None = None
    breached: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, Any] | None = None
    resumed_run: str | None = None
    record: Any = None
    context: Any = None
    source_record: Any = None
    flow_file: str | None = None
    error_class: str | None = None

    def age(self, now: float) -> float:
        """Seconds since it was first written."""
        return max(0.0, now - self.created_at)

    def overdue(self, now: float) -> bool:
        """Whether it is open and past its due time."""
        return self.status == "open" and self.due_at is not None and now >= self.due_at

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CompensationWrite:
    """How to undo one performed send, as the executor registers it after the send.

    ``source_key`` is the source record's key (the unit a compensation belongs to: a foreach
    item's sends are undone with their record); ``key`` the send's idempotency key;
    ``record`` the record right after the send (its ``save_as`` field holds the answer),
    from which the step's ``compensate:`` is rendered when it runs.
    """

    source_key: str
    record_key: str
    step: str
    key: str
    run_id: str
    record: Any = None
    meta: dict[str, Any] | None = None


@dataclass
class Compensation:
    """A registered compensation: ``pending`` until it ran (``done``) or its record went
    through (``settled``: nothing is undone any more); ``error`` of a failed attempt."""

    id: int
    flow: str
    source_key: str
    record_key: str
    step: str
    key: str
    run_id: str
    record: Any
    meta: dict[str, Any] | None
    state: str
    at: float
    done_run: str | None = None
    error: str | None = None
    response: Any = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _timed(entry: dict[str, Any]) -> dict[str, Any]:
    """A history entry with its times as floats (JSON gives them back as Decimals)."""
    return {k: float(v) if k in ("at", "due_at") and v is not None else v for k, v in entry.items()}


def work_item_from_row(row: dict[str, Any]) -> WorkItem:
    """A row of ``dead_letters`` as the work item it is (both stores' rows read alike)."""
    return WorkItem(
        id=row["id"],
        kind=row["kind"],
        flow=row["flow"],
        queue=row["queue"] or ("dead_letters" if row["kind"] == "dead_letter" else "review"),
        owner=row["owner"],
        category=row["category"] or row["error_class"] or row["step"],
        reason=row["message"] or "",
        figures=loads(row["figures"]),
        record_key=row["record_key"],
        step=row["step"],
        run_id=row["run_id"],
        created_at=row["created_at"] or row["at"],
        at=row["at"],
        due_at=row["due_at"],
        status=row["status"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        comment=row["comment"],
        escalated_at=row["escalated_at"],
        escalate_to=loads(row["escalate_to"]),
        breached=bool(row["breached"]),
        history=[_timed(entry) for entry in loads(row["history"]) or []],
        labels=loads(row["labels"]),
        resumed_run=row["resumed_run"],
        record=loads(row["record"]),
        context=loads(row["context"]),
        source_record=loads(row["source_record"]),
        flow_file=row["flow_file"],
        error_class=row["error_class"],
    )


def compensation_from_row(row: dict[str, Any]) -> Compensation:
    """A row of ``compensations`` as the compensation it is (both stores)."""
    return Compensation(
        id=row["id"],
        flow=row["flow"],
        source_key=row["source_key"],
        record_key=row["record_key"],
        step=row["step"],
        key=row["key"],
        run_id=row["run_id"],
        record=loads(row["record"]),
        meta=loads(row["meta"]),
        state=row["state"],
        at=row["at"],
        done_run=row["done_run"],
        error=row["error"],
        response=loads(row["response"]),
    )
