"""Schedules: run flows on their ``schedule:`` from ``flowyard serve``.

Due times come from croniter, in the schedule's time zone. When clocks go forward, a slot
in the skipped hour runs when the clock jumps (as cron does); when they go back, a
wall-clock time that comes again is not due again (so a flow due every minute pauses for
the repeated hour; the default zone, UTC, has no such changes). Two promises:

- **One run per slot, whichever process.** Each due time is a slot; a process runs the
  flow for a slot only when it claims the slot in the state first
  (:meth:`StateStore.claim_schedule`), so several ``flowyard serve`` processes on one
  state run each slot once.
- **One run at a time per flow.** The run takes the flow's lease like any run; when the
  previous run (from any process, cron included) still holds it, the slot is skipped and
  counted (``flowyard_schedule_skipped_total``), never queued.

Missed slots (nothing served the state when they were due) follow the flow's
``missed:``: ``run_once`` (default) runs the flow once at start-up for all of them,
``skip`` waits for the next slot. A flow the state has never seen scheduled starts with
its next slot.

The clock is injectable: :class:`ScaledClock` makes a minute pass in a few seconds, so a
test (or a demonstration) can watch a flow due every minute run once per minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from engine.model import Flow, Schedule


class Clock:
    """Wall-clock time: ``now()`` in epoch seconds; ``wait(event, seconds)`` of it."""

    def now(self) -> float:
        return time.time()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds))


@dataclass
class ScaledClock(Clock):
    """A clock that runs ``speed`` times faster than the wall clock from ``origin``: every
    process given the same origin and speed agrees on the time."""

    origin: float
    speed: float

    def now(self) -> float:
        return self.origin + (time.time() - self.origin) * self.speed

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds) / self.speed)


def parse_clock(text: str) -> ScaledClock:
    """``SPEED@ORIGIN`` (``FLOWYARD_CLOCK``): e.g. ``30@1767225600`` makes a minute pass
    in two seconds, counted from that epoch second."""
    speed, _, origin = text.partition("@")
    try:
        clock = ScaledClock(float(origin) if origin else time.time(), float(speed))
    except ValueError:
        raise ValueError(f"FLOWYARD_CLOCK must be SPEED@EPOCH_SECONDS, not {text!r}") from None
    if not clock.speed > 0:
        raise ValueError(f"FLOWYARD_CLOCK's speed must be above 0, not {speed!r}")
    return clock


def next_due(schedule: Schedule, after: float) -> float:
    """The first due time strictly after ``after`` (epoch seconds) whose wall-clock time in
    the schedule's zone is later than ``after``'s: when clocks go back, a wall-clock time
    that comes again is not due again."""
    zone = ZoneInfo(schedule.timezone)
    start = datetime.fromtimestamp(after, zone)
    times = croniter(schedule.cron, start)
    while True:
        due: datetime = times.get_next(datetime)
        if due.replace(tzinfo=None) > start.replace(tzinfo=None):
            return due.timestamp()


def last_due(schedule: Schedule, at: float) -> float:
    """The last due time at or before ``at``."""
    zone = ZoneInfo(schedule.timezone)
    # croniter's previous time is strictly before its start: start a moment later
    start = datetime.fromtimestamp(at + 0.001, zone)
    return float(croniter(schedule.cron, start).get_prev(float))


RunFlow = Callable[[Flow, float], None]


class Scheduler:
    """Runs ``flows`` (those with a ``schedule:``) when they are due, on a thread of its
    own; each run on a thread of its own, so that a long run delays no other flow.

    ``claim(flow, due)`` claims a slot in the state (True: this process runs it);
    ``run(flow, due)`` runs the flow (taking its lease; a held lease skips the slot).
    """

    def __init__(
        self,
        flows: list[Flow],
        *,
        claim: Callable[[str, float], bool],
        last_claimed: Callable[[str], float | None],
        run: RunFlow,
        clock: Clock | None = None,
    ):
        self.flows = [f for f in flows if f.schedule is not None]
        self.claim = claim
        self.last_claimed = last_claimed
        self.run_flow = run
        self.clock = clock or Clock()
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._runs: list[threading.Thread] = []
        self.next: dict[str, float] = {}

    def start(self) -> None:
        if self.flows and self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="flowyard-schedule", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Start no more runs; wait for the ones going to end."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join()
        for t in self._runs:
            t.join()

    def _catch_up(self, now: float) -> None:
        for flow in self.flows:
            assert flow.schedule is not None
            claimed = self.last_claimed(flow.name)
            due = last_due(flow.schedule, now)
            if claimed is not None and claimed < due and flow.schedule.missed == "run_once":
                self._start(flow, due)

    def _loop(self) -> None:
        now = self.clock.now()
        self._catch_up(now)
        for flow in self.flows:
            assert flow.schedule is not None
            self.next[flow.name] = next_due(flow.schedule, now)
        while not self.stop_event.is_set():
            name, due = min(self.next.items(), key=lambda item: item[1])
            if self.clock.wait(self.stop_event, min(due - self.clock.now(), 1.0)):
                return
            now = self.clock.now()
            for flow in self.flows:
                assert flow.schedule is not None
                due = self.next[flow.name]
                if due <= now:
                    self._start(flow, due)
                    self.next[flow.name] = next_due(flow.schedule, max(due, now))

    def _start(self, flow: Flow, due: float) -> None:
        if not self.claim(flow.name, due):
            return  # another process has the slot
        self._runs = [t for t in self._runs if t.is_alive()]
        t = threading.Thread(
            target=self.run_flow, args=(flow, due), name=f"flowyard-run-{flow.name}", daemon=True
        )
        self._runs.append(t)
        t.start()
