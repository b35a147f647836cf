"""Work items at run time and for people: who owns an item, by when, and how queues stand.

Every record that needs a person becomes a work item in the state store
(engine/store/work_rows.py): a dead letter, a review item or an approval. Each is put in a
**queue** with an **owner**, a **reason category** and, when the flow or the step says
``due:``, a due time; :func:`assign` works those out from the step and the flow's
``queues:``. Past its due time an open item is **escalated** (:func:`escalate`): moved to
the queue's or step's ``escalate_to``, counted as an SLA breach, and announced as an
``item_escalated`` event to whoever listens (the run log, the library's listeners, an
alert channel). :func:`queue_summary` is ``flowyard queue list``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.model import Flow, QueuePolicy
from engine.runlog import Listener
from engine.store import StateStore, WorkItem

#: The queue of a flow's dead letters (its owner and SLA: ``queues: {dead_letters: ...}``).
DEAD_LETTER_QUEUE = "dead_letters"
#: Shown for an item whose queue names no owner.
UNASSIGNED = "unassigned"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a work item goes: its queue, owner, reason category, SLA and escalation."""

    queue: str
    owner: str
    category: str
    due_s: float | None = None
    escalate_to: dict[str, str] | None = None

    def fields(self) -> dict[str, Any]:
        """The :class:`~engine.store.ParkedItem` fields it sets."""
        return {
            "queue": self.queue,
            "owner": self.owner,
            "category": self.category,
            "due_s": self.due_s,
            "escalate_to": self.escalate_to,
        }


def assign(
    flow: Flow,
    queue: str,
    category: str,
    *,
    owner: str | None = None,
    due_s: float | None = None,
    escalate_to: dict[str, str] | None = None,
) -> Assignment:
    """The assignment of an item in ``queue``: what the step says, else the flow's
    ``queues:`` entry for it, else no SLA and the owner ``unassigned``."""
    policy = flow.queues.get(queue) or QueuePolicy(queue)
    return Assignment(
        queue=queue,
        owner=owner or policy.owner or UNASSIGNED,
        category=category,
        due_s=due_s if due_s is not None else policy.due_s,
        escalate_to=escalate_to or policy.escalate_to,
    )


def dead_letter_assignment(flow: Flow, category: str) -> Assignment:
    """A dead letter's: the flow's ``dead_letters`` queue, by reason category."""
    return assign(flow, DEAD_LETTER_QUEUE, category)


def render_labels(flow: Flow, context: dict[str, Any]) -> dict[str, Any] | None:
    """The flow's labels of a record (None when it has none); a label that cannot be
    rendered on this record is None rather than a failure of the record."""
    if not flow.labels:
        return None
    labels: dict[str, Any] = {}
    for name, template in flow.labels.items():
        try:
            value = template(context)
        except Exception:
            value = None
        labels[name] = None if value in ("", None) else str(value)
    return labels


# -- escalation -------------------------------------------------------------------------------


def escalation_event(item: WorkItem) -> dict[str, Any]:
    """The ``item_escalated`` event of an item just escalated: what an alert needs."""
    moved: dict[str, Any] = next(
        (h for h in reversed(item.history) if h.get("event") == "escalated"), {}
    )
    return {
        "event": "item_escalated",
        "ts": time.time(),
        "flow": item.flow,
        "item_id": item.id,
        "kind": item.kind,
        "record_key": item.record_key,
        "category": item.category,
        "queue": item.queue,
        "owner": item.owner,
        "from": moved.get("from"),
        "due_at": item.due_at,
        "escalated_at": item.escalated_at,
        "reason": item.reason[:300],
    }


def escalate(
    store: StateStore,
    *,
    now: float | None = None,
    flow: str | None = None,
    listeners: Iterable[Listener] = (),
) -> list[WorkItem]:
    """Escalate every open item past due (of one flow, or all) and tell ``listeners``
    (each gets one ``item_escalated`` event per item; a listener that raises is ignored:
    an alert channel that is down must not stop the escalation)."""
    escalated = store.escalate_due(now, flow)
    for item in escalated:
        event = escalation_event(item)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                pass
    return escalated


# -- queue list ---------------------------------------------------------------------------------
@dataclass
class QueueRow:
    """One queue and owner: how many items wait, how old the oldest is, how many are past
    due, and how many were escalated to it (SLA breaches)."""

    queue: str
    owner: str
    depth: int
    oldest_age_s: float
    median_age_s: float
    overdue: int
    breached: int
    kinds: dict[str, int]
    flows: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def queue_summary(items: Iterable[WorkItem], now: float | None = None) -> list[QueueRow]:
    """Open items grouped by queue and owner, the deepest queue first."""
    now = time.time() if now is None else now
    groups: dict[tuple[str, str], list[WorkItem]] = {}
    for item in items:
        groups.setdefault((item.queue, item.owner or UNASSIGNED), []).append(item)
    rows = []
    for (queue, owner), members in groups.items():
        ages = sorted(item.age(now) for item in members)
        kinds: dict[str, int] = {}
        for item in members:
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
        rows.append(
            QueueRow(
                queue=queue,
                owner=owner,
                depth=len(members),
                oldest_age_s=round(ages[-1], 1),
                median_age_s=round(ages[len(ages) // 2], 1),
                overdue=sum(1 for item in members if item.overdue(now)),
                breached=sum(1 for item in members if item.breached),
                kinds=kinds,
                flows=sorted({item.flow for item in members}),
            )
        )
    return sorted(rows, key=lambda r: (-r.depth, -r.oldest_age_s, r.queue, r.owner))


def age_text(seconds: float) -> str:
    """An age for people: 45s, 12m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            digits = 0 if seconds >= 10 * size else 1
            return f"{seconds / size:.{digits}f}{unit}"
    return f"{seconds:.0f}s"
