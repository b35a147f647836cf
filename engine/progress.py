"""A run's progress between two commits: the final record states gathered, and the
watermark that says how far the source cursor may move.

Records finish out of order when a flow runs them on several lanes, and a parked record
is not final at all. The cursor must never pass a record whose final state is not
committed, so :class:`Watermark` moves it over the contiguous run of final records only,
and :class:`Batch` hands the store one :class:`~engine.store.Progress` holding those
states and that cursor, committed together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.codec import dumps
from engine.store import DigestWrite, ParkedItem, Progress, Trace


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

    def progress(self, run_id: str, cursor: Any) -> Progress:
        """What to commit: these states, and the cursor (None: it stays)."""
        return Progress(
            run_id,
            traces=self.traces,
            items=self.items,
            cursor=cursor,
            resolved=self.resolved,
            digests=self.digests,
            seen_records=self.seen_records,
            seen_keys=self.seen_keys,
        )

    def clear(self) -> None:
        """Start the next batch (the lists handed out stay as they were)."""
        self.traces, self.items, self.digests = [], [], []
        self.seen_records, self.seen_keys, self.resolved, self.replayed = [], [], [], []


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
