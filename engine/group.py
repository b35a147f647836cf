"""Group commit: the state and target writes of many records, committed together.

A run commits its records in groups (a flow's ``group:``, by default 500 records or 0.2 s,
whichever comes first; docs/flows.md). What a group holds until its commit depends on
the target a send goes to (docs/semantics.md, "Group commit"):

- **A target that takes the group in one transaction** (a connector whose
  :meth:`~connectors.Connector.begin_group` says so: the sqlite connector) writes the
  group's rows in one transaction of its own. The sends' key states wait here, in memory,
  and are committed with the records' traces and the cursor, *after* the target's
  transaction committed: a crash before that loses the rows and the keys together, and
  the next run sends them again; a crash between the two commits leaves rows the state
  does not know of, which the next run writes again (an upsert: harmless).
- **Any other target** (HTTP, an ERP) gets each request's key committed ``in_flight``
  before the request, as without groups. Its outcome (``done`` with the answer, or
  ``failed``) waits here and goes out with the next commit that happens anyway: the next
  in-flight mark, or the group's commit. So a kill leaves at most one answered request
  per lane in flight, which the next run repeats with the same ``Idempotency-Key``.

A run whose lanes are processes (engine/lane_processes.py) has one group per lane
process, with the process's own connection to the state: the process marks its requests,
and its outcomes go out with its next mark (or a flush of their own, when no mark comes
soon); a record's result goes back to the run only once the outcomes of its sends are
committed (:attr:`Group.remembered`, :attr:`Group.committed`), so the run's group commit
never waits for the lane processes.

Until they are committed, the group's key states are what the executor sees first
(:meth:`Group.get_key`): a second record with the same key in the same group is a
duplicate, as it would be after the commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from connectors import Connector
from engine.codec import dumps
from engine.store import KeyState, KeyWrite, StateStore


def key_state(write: KeyWrite) -> KeyState:
    """A key write as the store would give it back once committed."""
    response = dumps(write.response) if write.response is not None else None
    return KeyState(
        key=write.key,
        state=write.state,
        fingerprint=write.fingerprint,
        sent_key=write.sent_key,
        response_json=response,
        run_id=write.run_id,
        updated_at=time.time(),
        record_key=write.record_key,
        step=write.step,
    )


class Group:
    """The key writes of one run's open group, and the connectors holding its rows.

    Thread-safe: a run's lanes send through it at once. ``immediate`` makes it write every
    key state at once and group nothing (what a run did before groups; what the executor
    does when it is used on its own). ``hold=False`` never asks a connector to hold the
    group (a lane process's group: its connectors' transactions are not the run's);
    ``reader``, a second connection to the state, answers key look-ups, so that they do not
    wait for writes; ``writing`` is held around each write (one shared by the run's
    processes: engine/lane_processes.py).
    """

    def __init__(
        self,
        store: StateStore,
        flow: str,
        *,
        immediate: bool = False,
        hold: bool = True,
        reader: StateStore | None = None,
        writing: AbstractContextManager[Any] | None = None,
    ):
        self.store = store
        self.flow = flow
        self.immediate = immediate
        self.hold = hold
        self.reader = reader or store
        self.write_lock = writing or nullcontext()
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # taken outcomes are written before the next take
        # key -> its last state written in this group, not yet committed
        self._after_targets: dict[str, KeyWrite] = {}  # sends held by a target's transaction
        self._outcomes: dict[str, KeyWrite] = {}  # answers of sends committed in flight
        self._asked: dict[int, bool] = {}  # id(connector) -> it holds this group's calls
        self._holding: list[tuple[str, Connector]] = []  # (connection name, connector)
        self.remembered = 0  # outcomes remembered so far (outcome() calls)
        self.committed = 0  # of those, how many are in the state for sure
        self.on_commit: Callable[[int], None] | None = None  # told ``committed`` after a write

    # -- what the executor asks --------------------------------------------------------------
    def holds(self, connector: Connector, name: str = "") -> bool:
        """Whether ``connector`` (of connection ``name``) holds this group's calls in one
        transaction (asked once per group: :meth:`~connectors.Connector.begin_group`)."""
        if self.immediate or not self.hold:
            return False
        with self._lock:
            held = self._asked.get(id(connector))
            if held is None:
                held = bool(connector.begin_group())
                self._asked[id(connector)] = held
                if held:
                    self._holding.append((name, connector))
            return held

    def get_key(self, key: str) -> KeyState | None:
        """The key's state: as written in this group, else as the store has it."""
        with self._lock:
            write = self._after_targets.get(key) or self._outcomes.get(key)
        if write is not None:
            return key_state(write)
        return self.reader.get_key(self.flow, key)

    def mark_in_flight(self, write: KeyWrite) -> None:
        """Commit ``write`` (a key ``in_flight``) before its request, with the outcomes
        waiting since the last commit: one transaction, committed on return."""
        if self.immediate:
            self.store.write_keys(self.flow, [write])
            return
        with self._writing:
            self._write_waiting([write])

    def flush_outcomes(self) -> None:
        """Commit the outcomes waiting since the last commit: on return, every outcome
        remembered before the call is in the state (what a lane process does when no mark
        took them soon enough, and at its end)."""
        with self._writing:
            self._write_waiting([])

    def _write_waiting(self, more: list[KeyWrite]) -> None:
        with self._lock:
            waiting = list(self._outcomes.values())
            self._outcomes.clear()
            upto = self.remembered  # every outcome remembered so far is written below
        if waiting or more:
            try:
                with self.write_lock:
                    self.store.write_keys(self.flow, [*waiting, *more])
            except BaseException:
                with self._lock:  # not written: they wait for the next commit
                    for w in waiting:
                        self._outcomes.setdefault(w.key, w)
                raise
        if upto > self.committed:  # under self._writing: one writer at a time
            self.committed = upto
            if self.on_commit is not None:
                self.on_commit(upto)

    def outcome(self, write: KeyWrite, *, held: bool) -> None:
        """Remember a request's outcome; ``held``: the request went to a connector that
        holds the group (its key is committed after the target's transaction)."""
        if self.immediate:
            self.store.write_keys(self.flow, [write])
            return
        with self._lock:
            self.remembered += 1
            if held:
                self._after_targets[write.key] = write
                self._outcomes.pop(write.key, None)
            else:
                self._outcomes[write.key] = write
                self._after_targets.pop(write.key, None)

    # -- what the runner does at the end of a group --------------------------------------------
    def take(self) -> list[KeyWrite]:
        """The key writes to commit with this group's progress, taken out of the group.

        Take them *before* :meth:`commit_targets`: a key taken was written after its row
        reached the target's transaction, so the commit that follows holds that row.
        """
        with self._lock:
            writes = [*self._outcomes.values(), *self._after_targets.values()]
            self._outcomes.clear()
            self._after_targets.clear()
        return writes

    def commit_targets(self) -> None:
        """Commit every target transaction of the group; the next call starts a new group.

        Raises :class:`GroupLost` naming the first target that could not commit; the
        targets after it are rolled back (those before it kept their rows, which the next
        run writes again, as after a crash between the two commits).
        """
        with self._lock:
            holding, self._holding, self._asked = self._holding, [], {}
        for i, (name, connector) in enumerate(holding):
            try:
                connector.commit_group()
            except Exception as exc:
                for _, other in holding[i + 1 :]:
                    _rollback(other)
                raise GroupLost(name, exc) from exc

    def rollback_targets(self) -> None:
        """Forget the group: roll back every target transaction and drop its key writes."""
        with self._lock:
            holding, self._holding, self._asked = self._holding, [], {}
            self._outcomes.clear()
            self._after_targets.clear()
        for _, connector in holding:
            _rollback(connector)


def _rollback(connector: Connector) -> None:
    try:
        connector.rollback_group()
    except Exception:
        pass  # the group is lost either way; the error that brought us here is the one to tell


class GroupLost(Exception):
    """A target could not commit a group: none of the group's writes were kept."""

    def __init__(self, connection: str, error: BaseException):
        super().__init__(f"connection {connection!r}: {error}")
        self.connection = connection
        self.error = error
