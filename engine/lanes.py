"""Work on several lanes at once: a flow's ``concurrency: N``.

Sends that wait on another system leave the engine idle, so several lanes take records
through the steps at the same time. Items that share a key (the same order, the same SKU) stay in
the order the source gave them: while a key has items on a lane, its next ones go there;
an item whose key has none goes to the lane with the least work, so that no lane is left
with a longer share than the others at the end. Results come back to the calling thread,
which alone accounts for them: the runner's batches and watermark need no lock. Each lane
holds at most a few items, so memory stays bounded however large the source.

A flow's ``concurrency: N`` is how many calls a target gets at once: each connection lets
N calls run at once (engine/retry.py, :class:`~engine.retry.RateLimiter`), and the run has
half as many lanes again (:func:`lane_count`), so that while N records wait on the target
the next ones are mapped, validated, looked up and marked in flight, ready to be sent the
moment a call ends, instead of each call waiting for its own record's work.

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

_QUEUED = 2  # items handed to a lane and not answered yet: one at work, one ready


def lane_count(concurrency: int) -> int:
    """How many lanes a run of ``concurrency`` has: half as many again, so that records are
    ready when a call ends (at most ``concurrency`` calls run at once on a connection)."""
    return concurrency + (concurrency + 1) // 2 if concurrency > 1 else 1


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
    """Runs ``execute`` on ``lanes`` threads and ``complete`` on the caller's thread.

    A key's items go to the lane that holds its items while it holds any (so they are
    executed in order), other items to the lane with the least work queued, so that no lane
    is left with a longer share of the work than the others.
    """

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
        self._done: queue.Queue[tuple[int, T, R | BaseException | _NotRun]] = queue.Queue()
        self._placed: dict[int, tuple[Hashable, int]] = {}  # seq -> (key, lane), in flight
        self._queued = [0] * lanes  # items handed to each lane and not yet answered
        self._keys: dict[Hashable, tuple[int, int]] = {}  # key -> (lane, its items there)

    def run(self, work: Iterable[T], key: Callable[[T], Hashable]) -> None:
        """Execute every item of ``work`` on a lane (the one holding its ``key``'s items, if
        any) and complete it here, as results come back; stop handing out work once
        ``stopping()`` is true (items already queued are not run, and not completed). An
        exception ``execute`` raised is raised here, after every lane has ended."""
        inboxes: list[queue.SimpleQueue[tuple[int, T] | None]] = [
            queue.SimpleQueue() for _ in range(self.count)
        ]
        threads = [
            threading.Thread(target=self._lane, args=(inbox,), daemon=True) for inbox in inboxes
        ]
        for t in threads:
            t.start()
        try:
            for seq, item in enumerate(work):
                if self._stop.is_set():
                    break
                item_key = key(item)
                lane = self._lane_for(item_key)
                if lane is None:
                    break
                self._placed[seq] = (item_key, lane)
                self._assign(item_key, lane, +1)
                inboxes[lane].put((seq, item))
                self._drain(block=False)
            while self._placed:
                self._drain(block=True)
        finally:
            if self.stopping():
                self._stop.set()
            for inbox in inboxes:
                inbox.put(None)
            for t in threads:
                t.join()

    def _lane_for(self, key: Hashable) -> int | None:
        """The lane holding ``key``'s items, else the one with the least work queued; waits
        while it is full. None when the work is stopping."""
        while not self._stop.is_set():
            bound = self._keys.get(key)
            lane = bound[0] if bound else min(range(self.count), key=self._queued.__getitem__)
            if self._queued[lane] < _QUEUED:
                return lane
            self._drain(block=True)
        return None

    def _assign(self, key: Hashable, lane: int, change: int) -> None:
        assign(self._keys, self._queued, key, lane, change)

    def _lane(self, inbox: queue.SimpleQueue[tuple[int, T] | None]) -> None:
        while True:
            got = inbox.get()
            if got is None:
                return
            seq, item = got
            if self._stop.is_set():
                self._done.put((seq, item, _NOT_RUN))
                continue
            try:
                self._done.put((seq, item, self.execute(item)))
            except BaseException as exc:  # raised in the caller's thread
                self._done.put((seq, item, exc))

    def _drain(self, block: bool) -> None:
        while self._placed:
            try:
                seq, item, answer = self._done.get(block=block, timeout=0.2 if block else None)
            except queue.Empty:
                return
            self._assign(*self._placed.pop(seq), -1)
            if isinstance(answer, BaseException):
                self._stop.set()
                raise answer
            if not isinstance(answer, _NotRun):
                self.complete(item, answer)
            if self.stopping():
                self._stop.set()
            block = False


def assign(
    keys: dict[Hashable, tuple[int, int]], queued: list[int], key: Hashable, lane: int, change: int
) -> None:
    """Count ``change`` items of ``key`` onto ``lane``: ``queued[lane]`` is what the lane
    holds, ``keys[key]`` the lane holding the key's items and how many (gone at none)."""
    queued[lane] += change
    count = keys.get(key, (lane, 0))[1] + change
    if count > 0:
        keys[key] = (lane, count)
    else:
        keys.pop(key, None)
