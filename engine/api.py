"""The library API: everything the CLI does, a partner's application can do.

::

    from engine import Engine

    eng = Engine(state="state/flowyard.db")
    flow = eng.load("flows/order_to_erp.yaml")      # raises FlowError with file:line:col
    result = eng.run(flow, records=[...])           # or let the flow's source read them
    result.counts  # {"read": ..., "done": ..., "skipped": ..., "dead_lettered": ...}
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from connectors import Connector, Registry
from engine.errors import FlowError, Problem
from engine.flow_schema import SCHEMA
from engine.loader import check_flow
from engine.model import Flow
from engine.runlog import Listener
from engine.runner import LEASE_TTL, Runner, RunResult
from engine.steps import dumps_sorted
from engine.store import DeadLetter, ReviewItem, Store
from engine.templates import make_environment

DEFAULT_STATE = Path(".flowyard") / "state.db"


def default_state() -> Path:
    """``$FLOWYARD_STATE``, else ``.flowyard/state.db`` under the current directory."""
    return Path(os.environ.get("FLOWYARD_STATE") or DEFAULT_STATE)


def ensure_state_folder(state: Path) -> None:
    """Refuse a state file whose folder does not exist, so that a mistyped path is an
    error instead of a new, empty state (which would take every record through the flow
    again). A folder named ``.flowyard`` in a folder that exists is the one exception: it
    is the documented default's, and is made.

    Raises :class:`FileNotFoundError` saying how to create the folder.
    """
    folder = state.parent
    if folder.is_dir():
        return
    if folder.name == DEFAULT_STATE.parent.name and folder.parent.is_dir():
        folder.mkdir(exist_ok=True)
        return
    raise FileNotFoundError(
        f"the folder of the state file {state} does not exist: create it first "
        f"(mkdir -p {folder}) if that is where the state belongs, or fix the path; "
        "flowyard does not start a new state in a folder it would have to make"
    )


class Engine:
    """Loads and runs flows against one state file.

    ``listeners`` receive every run-log event as a dict (secrets already redacted);
    ``log_stderr`` also writes the JSON lines to stderr. The engine never configures
    logging for the application that embeds it. ``lease_ttl`` is how long a run's lease on
    its flow lasts without renewal (60 s): a killed run blocks the flow that long.
    """

    def __init__(
        self,
        state: str | os.PathLike | None = None,
        *,
        listeners: Iterable[Listener] = (),
        log_stderr: bool = False,
        lease_ttl: float = LEASE_TTL,
    ):
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds, not {lease_ttl}")
        self.state = Path(state) if state is not None else default_state()
        self.registry = Registry()
        self.listeners = list(listeners)
        self.log_stderr = log_stderr
        self.lease_ttl = lease_ttl
        self._env = make_environment()

    # -- definitions ---------------------------------------------------------------------------
    def register_connector(self, name: str, cls: type[Connector]) -> None:
        """Make ``cls`` available to flows loaded by this engine as ``connector: name``."""
        self.registry.register(name, cls)

    def check(self, path: str | os.PathLike) -> list[Problem]:
        """Every problem of a flow file, warnings included; an empty list means valid."""
        return check_flow(path, self.registry, self._env)[1]

    def load(self, path: str | os.PathLike) -> Flow:
        """Load, validate and compile a flow; raises :class:`FlowError` listing every problem."""
        flow, problems = check_flow(path, self.registry, self._env)
        if flow is None:
            raise FlowError(problems)
        return flow

    @staticmethod
    def schema() -> dict[str, Any]:
        """The flow language's JSON Schema (draft-07), for editors."""
        return SCHEMA

    # -- running -------------------------------------------------------------------------------
    def run(
        self,
        flow: Flow | str | os.PathLike,
        records: Iterable[Any] | None = None,
        vars: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
        wait_lock: float = 0.0,
    ) -> RunResult:
        """Run a flow over its source (or over ``records``) and return what happened.

        Raises :class:`FlowError` when the flow is invalid or an environment variable it
        needs is missing, and :class:`LockHeld` when another run holds the flow's lease.
        """
        flow = flow if isinstance(flow, Flow) else self.load(flow)
        runner = self._runner(flow, vars, dry_run=dry_run, wait_lock=wait_lock)
        return runner.run(records=records)

    def replay(
        self,
        flow: Flow | str | os.PathLike,
        ids: Iterable[int] | None = None,
        *,
        vars: dict[str, Any] | None = None,
        dry_run: bool = False,
        wait_lock: float = 0.0,
        from_start: bool = False,
    ) -> RunResult:
        """Replay open dead letters of ``flow`` (all, or ``ids``).

        Each record goes back to its first lookup (the first ``enrich`` it went through,
        with the record as it reached it), so every answer is looked up again and the steps
        that used the answers run again; a record that looked nothing up restarts at the
        step that failed. ``from_start``: from the flow's first step, with the record as
        the source delivered it. The flow is used as it is now, so a fixed mapping applies;
        sends go through the same idempotency keys, so replaying twice is harmless. Raises
        :class:`ValueError` when one of ``ids`` is not an open, replayable dead letter of
        the flow.
        """
        flow = flow if isinstance(flow, Flow) else self.load(flow)
        letters = self._letters_to_replay(flow, ids, from_start)
        run_vars = {**self._vars_of(letters), **(vars or {})}
        runner = self._runner(flow, run_vars, dry_run=dry_run, wait_lock=wait_lock, kind="replay")
        return runner.run(replay=letters, from_start=from_start)

    def _letters_to_replay(
        self, flow: Flow, ids: Iterable[int] | None, from_start: bool = False
    ) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        if self.state.exists():
            with _closing(Store(self.state, readonly=True)) as store:
                letters = store.dead_letters(flow=flow.name, status="open")
        # an unreadable source line has no record to replay: fix the source and run again
        replayable = [d for d in letters if d.step != "source" and flow.step(d.step) is not None]
        if ids is None:
            return self._from_start_check(replayable) if from_start else replayable
        wanted = set(ids)
        unknown = sorted(wanted - {d.id for d in replayable})
        if unknown:
            raise ValueError(
                f"no open dead letter {', '.join(map(str, unknown))} of flow {flow.name!r} to "
                "replay (see flowyard dlq list; lines the source could not read are not "
                "replayed: fix the source and run the flow again)"
            )
        chosen = [d for d in replayable if d.id in wanted]
        return self._from_start_check(chosen) if from_start else chosen

    def _vars_of(self, letters: list[DeadLetter]) -> dict[str, Any]:
        """The vars the runs that wrote ``letters`` were given; they must agree."""
        if not letters or not self.state.exists():
            return {}
        with _closing(Store(self.state, readonly=True)) as store:
            given = store.run_vars(sorted({d.run_id for d in letters}))
        distinct = {dumps_sorted(v): (run_id, v) for run_id, v in given.items()}
        if len(distinct) > 1:
            runs = ", ".join(sorted(run_id for run_id, _ in distinct.values()))
            raise ValueError(
                f"the dead letters to replay were written by runs given different vars "
                f"({runs}): replay each run's with --id, or give the vars (--var, --vars)"
            )
        return next(iter(distinct.values()))[1] if distinct else {}

    @staticmethod
    def _from_start_check(letters: list[DeadLetter]) -> list[DeadLetter]:
        old = [str(d.id) for d in letters if d.source_record is None]
        if old:
            raise ValueError(
                f"dead letter(s) {', '.join(old)} do not keep the record as the source "
                "delivered it (they were written by an older flowyard): replay them without "
                "--from-start (--id N)"
            )
        return letters

    def _runner(self, flow: Flow, vars: dict | None, **kw: Any) -> Runner:
        if not kw.get("dry_run"):  # a dry run writes nothing, so needs no folder
            ensure_state_folder(self.state)
        return Runner(
            flow,
            registry=self.registry,
            state=self.state,
            vars=vars,
            log_stderr=self.log_stderr,
            listeners=self.listeners,
            lease_ttl=self.lease_ttl,
            **kw,
        )

    # -- what happened ---------------------------------------------------------------------------
    def store(self) -> Store:
        """The state store, opened read-write (created when missing, in a folder that
        exists). Close it when done."""
        ensure_state_folder(self.state)
        return Store(self.state)

    # -- records that need a person ----------------------------------------------------------
    def reviews(
        self,
        flow: Flow | str | os.PathLike | None = None,
        *,
        queue: str | None = None,
        status: str | None = "open",
    ) -> list[ReviewItem]:
        """Review items, oldest first: of one flow (a ``Flow``, its file as a ``Path``, or
        its name as text) and queue, or all; ``status`` open (default), resolved, closed, or
        None for any."""
        if not self.state.exists():
            return []
        if isinstance(flow, os.PathLike):
            flow = self.load(flow)
        name = flow.name if isinstance(flow, Flow) else flow
        with _closing(Store(self.state)) as store:
            return store.reviews(flow=name, queue=queue, status=status)

    def review(self, id: int) -> ReviewItem | None:
        """Review item ``id`` with its figures and record, or None."""
        if not self.state.exists():
            return None
        with _closing(Store(self.state)) as store:
            return store.review(id)

    def close_review(self, id: int, by: str, comment: str | None = None) -> ReviewItem:
        """Close open review item ``id``: ``by`` (who decided) and ``comment`` (why) are
        kept with the time. Raises :class:`LookupError` for an unknown id and
        :class:`ValueError` for an item that is not open or an empty ``by``."""
        if not by or not by.strip():
            raise ValueError("say who closes the review item (by)")
        if not self.state.exists():
            raise LookupError(f"no review item {id} (no state file at {self.state})")
        with _closing(Store(self.state)) as store:
            return store.close_review(id, by.strip(), comment)


class _closing:
    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()
