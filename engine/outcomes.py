"""The words of a run's result: how a record ended and how a run ended.

Both are ``str`` enums, so the values stored in the state file, written to the run log
and printed by ``--output json`` are the plain words they always were (``"done"``,
``"dead_lettered"``), and a member compares equal to its word.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How a record ended, worst first: of a record that split (a route, a foreach), the
    worst outcome of any part is the record's."""

    DEAD_LETTERED = "dead_lettered"
    REVIEW = "review"  # held for a person
    PARKED = "parked"  # not final: a circuit was open; the next run takes it again
    DONE = "done"
    SKIPPED = "skipped"  # a duplicate, or unchanged since it last went through
    FILTERED = "filtered"


_RANK = {outcome: rank for rank, outcome in enumerate(Outcome)}

#: Outcomes after which a record goes no further (parked: not final, left for the next run).
STOPPED = frozenset({Outcome.DEAD_LETTERED, Outcome.REVIEW, Outcome.PARKED, Outcome.FILTERED})
#: Outcomes of a record that went through cleanly: worth remembering as unchanged, and
#: closing the open items an earlier run left for it.
FINAL_CLEAN = frozenset({Outcome.DONE, Outcome.SKIPPED, Outcome.FILTERED})


def worst(a: Outcome | None, b: Outcome | None) -> Outcome | None:
    """The worse of two outcomes; None (steps that sent nothing) counts as no outcome."""
    if b is None:
        return a
    return b if a is None or _RANK[b] < _RANK[a] else a


class RunStatus(StrEnum):
    """How a run ended (``running`` while it runs; ``crashed`` when it never ended)."""

    OK = "ok"
    DEAD_LETTERED = "dead_lettered"
    REVIEW = "review"
    STOPPED = "stopped"
    FAILED = "failed"
    RUNNING = "running"
    CRASHED = "crashed"
