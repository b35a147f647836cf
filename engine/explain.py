"""What a dry run would have parked, and why: the records it would dead-letter or hold for
review, collected from the run's own events (already masked), for the run's result.

A dry run writes no state, so without this its result could only count them
(``dead_lettered 1``); with it, ``RunResult.would_dead_letter`` and ``would_review`` name
each record, the step and the reason, as ``flowyard dlq list`` would after a real run.
"""

from __future__ import annotations

import threading
from typing import Any


class DryRunNotes:
    """A run-log listener that keeps the dead letters and review items a dry run would
    make: ``dead_letters`` ({record_key, step, error}) and ``reviews`` ({record_key,
    step, queue, reason})."""

    def __init__(self) -> None:
        self.dead_letters: list[dict[str, Any]] = []
        self.reviews: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        name, outcome = event.get("event"), event.get("outcome")
        note = None
        if outcome == "dead_lettered" and (
            name == "step" or (name == "record" and event.get("step") == "source")
        ):
            note = (
                self.dead_letters,
                {
                    "record_key": event.get("record_key"),
                    "step": event.get("step"),
                    "error": event.get("error"),
                },
            )
        elif name == "step" and outcome == "review":
            note = (
                self.reviews,
                {
                    "record_key": event.get("record_key"),
                    "step": event.get("step"),
                    "queue": event.get("queue"),
                    "reason": event.get("reason"),
                },
            )
        if note is not None:
            with self._lock:
                note[0].append(note[1])
