"""What a run works on: records from the source, inputs that are not records, and
replayed dead letters.

Each is a work item numbered in the order it arrived (``seq``): the runner hands out
:class:`RecordWork` to the executor, dead-letters :class:`BadInput` itself, and moves the
source cursor over the numbers once every item before them is final.

A replay takes each dead letter back to the record's first lookup (the first ``enrich``
it went through, with the record as it reached it), so every answer is looked up again
and every step that used one runs again; or, ``from_start``, to the flow's first step
with the record as the source delivered it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from connectors import Item
from engine.executor import Rec
from engine.model import Flow
from engine.store import DeadLetter, WorkItem


@dataclass(slots=True)
class RecordWork:
    """A record to take through the steps, from step ``start`` (None: the first).

    ``position`` is the source cursor after it (None: the source has none); ``letters`` the
    dead letters it replays; ``queued`` the work-queue entry it came from (a worker's,
    engine/worker.py), which leaves the queue once the record is final; ``text`` the JSON
    text the source decoded the record from, if it said (:class:`connectors.Item`). ``digest``,
    ``unchanged`` and ``seen_again`` are set when the flow remembers records that went
    through (engine/unchanged.py).
    """

    seq: int
    rec: Rec
    position: Any = None
    start: str | None = None
    letters: list[DeadLetter] = field(default_factory=list)
    queued: int | None = None
    resumes: list[int] = field(default_factory=list)  # decided approvals it resumes
    digest: str | None = None
    text: str | None = None
    unchanged: bool = False  # skipped: the same as when it last went through
    seen_again: bool = False  # unchanged, and its digest's time is due to be refreshed


@dataclass(slots=True)
class BadInput:
    """An input that could not become a record: the source could not read it (``item.error``
    says why) or its record key could not be made. It is dead-lettered as it is."""

    seq: int
    item: Item
    position: Any = None
    queued: int | None = None

    @property
    def error(self) -> str:
        return self.item.error or "the input could not be read"


Work = RecordWork | BadInput


def one_line(exc: BaseException) -> str:
    """An error as one line of at most 300 characters (its type when it says nothing)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def record_key(flow: Flow, vars: dict[str, Any], data: Any, item: Item, seq: int) -> str:
    """A record's key: the flow's ``source.key`` template, else its ``id``, else its line
    (``line:N``), else its place in the run's input (``#N``)."""
    if flow.source.key is not None:
        return str(flow.source.key({"record": data, "vars": vars}))
    if isinstance(data, dict) and data.get("id") is not None:
        return str(data["id"])
    return f"line:{item.line}" if item.line is not None else f"#{seq}"


def source_work(flow: Flow, vars: dict[str, Any], items: Iterable[Item]) -> Iterator[Work]:
    """Work items for what the source delivered, in its order."""
    for seq, item in enumerate(items):
        if item.error is None:
            try:
                key = record_key(flow, vars, item.data, item, seq)
            except Exception as exc:  # a key template failing on this record
                item.error = f"the record key cannot be made: {one_line(exc)}"
            else:
                meta = {"key": key, "line": item.line, "position": item.position}
                if isinstance(item.position, dict) and "webhook" in item.position:
                    meta["webhook"] = item.position["webhook"]  # an inbox event's arrival
                rec = Rec(key=key, data=item.data, meta=meta, source=item.data)
                yield RecordWork(seq, rec, position=item.position, text=item.text)
                continue
        yield BadInput(seq, item, position=item.position)


def replay_work(flow: Flow, letters: list[DeadLetter], from_start: bool) -> Iterator[RecordWork]:
    """Work items that replay ``letters``: from each record's first lookup (else the step
    that failed), or ``from_start``."""
    if from_start:
        yield from _from_start(letters)
        return
    for seq, letter in enumerate(letters):
        context = letter.context or {}
        meta = {**(context.get("meta") or {}), "replay_of": letter.id}
        start, data = letter.step, letter.record
        lookup = context.get("lookup")
        if lookup and flow.step(lookup.get("step")) is not None:
            # look everything up again: the answers saved in the record may be stale
            start, data = lookup["step"], lookup.get("record")
        rec = Rec(
            key=letter.record_key or f"dead_letter:{letter.id}",
            data=data,
            meta=meta,
            parent=context.get("parent"),
            loop=context.get("loop") or {},
            source=letter.source_record,
        )
        yield RecordWork(seq, rec, start=start, letters=[letter])


def _from_start(letters: list[DeadLetter]) -> Iterator[RecordWork]:
    # the items of one source record (a foreach) are replayed by one pass of the record
    works: dict[str, RecordWork] = {}
    for letter in letters:
        meta = dict((letter.context or {}).get("meta") or {})
        key = str(meta.get("key") or letter.record_key or f"dead_letter:{letter.id}")
        if key in works:
            works[key].letters.append(letter)
            continue
        for name in ("index", "dry_run_unknown"):
            meta.pop(name, None)
        rec = Rec(
            key=key,
            data=letter.source_record,
            meta={**meta, "key": key, "replay_of": letter.id},
            source=letter.source_record,
        )
        works[key] = RecordWork(len(works), rec, letters=[letter])
    yield from works.values()


def resume_work(flow: Flow, items: list[WorkItem], first_seq: int = 0) -> Iterator[RecordWork]:
    """Work items that resume decided approvals: each record at its ``approve`` step, with
    the record as it reached it (the step finds the decision and goes on, or takes its
    reject branch). Approvals whose step is no longer in the flow are left alone."""
    for seq, item in enumerate(items, first_seq):
        if item.step is None or flow.step(item.step) is None:
            continue
        context = item.context or {}
        rec = Rec(
            key=item.record_key or f"approval:{item.id}",
            data=item.record,
            meta={**(context.get("meta") or {}), "resumes": item.id},
            parent=context.get("parent"),
            loop=context.get("loop") or {},
            source=item.source_record,
        )
        if context.get("lookup"):
            rec.lookup = (context["lookup"].get("step"), context["lookup"].get("record"))
        yield RecordWork(seq, rec, start=item.step, resumes=[item.id])
