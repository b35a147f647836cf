"""The inbox's two ends: the writer that keeps accepted events, the feed that hands them on.

**In.** :class:`InboxWriter` is one thread that owns the writes of accepted events: each
request hands it an event and waits; the thread takes every event waiting at that moment
and keeps them all in one transaction (:meth:`StateStore.add_to_inbox`), then answers
each. Under load one commit serves many requests (group commit), and no request is
answered before its event is committed: an acknowledged event survives ``kill -9``.

**Out.** :class:`InboxFeed` is the record source of one run over a flow's inbox: it claims
pending events in small batches for its holder (a claim per event, in the store, so that
processes on several machines could share one inbox) and yields each as an item whose
position is ``{"inbox": id, "webhook": arrival}``. The runner marks an event done in the
commit that makes its record final (engine/runner.py); an event whose run ended before
that is released, and one whose process was killed is freed by the next claim. The feed
ends when no event has come for ``idle`` seconds, after ``max_seconds``, or on ``stop``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from connectors import Item
from connectors._json import loads
from engine.store import InboxAdded, InboxEntry, InboxEvent, StateStore

Done = Callable[[InboxAdded | BaseException], None]

CLAIM_BATCH = 64  # events claimed at once
CLAIM_TTL = 60.0  # seconds a claim lasts unless its holder renews it (each claim renews)
GROUP_MAX = 512  # events kept in one transaction at most


def record_item(entry: InboxEntry) -> Item:
    """An inbox event as the runner's item: the body parsed as JSON (exact decimals, ids
    as integers), or an error that dead-letters it with its raw text."""
    position = {"inbox": entry.id, "webhook": entry.arrival()}
    try:
        return Item(data=loads(entry.body), position=position)
    except (ValueError, UnicodeDecodeError) as exc:
        raw = entry.body.decode("utf-8", errors="replace")
        return Item(error=f"the webhook's body is not JSON: {exc}", raw=raw, position=position)


@dataclass
class InboxFeed:
    """The events of ``flow``'s inbox for one run, claimed for ``holder``.

    ``first`` are events claimed already (the processor claims before it starts a run, so
    that an empty inbox starts none); ``wake`` is set when new events arrive.
    """

    store: StateStore
    flow: str
    holder: str
    wake: threading.Event
    stop: threading.Event
    first: list[InboxEntry] = field(default_factory=list)
    idle: float = 0.5
    max_seconds: float = 60.0
    batch: int = CLAIM_BATCH
    ttl: float = CLAIM_TTL
    handed_out: int = 0

    def claim(self) -> list[InboxEntry]:
        return self.store.claim_inbox(self.flow, self.holder, self.batch, self.ttl)

    def __iter__(self) -> Iterator[Item]:
        ends = time.monotonic() + self.max_seconds
        entries = self.first
        while True:
            for entry in entries:
                self.handed_out += 1
                yield record_item(entry)
            if self.stop.is_set() or time.monotonic() >= ends:
                return
            entries = self.claim()
            if entries:
                continue
            self.wake.clear()
            entries = self.claim()  # what arrived before the clear
            if not entries and not self.wake.wait(self.idle):
                return  # nothing new for a while: the run ends, its lease goes


class InboxWriter:
    """Keeps accepted events, many per transaction, on a thread of its own.

    :meth:`submit` hands an event over with a callback that gets the :class:`InboxAdded`
    (or the exception the store raised); :meth:`add` waits for it. ``on_commit`` is told
    the flows that got new events (the processors' wake-up).
    """

    def __init__(
        self,
        store: StateStore,
        on_commit: Callable[[set[str]], None] = lambda flows: None,
    ):
        self.store = store
        self.on_commit = on_commit
        self._queue: queue.Queue[tuple[str, InboxEvent, Done] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="flowyard-inbox", daemon=True)
        self._thread.start()
        self.commits = 0  # transactions, for the benchmark's record

    def submit(self, flow: str, event: InboxEvent, done: Done) -> None:
        self._queue.put((flow, event, done))

    def add(self, flow: str, event: InboxEvent, timeout: float = 30.0) -> InboxAdded:
        """Keep one event and wait until it is committed."""
        box: list[InboxAdded | BaseException] = []
        ready = threading.Event()

        def done(answer: InboxAdded | BaseException) -> None:
            box.append(answer)
            ready.set()

        self.submit(flow, event, done)
        if not ready.wait(timeout):
            raise TimeoutError(f"the state did not keep the event within {timeout:.0f} s")
        answer = box[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        """Keep what was handed over so far, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            closing = False
            while len(group) < GROUP_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                group.append(more)
            self._write(group)
            if closing:
                return

    def _write(self, group: list[tuple[str, InboxEvent, Done]]) -> None:
        try:
            added = self.store.add_to_inbox([(flow, event) for flow, event, _ in group])
        except BaseException as exc:  # each waiting request answers with the fault
            for _, _, done in group:
                done(exc)
            return
        self.commits += 1
        pairs = list(zip(group, added, strict=True))
        for (_, _, done), answer in pairs:
            done(answer)
        self.on_commit({flow for (flow, _, _), answer in pairs if answer.new})
