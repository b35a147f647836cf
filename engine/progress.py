"""A run's progress between two commits: the final record states gathered, and the
watermark that says how far the source cursor may move.

Records finish out of order when a flow runs them on several lanes, and a parked record
is not final at all. The cursor must never pass a record whose final state is not
committed, so :class:`Watermark` moves it over the contiguous run of final records only,
and :class:`Batch` hands the store one :class:`~engine.store.Progress` holding those
states and that cursor, committed together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine.codec import dumps
from engine.executor import Failure
from engine.outcomes import Outcome
from engine.store import DigestWrite, KeyWrite, ParkedItem, Progress, Trace
from engine.work import BadInput


class Watermark:
    """The source position after the last record of the contiguous run of final ones."""

    def __init__(self) -> None:
        self._positions: dict[int, Any] = {}  # seq -> position, of work not yet passed
        self._finished: set[int] = set()
        self._next = 0
        self._position: Any = None
        self._moved = False
        self._blocked = False  # a parked record: the cursor stays before it

    def add(self, seq: int, position: Any) -> None:
        """Work item ``seq`` was handed out; ``position`` is the cursor after it (or None)."""
        self._positions[seq] = position

    def finish(self, seq: int, final: bool) -> None:
        """Work item ``seq`` is done with: final, or not (parked: the cursor stops before it
        for the rest of the run)."""
        if final:
            self._finished.add(seq)
        else:
            self._blocked = True
        while self._next in self._finished and not self._blocked:
            position = self._positions.pop(self._next)
            self._finished.discard(self._next)
            if position is not None:
                self._position, self._moved = position, True
            self._next += 1

    def moved_to(self) -> Any:
        """The position to commit, or None when it has not moved since the last commit."""
        return self._position if self._moved else None

    def committed(self) -> None:
        self._moved = False


@dataclass
class Batch:
    """Final record states gathered since the last commit, and what to do once they are
    committed: ``replayed`` are ``(dead letter id, how its record did)`` of a replay."""

    traces: list[Trace] = field(default_factory=list)
    items: list[ParkedItem] = field(default_factory=list)
    digests: list[DigestWrite] = field(default_factory=list)
    seen_records: list[str] = field(default_factory=list)
    seen_keys: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    replayed: list[tuple[int, str]] = field(default_factory=list)
    work_done: list[int] = field(default_factory=list)  # queue entries final (a worker's)
    inbox_done: list[int] = field(default_factory=list)  # inbox events now final

    def progress(self, run_id: str, cursor: Any, keys: list[KeyWrite] | None = None) -> Progress:
        """What to commit: these states, the group's key states, and the cursor (None: it
        stays)."""
        return Progress(
            run_id,
            keys=keys or [],
            traces=self.traces,
            items=self.items,
            cursor=cursor,
            resolved=self.resolved,
            digests=self.digests,
            seen_records=self.seen_records,
            seen_keys=self.seen_keys,
            work_done=self.work_done,
            inbox_done=self.inbox_done,
        )

    def clear(self) -> None:
        """Start the next batch (the lists handed out stay as they were)."""
        self.traces, self.items, self.digests = [], [], []
        self.seen_records, self.seen_keys, self.resolved, self.replayed = [], [], [], []
        self.work_done = []
        self.inbox_done = []


# -- rows of a finished record ---------------------------------------------------------------------
def parked_item(run_id: str, failure: Failure) -> dict[str, Any]:
    """The fields of a dead letter or review item for a failure, with what a replay needs
    (the record as the failing step got it, as the source gave it, and where it was)."""
    rec = failure.rec
    context: dict[str, Any] = {"meta": rec.meta, "parent": rec.parent, "loop": rec.loop}
    if rec.lookup is not None:
        context["lookup"] = {"step": rec.lookup[0], "record": rec.lookup[1]}
    item: dict[str, Any] = {
        "run_id": run_id,
        "record_key": rec.key,
        "step": failure.step,
        "attempts": failure.attempts,
        "record": rec.data,
        "source_record": rec.source,
        "context": context,
        "line": rec.meta.get("line"),
    }
    if failure.review is not None:
        review = failure.review
        item.update(
            kind=review.kind, queue=review.queue, message=review.reason, figures=review.figures
        )
        assignment = review.assignment
    else:
        item.update(
            kind="dead_letter",
            error_class=type(failure.error).__name__,
            message=describe(failure.error),
        )
        assignment = failure.assignment
    if assignment is not None:  # its queue, owner, category and SLA (engine/work_items.py)
        item.update(assignment.fields())
    return item


def bad_input_rows(run_id: str, flow: str, w: BadInput) -> tuple[str, dict[str, Any], Trace]:
    """The key, the dead letter's fields and the trace of an input that could not become a
    record: unreadable, or no key.

    It is kept under a key of its own: its line (``line:N``, the same line refreshes the
    same dead letter on every run of a file), else the run and its place in the run's input
    (``input:<run>#<n>``), so two such inputs never share a dead letter. The record (when
    it was read) and its raw text are kept with it.
    """
    item = w.item
    key = f"line:{item.line}" if item.line is not None else f"input:{run_id}#{w.seq}"
    raw = item.raw
    if raw is None and item.data is not None:
        raw = raw_text(item.data)
    unreadable = item.data is None
    letter = {
        "kind": "dead_letter",
        "run_id": run_id,
        "record_key": key,
        "step": "source",
        "error_class": "UnreadableRecord" if unreadable else "UnkeyedRecord",
        "message": w.error,
        "raw": raw,
        "line": item.line,
        "attempts": 1,
        "record": item.data,
        "source_record": item.data,
        "context": {"meta": {"line": item.line, "position": item.position}},
    }
    steps: list[list[Any]] = [["source", "unreadable" if unreadable else "unkeyed", w.error]]
    trace = Trace(run_id, flow, key, Outcome.DEAD_LETTERED, steps, w.error, time.time())
    return key, letter, trace


def describe(error: BaseException | None) -> str:
    """An error's message with the target's answer, which is what a person can act on."""
    message = str(error)
    response = getattr(error, "response", None)
    if response not in (None, "", {}):
        answer = response if isinstance(response, str) else dumps(response)
        if answer not in message:
            message += f"; the target answered: {answer[:2000]}"
    return message


def raw_text(data: Any) -> str | None:
    """A record as JSON text, for a dead letter that has no raw line of its own."""
    try:
        return dumps(data)
    except Exception:  # what cannot be written as JSON is shown as Python shows it
        return repr(data)[:100_000]
