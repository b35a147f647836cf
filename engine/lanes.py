"""Work on several lanes at once: a flow's ``concurrency: N``.

Sends that wait on another system leave the engine idle, so N lanes take records through
the steps at the same time. Each item goes to the lane its key hashes to, so items that
share a key (the same order, the same SKU) stay in the order the source gave them.
Results come back to the calling thread, which alone accounts for them: the runner's
batches and watermark need no lock. Each lane holds at most a small queue, so memory
stays bounded however large the source.

What the lanes are depends on the connectors the flow's steps call (:func:`lane_kind`,
``Connector.lanes``): worker processes (engine/lane_processes.py) when every one of them
can run in another process, threads (:class:`Lanes`, here) when one must stay in the run's
process, and no lanes at all when every call is work on this machine (a file, a local
database), which lanes would only slow down.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from connectors import Registry
from connectors.base import LaneKind
from engine.model import CallStep, Flow

T = TypeVar("T")
R = TypeVar("R")

_QUEUED = 32  # items waiting per lane


def lane_kind(flow: Flow, registry: Registry, dry_run: bool = False) -> LaneKind:
    """What lanes a run of ``flow`` uses (docs/semantics.md, "Concurrency"): ``"none"``
    when its concurrency is 1, it is a dry run (which calls nothing) or every connector
    its steps call does local work; ``"processes"`` when every one of them can run in a
    lane process; else ``"threads"``."""
    if flow.concurrency <= 1 or dry_run:
        return "none"
    kinds: set[LaneKind] = set()
    for step, _, _ in flow.walk():
        if isinstance(step, CallStep):
            cls = registry.get(flow.connections[step.connection].connector)
            kinds.add(cls.lanes if cls is not None else "threads")
    if kinds <= {"none"}:
        return "none"
    return "processes" if kinds == {"processes"} else "threads"


class _NotRun:
    """A lane's answer for an item it skipped because the work is stopping."""


_NOT_RUN = _NotRun()


class Lanes(Generic[T, R]):
    """Runs ``execute`` on ``lanes`` threads and ``complete`` on the caller's thread."""

    def __init__(
        self,
        lanes: int,
        execute: Callable[[T], R],
        complete: Callable[[T, R], None],
        stopping: Callable[[], bool],
    ):
        self.count = lanes
        self.execute = execute
        self.complete = complete
        self.stopping = stopping
        self._stop = threading.Event()
        self._done: queue.Queue[tuple[T, R | BaseException | _NotRun]] = queue.Queue()
        self._in_flight = 0

    def run(self, work: Iterable[T], key: Callable[[T], Hashable]) -> None:
        """Execute every item of ``work`` on the lane of its ``key`` and complete it here, as
        results come back; stop handing out work once ``stopping()`` is true (items already
        queued are not run, and not completed). An exception ``execute`` raised is raised
        here, after every lane has ended."""
        inboxes: list[queue.Queue[T | None]] = [
            queue.Queue(maxsize=_QUEUED) for _ in range(self.count)
        ]
        threads = [
            threading.Thread(target=self._lane, args=(inbox,), daemon=True) for inbox in inboxes
        ]
        for t in threads:
            t.start()
        try:
            for item in work:
                if self._stop.is_set():
                    break
                inbox = inboxes[hash(key(item)) % self.count]
                while True:
                    try:
                        inbox.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        self._drain(block=False)
                self._in_flight += 1
                self._drain(block=False)
            while self._in_flight:
                self._drain(block=True)
        finally:
            if self.stopping():
                self._stop.set()
            for inbox in inboxes:
                inbox.put(None)
            for t in threads:
                t.join()

    def _lane(self, inbox: queue.Queue[T | None]) -> None:
        while True:
            item = inbox.get()
            if item is None:
                return
            if self._stop.is_set():
                self._done.put((item, _NOT_RUN))
                continue
            try:
                self._done.put((item, self.execute(item)))
            except BaseException as exc:  # raised in the caller's thread
                self._done.put((item, exc))

    def _drain(self, block: bool) -> None:
        while self._in_flight:
            try:
                item, answer = self._done.get(block=block, timeout=0.2 if block else None)
            except queue.Empty:
                return
            self._in_flight -= 1
            if isinstance(answer, BaseException):
                self._stop.set()
                raise answer
            if not isinstance(answer, _NotRun):
                self.complete(item, answer)
            if self.stopping():
                self._stop.set()
            block = False
