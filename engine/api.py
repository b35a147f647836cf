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
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors import Connector, Registry
from engine.codec import dumps_sorted
from engine.errors import FlowError, LockHeld, Problem
from engine.explain import DryRunNotes
from engine.flow_schema import SCHEMA
from engine.lease import LEASE_TTL
from engine.loader import check_flow, parse_duration
from engine.model import Flow
from engine.runlog import Listener, remove_run_logs
from engine.store import StateLocation, open_store
from engine.templates import make_environment

if TYPE_CHECKING:
    from engine.flowtest_results import TestReport
    from engine.preview import MappingPreview
    from engine.reach import ConnectionCheck
    from engine.runner import Runner, RunResult
    from engine.serve.intake import Intake, IntakeAnswer
    from engine.serve.options import ServeOptions
    from engine.stats import Stats
    from engine.store import DeadLetter, Pruned, ReviewItem, Run, StateStore, Trace, WorkItem
    from engine.work_items import QueueRow

DEFAULT_STATE = Path(".flowyard") / "state.db"


@dataclass
class Decision:
    """A person's decision on an approval: the item as decided, the run that resumed its
    record at once (None: the flow's next run will; ``note`` says why)."""

    item: WorkItem
    run: RunResult | None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.item.to_dict(),
            "run": self.run.to_dict() if self.run else None,
            "note": self.note,
        }


def default_state() -> StateLocation:
    """``$FLOWYARD_STATE``, else ``.flowyard/state.db`` under the current directory."""
    return StateLocation.of(os.environ.get("FLOWYARD_STATE") or DEFAULT_STATE)


def ensure_state_folder(location: StateLocation) -> None:
    """Refuse a state file whose folder does not exist, so that a mistyped path is an
    error instead of a new, empty state (which would take every record through the flow
    again). A folder named ``.flowyard`` in a folder that exists is the one exception: it
    is the documented default's, and is made.

    Raises :class:`FileNotFoundError` saying how to create the folder. A database
    (``postgresql://``) has no folder.
    """
    state = location.path
    if state is None:
        return
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
    """Loads and runs flows against one state: a file, or a PostgreSQL database that
    several machines share (``state="postgresql://user@host/db"``).

    ``listeners`` receive every run-log event as a dict (secrets already redacted);
    ``log_stderr`` also writes the JSON lines to stderr. The engine never configures
    logging for the application that embeds it. ``lease_ttl`` is how long a run's lease on
    its flow lasts without renewal (60 s): a killed run blocks the flow that long.
    """

    def __init__(
        self,
        state: str | os.PathLike[str] | StateLocation | None = None,
        *,
        listeners: Iterable[Listener] = (),
        log_stderr: bool = False,
        lease_ttl: float = LEASE_TTL,
    ):
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds, not {lease_ttl}")
        self.state = StateLocation.of(state) if state is not None else default_state()
        self.registry = Registry()
        self.listeners = list(listeners)
        self.log_stderr = log_stderr
        self.lease_ttl = lease_ttl
        self._env = make_environment()
        self._shared: StateStore | None = None  # for accept() and process_inbox()
        self._intakes: dict[str, Intake] = {}
        self._shared_lock = threading.Lock()

    # -- definitions ---------------------------------------------------------------------------
    def register_connector(self, name: str, cls: type[Connector]) -> None:
        """Make ``cls`` available to flows loaded by this engine as ``connector: name``."""
        self.registry.register(name, cls)

    def check(self, path: str | os.PathLike[str]) -> list[Problem]:
        """Every problem of a flow file, warnings included; an empty list means valid."""
        return check_flow(path, self.registry, self._env)[1]

    def load(self, path: str | os.PathLike[str]) -> Flow:
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
        flow: Flow | str | os.PathLike[str],
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
        notes = DryRunNotes() if dry_run else None
        runner = self._runner(flow, vars, dry_run=dry_run, wait_lock=wait_lock, notes=notes)
        return _explained(runner.run(records=records), notes)

    def replay(
        self,
        flow: Flow | str | os.PathLike[str],
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
        notes = DryRunNotes() if dry_run else None
        runner = self._runner(
            flow, run_vars, dry_run=dry_run, wait_lock=wait_lock, kind="replay", notes=notes
        )
        return _explained(runner.run(replay=letters, from_start=from_start), notes)

    def work(
        self,
        flow: Flow | str | os.PathLike[str],
        vars: dict[str, Any] | None = None,
        *,
        stop: threading.Event | None = None,
        until_empty: bool = False,
        poll: float = 1.0,
    ) -> RunResult:
        """Work on a flow as one of its workers: processes on this machine and others share
        its records through a PostgreSQL state (engine/worker.py; docs/scale-out.md).

        Runs until ``stop`` is set (records in flight are finished and committed), or, with
        ``until_empty``, until this worker has read the source to its end and no record
        waits. ``poll`` is how often the source is read again and the queue asked when
        there is nothing to do. Raises :class:`ValueError` when the state is a file, and
        :class:`FlowError` as :meth:`run` does.
        """
        from engine.worker import NotShared, Worker

        flow = flow if isinstance(flow, Flow) else self.load(flow)
        if not self.state.shared:  # refused before anything is made: no state file, no log
            raise NotShared(
                f"workers share a flow's work through a PostgreSQL state, not a state file "
                f"({self.state}): pass --state postgresql://... (or set FLOWYARD_STATE)"
            )
        if poll <= 0:
            raise ValueError(f"poll must be a positive number of seconds, not {poll}")
        worker = Worker(
            flow,
            registry=self.registry,
            state=self.state,
            vars=vars,
            log_stderr=self.log_stderr,
            listeners=self.listeners,
            lease_ttl=self.lease_ttl,
            stop=stop,
            until_empty=until_empty,
            poll=poll,
        )
        return worker.run()

    def _letters_to_replay(
        self, flow: Flow, ids: Iterable[int] | None, from_start: bool = False
    ) -> list[DeadLetter]:
        with open_store(self.state, dry_run=True) as store:  # read only
            letters = store.dead_letters(flow=flow.name, status="open")
        # an unreadable source line has no record to replay: fix the source and run again
        replayable = [
            d for d in letters if d.step not in (None, "source") and flow.step(d.step) is not None
        ]
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
        if not letters:
            return {}
        with open_store(self.state, dry_run=True) as store:  # read only
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

    def _runner(
        self,
        flow: Flow,
        vars: dict[str, Any] | None,
        notes: DryRunNotes | None = None,
        **kw: Any,
    ) -> Runner:
        from engine.runner import Runner  # on use: `flowyard validate` never runs a flow

        if not kw.get("dry_run"):  # a dry run writes nothing, so needs no folder
            ensure_state_folder(self.state)
        return Runner(
            flow,
            registry=self.registry,
            state=self.state,
            vars=vars,
            log_stderr=self.log_stderr,
            listeners=[*self.listeners, notes] if notes is not None else self.listeners,
            lease_ttl=self.lease_ttl,
            **kw,
        )

    # -- what happened ---------------------------------------------------------------------------
    def store(self) -> StateStore:
        """The state store, opened read-write (created when missing, in a folder that
        exists). Close it when done, or use it in a ``with`` block."""
        ensure_state_folder(self.state)
        return open_store(self.state)

    def _existing(self) -> StateStore:
        """The state store when the state exists, else a store that holds nothing."""
        from engine.store import NullStore

        return open_store(self.state) if self.state.exists() else NullStore()

    def runs(self, flow: str | None = None, limit: int = 20) -> list[Run]:
        """Recent runs (of the flow named ``flow``, or all), newest first."""
        with self._existing() as store:
            return store.list_runs(flow, limit)

    def get_run(self, run_id: str) -> Run | None:
        """Run ``run_id`` (a unique prefix is enough), or None."""
        with self._existing() as store:
            return store.get_run(run_id)

    def run_records(self, run_id: str) -> list[Trace]:
        """What happened to each record of run ``run_id`` (its full id), in order."""
        with self._existing() as store:
            return store.run_records(run_id)

    def trace(self, record_key: str, flow: str | None = None) -> list[Trace]:
        """Every run and step that touched a record, oldest first, with the run's kind."""
        with self._existing() as store:
            return store.trace(record_key, flow)

    # -- dead letters --------------------------------------------------------------------------
    def dead_letters(
        self, flow: str | None = None, status: str | None = "open"
    ) -> list[DeadLetter]:
        """Dead letters of the flow named ``flow`` (or all), oldest first; ``status`` open
        (default), replayed, superseded, resolved, or None for any."""
        with self._existing() as store:
            return store.dead_letters(flow=flow, status=status)

    def dead_letter(self, id: int) -> DeadLetter | None:
        """Dead letter ``id`` with its record, or None."""
        with self._existing() as store:
            return store.dead_letter(id)

    def purge_dead_letters(self, ids: Iterable[int] | None = None, flow: str | None = None) -> int:
        """Delete dead letters for good (``ids``, those of the flow named ``flow``, or all
        when neither is given); review items stay. Returns how many went."""
        with self._existing() as store:
            return store.purge_dead_letters(list(ids) if ids is not None else None, flow)

    def prune(self, older_than: str | float, flow: str | None = None) -> Pruned:
        """Delete runs (with their run logs), traces, closed dead letters and review items,
        and idempotency keys not seen since, older than ``older_than`` (seconds, or an age
        such as ``"30d"``, ``"12h"``, ``"90m"``); open items stay. :class:`ValueError` for an
        age that is not one."""
        seconds = parse_duration(older_than) if isinstance(older_than, str) else older_than
        if not seconds >= 0:
            raise ValueError(f"an age cannot be negative: {older_than}")
        with self._existing() as store:
            pruned = store.prune(seconds, flow)
        remove_run_logs(self.state.runs_folder, pruned.run_ids)
        return pruned

    # -- records that need a person ----------------------------------------------------------
    def reviews(
        self,
        flow: Flow | str | os.PathLike[str] | None = None,
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
        with self._existing() as store:
            return store.reviews(flow=name, queue=queue, status=status)

    def review(self, id: int) -> ReviewItem | None:
        """Review item ``id`` with its figures and record, or None."""
        with self._existing() as store:
            return store.review(id)

    def close_review(self, id: int, by: str, comment: str | None = None) -> ReviewItem:
        """Close open review item ``id``: ``by`` (who decided) and ``comment`` (why) are
        kept with the time. Raises :class:`LookupError` for an unknown id and
        :class:`ValueError` for an item that is not open or an empty ``by``."""
        if not by or not by.strip():
            raise ValueError("say who closes the review item (by)")
        if not self.state.exists():
            raise LookupError(f"no review item {id} (no state file at {self.state})")
        with open_store(self.state) as store:
            return store.close_review(id, by.strip(), comment)

    # -- approvals, work queues and SLAs (docs/governance.md) ----------------------------------
    def work_items(
        self,
        kind: str | None = None,
        *,
        flow: str | None = None,
        queue: str | None = None,
        owner: str | None = None,
        status: str | list[str] | None = "open",
        older_than: str | float | None = None,
        now: float | None = None,
    ) -> list[WorkItem]:
        """Work items (``dead_letter``, ``review``, ``approval``, or all kinds), oldest
        first: of a flow (its name), queue and owner; ``status`` open (default), another,
        several or None for any; ``older_than`` an age (``"4h"``, or seconds) they have
        waited at least."""
        if not self.state.exists():
            return []
        with self._existing() as store:
            items = store.work_items(kind, flow, queue, owner, status)
        if older_than is not None:
            age = parse_duration(older_than) if isinstance(older_than, str) else older_than
            clock = time.time() if now is None else now
            items = [item for item in items if item.age(clock) >= age]
        return items

    def work_item(self, id: int) -> WorkItem | None:
        """Work item ``id`` of any kind, with its history, or None."""
        with self._existing() as store:
            return store.work_item(id)

    def approvals(
        self,
        flow: str | None = None,
        *,
        queue: str | None = None,
        owner: str | None = None,
        status: str | list[str] | None = "open",
        older_than: str | float | None = None,
        now: float | None = None,
    ) -> list[WorkItem]:
        """Approvals waiting for a decision (or with ``status`` approved, rejected,
        resolved, several, None for any), oldest first; filters as :meth:`work_items`."""
        return self.work_items(
            "approval",
            flow=flow,
            queue=queue,
            owner=owner,
            status=status,
            older_than=older_than,
            now=now,
        )

    def approve(
        self, id: int, by: str, comment: str | None = None, *, resume: bool = True
    ) -> Decision:
        """Approve open approval ``id``: who, when and why are kept. With ``resume`` (the
        default) its record goes on at once from the step after the approve, through a run
        of its flow (kind ``resume``); when that cannot be done now (the flow file moved,
        another run holds the flow), the flow's next run resumes it. Raises
        :class:`LookupError` for no such approval and :class:`ValueError` for one that is
        not open or an empty ``by``."""
        return self._decide(id, "approved", by, comment, resume)

    def reject(
        self, id: int, by: str, comment: str | None = None, *, resume: bool = True
    ) -> Decision:
        """Reject open approval ``id``; its record's sends are compensated and it takes the
        step's ``on_reject`` steps (at once with ``resume``, else in the flow's next run)."""
        return self._decide(id, "rejected", by, comment, resume)

    def _decide(
        self, id: int, decision: str, by: str, comment: str | None, resume: bool
    ) -> Decision:
        if not by or not by.strip():
            raise ValueError("say who decides (by)")
        if not self.state.exists():
            raise LookupError(f"no approval {id} (no state file at {self.state})")
        with open_store(self.state) as store:
            current = store.work_item(id)
            if current is None or current.kind != "approval":
                raise LookupError(f"no approval {id}")
            item = store.decide(id, decision, by.strip(), comment)
        if not resume:
            return Decision(item, None, f"the next run of flow {item.flow} resumes it")
        path = Path(item.flow_file) if item.flow_file else None
        if path is None or not path.is_file():
            return Decision(
                item,
                None,
                f"the flow file {item.flow_file} is not there: the next run of flow "
                f"{item.flow} resumes it",
            )
        try:
            result = self.resume(path, ids=[id])
        except LockHeld as exc:
            return Decision(item, None, f"{exc}; that run or the next resumes it")
        return Decision(self.work_item(id) or item, result, None)

    def resume(
        self,
        flow: Flow | str | os.PathLike[str],
        ids: Iterable[int] | None = None,
        *,
        vars: dict[str, Any] | None = None,
        wait_lock: float = 0.0,
    ) -> RunResult:
        """Resume the records of the flow's decided approvals (all, or ``ids``) in a run of
        kind ``resume`` that reads no source; a plain run does the same before its source's
        records. The vars are those of the runs that held the records (``vars`` override
        them), as for a replay."""
        flow = flow if isinstance(flow, Flow) else self.load(flow)
        wanted = list(ids) if ids is not None else None
        with self._existing() as store:
            decided = [
                item for item in store.to_resume(flow.name) if wanted is None or item.id in wanted
            ]
            given = store.run_vars(sorted({item.run_id for item in decided}))
        distinct = {dumps_sorted(v): v for v in given.values()}
        if len(distinct) > 1 and vars is None:
            raise ValueError(
                "the approvals to resume were held by runs given different vars: resume "
                "them one at a time (ids), or give the vars"
            )
        run_vars = {**(next(iter(distinct.values())) if distinct else {}), **(vars or {})}
        return self._runner(
            flow, run_vars, wait_lock=wait_lock, kind="resume", resume_ids=wanted
        ).run()

    def queues(
        self, *, flow: str | None = None, kind: str | None = None, now: float | None = None
    ) -> list[QueueRow]:
        """The open work items by queue and owner: depth, age, past due, breaches."""
        from engine.work_items import queue_summary

        return queue_summary(self.work_items(kind, flow=flow), now)

    def escalate(
        self,
        *,
        now: float | None = None,
        flow: str | None = None,
        listeners: Iterable[Listener] = (),
    ) -> list[WorkItem]:
        """Escalate every open item past its due time (of one flow, or all): moved to its
        ``escalate_to``, counted as an SLA breach; the engine's listeners and
        ``listeners`` get an ``item_escalated`` event for each. ``now`` is the clock."""
        from engine.work_items import escalate

        if not self.state.exists():
            return []
        with self.store() as store:
            return escalate(store, now=now, flow=flow, listeners=[*self.listeners, *listeners])

    # -- process intelligence: stats and the report --------------------------------------------
    def stats(
        self,
        *,
        since: str | float | None = None,
        flow: str | None = None,
        until: float | None = None,
        bucket: str | None = None,
    ) -> Stats:
        """Per flow and step: throughput, cycle time, time waiting for people, exceptions
        by category, step and label, SLA breaches, approval cycle time (engine/stats.py).
        ``since`` is an age (``"7d"``), a time in seconds, or None for everything kept."""
        from engine.stats import collect

        with self._existing() as store:
            return collect(store, since=_since(since, until), until=until, flow=flow, bucket=bucket)

    def report(
        self,
        path: str | os.PathLike[str],
        *,
        since: str | float | None = None,
        flow: str | None = None,
        top: int = 10,
    ) -> Path:
        """Write the self-contained HTML report (engine/report.py) to ``path``."""
        from engine.report import render
        from engine.stats import clusters, collect
        from engine.work_items import queue_summary

        start = _since(since, None)
        with self._existing() as store:
            stats = collect(store, since=start, flow=flow)
            letters = store.work_items("dead_letter", flow=flow, status=None, since=start)
            waiting = store.work_items(flow=flow)
        open_items: dict[str, int] = {}
        for item in waiting:
            open_items[item.flow] = open_items.get(item.flow, 0) + 1
        page = render(stats, clusters(letters, top), queue_summary(waiting), open_items=open_items)
        out = Path(path)
        out.write_text(page, encoding="utf-8")
        return out

    # -- writing flows (flowyard test, map, graph, check, init) ---------------------------------
    def test(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        select: str | None = None,
        update: bool = False,
    ) -> TestReport:
        """Run flow tests offline: test files, flows (their ``.test.yaml`` beside them) or
        folders. ``select`` runs the cases whose name holds that text; ``update`` rewrites
        the expectations of the cases that failed. Nothing is sent and no state is kept."""
        from engine.flowtest import run_tests

        return run_tests(self, [Path(p) for p in paths], select=select, update=update)

    def map_record(
        self,
        mapping: str | os.PathLike[str],
        record: Any,
        *,
        schema: str | None = None,
        check_schema: bool = True,
        vars: dict[str, Any] | None = None,
    ) -> MappingPreview:
        """Map one record with a mapping (a file, or a built-in mapping's name) and check
        the result against a canonical schema (a file or a name; by default the one the
        mapping's name says: ``shopify_order_to_canonical`` -> ``order``). Every problem
        is in the result; raises :class:`FlowError` when the mapping or schema is invalid."""
        from engine.preview import preview

        return preview(
            self._env, str(mapping), record, schema=schema, check_schema=check_schema, vars=vars
        )

    def graph(self, flow: Flow | str | os.PathLike[str], format: str = "mermaid") -> str:
        """A picture of the flow's steps, routes and connections: ``mermaid`` or ``dot``."""
        from engine.graph import render

        return render(flow if isinstance(flow, Flow) else self.load(flow), format)

    def embed_graph(self, flow: Flow, markdown: str | os.PathLike[str]) -> None:
        """Replace the flow's Mermaid picture in a Markdown file, between the lines
        ``<!-- flowyard graph: NAME -->`` and ``<!-- /flowyard graph -->``. Raises
        :class:`LookupError` when they are missing and :class:`OSError` (or
        :class:`UnicodeDecodeError`) when the file cannot be read or written."""
        from engine.graph import embed

        path = Path(markdown)
        text = path.read_text(encoding="utf-8")
        path.write_text(embed(text, flow.name, self.graph(flow)), encoding="utf-8")

    @staticmethod
    def parse_record(text: str) -> Any:
        """One record from JSON (fractional numbers as exact ``Decimal``, as the connectors
        read them) or YAML; :class:`ValueError` when it is neither."""
        import yaml

        from connectors._json import loads
        from engine.stubs import exact

        try:
            return loads(text)
        except ValueError:
            pass
        try:
            return exact(yaml.safe_load(text))
        except yaml.YAMLError as exc:
            raise ValueError(f"neither JSON nor YAML: {exc}") from None

    def check_connections(
        self, flow: Flow | str | os.PathLike[str], vars: dict[str, Any] | None = None
    ) -> list[ConnectionCheck]:
        """Reach each connection of the flow (log in, one harmless read) and say what
        works; nothing is sent and no state is written. Raises :class:`FlowError` when the
        flow is invalid or a secret it needs has no value."""
        from engine.reach import check_connections

        flow = flow if isinstance(flow, Flow) else self.load(flow)
        return check_connections(flow, self.registry, vars)

    def init_project(
        self, folder: str | os.PathLike[str], from_flow: str | None = None
    ) -> list[Path]:
        """Make a project to start from in ``folder``: the starter flow, or the shipped
        flow ``from_flow`` (``order_to_erp``), with tests, mappings, a README and the
        schemas for an editor. Never overwrites a file (:class:`InitError`)."""
        from engine.scaffold import init_project

        return init_project(Path(folder), from_flow, self.load)

    @staticmethod
    def shipped_flows() -> list[str]:
        """The names of the flows that ship with flowyard (``init --from`` takes them)."""
        from engine import packaged

        return packaged.flow_names()

    # -- events pushed to flowyard: webhooks, schedules, metrics (engine/serve/) ---------------
    def _shared_store(self) -> StateStore:
        with self._shared_lock:
            if self._shared is None:
                ensure_state_folder(self.state)
                self._shared = open_store(self.state)
            return self._shared

    def close(self) -> None:
        """Close the state handle :meth:`accept` and :meth:`process_inbox` keep open."""
        with self._shared_lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None

    def accept(
        self,
        flow: Flow | str | os.PathLike[str],
        headers: Mapping[str, str] | list[tuple[str, str]],
        body: bytes,
    ) -> IntakeAnswer:
        """Take one webhook delivery for ``flow`` (a flow with a ``webhook`` source): verify
        its signature over ``body`` (the raw bytes, before anything parses them), keep the
        event in the flow's inbox (committed before this returns) and say what to answer.

        For a partner's own web app: answer the platform with ``answer.status``,
        ``answer.body`` (JSON) and ``answer.headers``; :meth:`process_inbox` (or
        ``flowyard serve``) then takes the events through the flow. Raises
        :class:`FlowError` for a flow that takes no webhooks or whose secret is missing.
        """
        from engine.serve.intake import Depth, Intake

        flow = flow if isinstance(flow, Flow) else self.load(flow)
        hook = flow.source.webhook
        if hook is None:
            raise FlowError(
                [Problem(flow.file, None, None, "source", "the flow's source is no webhook")]
            )
        store = self._shared_store()
        intake = self._intakes.get(flow.name)
        if intake is None:
            intake = self._intakes[flow.name] = Intake([flow], Depth(store))
        route = intake.routes[hook.path]
        checked = intake.check(route, headers, body)
        from engine.store import InboxEvent

        if not isinstance(checked, InboxEvent):
            return checked  # not to be kept: refused, ignored or throttled
        try:
            [kept] = store.add_to_inbox([(flow.name, checked)])
        except Exception as exc:  # the answer asks the platform to deliver again
            return intake.answer(route, checked, exc)
        return intake.answer(route, checked, kept)

    def process_inbox(
        self,
        flow: Flow | str | os.PathLike[str],
        *,
        stop: threading.Event | None = None,
        wake: threading.Event | None = None,
        idle: float = 0.5,
        max_seconds: float = 60.0,
    ) -> RunResult | None:
        """Run ``flow`` over the events waiting in its inbox; None when there were none.

        The run claims events in small batches (a claim per event in the state, so that
        processes can share an inbox), marks each done in the commit that makes its record
        final, and ends when no event has come for ``idle`` seconds (``wake``, when given,
        is set by whoever keeps new events), after ``max_seconds``, or once ``stop`` is
        set. Raises :class:`LockHeld` when another run holds the flow's lease.
        """
        from engine.serve.inbox import InboxFeed
        from engine.store import holder_id

        flow = flow if isinstance(flow, Flow) else self.load(flow)
        store = self._shared_store()
        holder = f"{holder_id()}:inbox:{uuid.uuid4().hex[:8]}"
        feed = InboxFeed(
            store,
            flow.name,
            holder,
            wake or threading.Event(),
            stop or threading.Event(),
            idle=idle,
            max_seconds=max_seconds,
        )
        try:
            feed.first = feed.claim()
            if not feed.first:
                return None
            return self._runner(flow, None, kind="webhook").run(inbox=feed)
        finally:
            store.release_inbox(flow.name, holder)

    def serve(self, flows: Iterable[Flow], options: ServeOptions | None = None) -> int:
        """Serve ``flows`` until SIGTERM or SIGINT: webhooks in, flows on their schedules,
        ``/metrics``, ``/healthz``, ``/readyz`` and alerts (docs/serve.md). Returns the exit
        code (0 after a graceful stop)."""
        from engine.serve.options import ServeOptions
        from engine.serve.server import serve

        return serve(self, list(flows), options or ServeOptions())

    def schedules(self, flows: Iterable[Flow], now: float | None = None) -> list[dict[str, Any]]:
        """Each scheduled flow's cron, time zone, missed-slot policy, next due time and
        last claimed slot, with its last run (``flowyard schedule list``)."""
        from engine.serve.scheduler import next_due

        rows: list[dict[str, Any]] = []
        with self._existing() as store:
            for flow in flows:
                if flow.schedule is None:
                    continue
                state = store.schedule_state(flow.name)
                runs = store.list_runs(flow.name, 1)
                last = runs[0] if runs else None
                rows.append(
                    {
                        "flow": flow.name,
                        "cron": flow.schedule.cron,
                        "timezone": flow.schedule.timezone,
                        "missed": flow.schedule.missed,
                        "next_due": next_due(
                            flow.schedule, now if now is not None else time.time()
                        ),
                        "last_slot": state.last_due if state else None,
                        "last_slot_holder": state.holder if state else None,
                        "last_run_id": last.run_id if last else None,
                        "last_run_status": last.status if last else None,
                        "last_run_started": last.started_at if last else None,
                    }
                )
        return rows

    def write_metrics(self, path: str | os.PathLike[str], result: RunResult) -> None:
        """Write the state's gauges and ``result``'s figures to ``path`` in the Prometheus
        text format, for node_exporter's textfile collector (``flowyard run
        --metrics-file``); written beside it and renamed into place."""
        from engine.serve.metrics import write_textfile

        write_textfile(path, self._existing, result)


def _since(since: str | float | None, until: float | None) -> float | None:
    """``--since``: an age before ``until`` (or now), a time in seconds, or None."""
    if since is None or isinstance(since, int | float):
        return since
    return (time.time() if until is None else until) - parse_duration(since)


def _explained(result: RunResult, notes: DryRunNotes | None) -> RunResult:
    """A dry run's result with the records it would park, and why."""
    if notes is not None:
        result.would_dead_letter = notes.dead_letters
        result.would_review = notes.reviews
    return result
