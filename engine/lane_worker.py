"""What a run's lane process does (engine/lane_processes.py): the executor, with a
connection of its own to the state, connectors of its own and a log that goes back to the
run's.

The process is forked from the run, so it has the compiled flow, the run's vars and the
secrets known so far. It must not touch the run's state connection or log file (they are
the run's); it opens the state again, builds its connectors on first use, and keeps its
sends' key outcomes in a group of its own (engine/group.py), committed with its next
in-flight mark or a flush; a record's result goes back once they are committed, with the
run-log events its steps wrote and the secrets the process's connectors declared, so the
run logs and masks as if the record had been taken through in its own process.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from connectors import _json
from engine.context import RunContext
from engine.executor import Executor, Rec, RecordResult
from engine.group import Group
from engine.lane_processes import portable
from engine.runlog import RunLog
from engine.store import StateLocation, open_store

#: a run-log event made in a lane process: (needs a person, name, facts); see RunLog
Relayed = tuple[bool, str, dict[str, Any]]
#: a record sent to a lane process: (key, the source's JSON text, meta) or (record, start)
Payload = tuple[str, str, dict[str, Any]] | tuple[Rec, str | None]


class RelayLog(RunLog):
    """A lane process's run log: events are kept per lane, to go back with the record's
    result; the run writes them (:func:`replay`). Secrets its connectors declare are masked
    here at once and told to the run with every result."""

    def __init__(self, log: RunLog):
        super().__init__(log.run_id, log.flow, debug=log.debug)
        self.redact = log.redact  # the run's, as forked: every secret known so far
        self._detailed = log.detailed
        self._local = threading.local()
        self._lock = threading.Lock()
        self.learned: list[str] = []

    @property
    def detailed(self) -> bool:
        return self._detailed

    def event(self, name: str, **facts: Any) -> None:
        self._events().append((True, name, facts))

    def detail(self, name: str, **facts: Any) -> None:
        if self._detailed:
            self._events().append((False, name, facts))

    def learn(self, secret: str) -> None:
        """A connector of this process declared ``secret``."""
        self.redact.add(secret)
        with self._lock:
            if secret not in self.learned:
                self.learned.append(secret)

    def take(self) -> list[Relayed]:
        """The events this lane wrote since it last took them."""
        events = self._events()
        self._local.events = []
        return events

    def _events(self) -> list[Relayed]:
        events: list[Relayed] | None = getattr(self._local, "events", None)
        if events is None:
            events = self._local.events = []
        return events


def replay(log: RunLog, events: list[Relayed]) -> None:
    """Write a lane process's events in the run's log."""
    for needs_person, name, facts in events:
        (log.event if needs_person else log.detail)(name, **facts)


class LaneWorker:
    """The executor of one lane process (a :class:`~engine.lane_processes.Worker`)."""

    def __init__(self, ctx: RunContext, state: StateLocation, writing: AbstractContextManager[Any]):
        store = open_store(state)
        # key look-ups on a connection of their own: they need not wait for the writes
        self.reader = open_store(state)
        self.log = RelayLog(ctx.log)
        self.ctx = dataclasses.replace(
            ctx,
            store=store,
            log=self.log,
            connections=ctx.connections.for_lane_process(self.log.learn),
        )
        # connectors here hold no transaction of the run's: keys are marked, then sent
        self.group = Group(store, ctx.flow.name, hold=False, reader=self.reader, writing=writing)
        self.executor = Executor(self.ctx, self.group)

    def execute(self, payload: Payload) -> tuple[RecordResult, list[Relayed], list[str]]:
        """One record through the steps: its result, its events, the secrets learned."""
        if len(payload) == 3:  # the source's text: decoded as the run decoded it
            key, text, meta = payload
            data = _json.loads(text)
            rec, start = Rec(key=key, data=data, meta=meta, source=data), None
        else:
            rec, start = payload
        result = self.executor.process(rec, start)
        for failure in result.failures:
            if failure.error is not None:
                failure.error = portable(failure.error)
        return result, self.log.take(), list(self.log.learned)

    def settled(self) -> int:
        """How many outcomes of this process's sends are committed (see :meth:`ticket`)."""
        return self.group.committed

    def ticket(self) -> int:
        """The outcomes remembered so far: a result made before this call may go back to
        the run once :meth:`settled` reaches it."""
        return self.group.remembered

    def on_settled(self, tell: Callable[[int], None]) -> None:
        """Call ``tell(settled)`` after each commit of outcomes (on the committing thread)."""
        self.group.on_commit = tell

    def flush(self) -> None:
        self.group.flush_outcomes()

    def close(self) -> None:
        self.ctx.connections.close()
        self.ctx.store.close()
        self.reader.close()
