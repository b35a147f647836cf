"""The run loop: source to steps to store, with bounded memory.

Records stream from the source one by one; with ``concurrency`` above 1 they are spread
over lanes by key, so records that share a key stay in order: threads, or worker
processes when every connector the flow calls can run in one (engine/lanes.py,
engine/lane_processes.py). The runner builds the
run's context (engine/context.py) and hands each record to the executor
(engine/executor.py), which returns a typed result; the runner turns results into traces,
dead letters and review items and commits them in batches together with the source cursor
(engine/progress.py), which only moves past a record once every record before it is final.

The one path, each layer calling down only::

    Engine.run ─▶ Runner.run ─▶ work items (engine/work.py)
                      │             ─▶ Executor.process(rec) ─▶ connectors, store keys
                      │             ◀─ RecordResult
                      └─▶ Batch/Watermark ─▶ StateStore.commit_progress
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors import Item, Registry
from engine.context import RunContext
from engine.envrefs import resolve as resolve_references
from engine.errors import (
    CircuitOpen,
    ConnectorError,
    LaneLost,
    RunError,
    SourceUnavailable,
    StateError,
)
from engine.executor import Executor, RecordResult
from engine.group import Group, GroupLost
from engine.lane_processes import ProcessLanes, fork_context, process_count
from engine.lane_worker import LaneWorker, Payload, Relayed, replay
from engine.lanes import Lanes, lane_count, lane_kind
from engine.lease import LEASE_TTL, LeaseKeeper
from engine.model import CallStep, Flow
from engine.outcomes import FINAL_CLEAN, Outcome, RunStatus
from engine.progress import Batch, Watermark, bad_input_rows, describe, parked_item
from engine.runlog import Listener, RunLog, remove_run_logs, run_log_path
from engine.store import (
    DeadLetter,
    DigestWrite,
    ParkedItem,
    StateLocation,
    StateStore,
    Trace,
    holder_id,
    open_store,
)
from engine.unchanged import RecordDigests
from engine.work import (
    BadInput,
    RecordWork,
    Work,
    one_line,
    replay_work,
    resume_work,
    source_work,
)
from engine.work_items import dead_letter_assignment, escalate

GROUP_RECORDS = 500  # records per group commit, unless the flow's ``group:`` says otherwise
GROUP_SECONDS = 0.2  # a group is committed at the first record that ends after this long
PRUNE_SLACK = 3600.0  # how far past its retention a flow's data gets before a run prunes it

EXIT_OK, EXIT_DEAD_LETTERS, EXIT_INVALID, EXIT_CANNOT_PROCEED, EXIT_STATE = 0, 1, 2, 3, 4
EXIT_REVIEW = EXIT_DEAD_LETTERS  # some records need a person, either way
_NEEDS_PERSON = frozenset({Outcome.DEAD_LETTERED, Outcome.REVIEW, Outcome.PARKED})


@dataclass
class RunResult:
    """What a run did: counts of records by outcome, its status and the exit code it implies."""

    run_id: str
    flow: str
    status: str  # a RunStatus: ok | dead_lettered | review | stopped | failed
    counts: dict[str, int]
    duration_s: float
    exit_code: int
    message: str | None = None
    dry_run: bool = False
    would_send: list[dict[str, Any]] = field(default_factory=list)
    log_path: str | None = None
    dead_letter_ids: list[int] = field(default_factory=list)
    review_ids: list[int] = field(default_factory=list)
    # a dry run's records that would be parked: {record_key, step, error | queue, reason}
    would_dead_letter: list[dict[str, Any]] = field(default_factory=list)
    would_review: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        dry = ("would_send", "would_dead_letter", "would_review")
        out = {k: v for k, v in self.__dict__.items() if k not in dry}
        if self.dry_run:
            out.update({k: getattr(self, k) for k in dry})
        return out


def _payload(w: RecordWork) -> Payload:
    """What a lane process is sent of a record: the source's JSON text when the source gave
    it (decoded there, for a fraction of what sending the decoded record costs), else the
    record and the step it starts at."""
    if w.text is not None and w.start is None and w.rec.source is w.rec.data:
        return (w.rec.key, w.text, w.rec.meta)
    return (w.rec, w.start)


def _replayed_as(letter: DeadLetter, result: RecordResult, others: set[str]) -> str:
    """How a replayed dead letter's record did: ``through`` (it went on), ``again`` (it, or
    what it went on to, stopped again: dead-lettered or held for review) or ``parked``.

    ``others`` are the record keys of the other dead letters replayed by the same pass (the
    items of one record, replayed from the start): their failures are theirs.
    """
    if result.outcome == Outcome.PARKED:
        return "parked"
    stopped = [
        f
        for f in result.failures
        if not isinstance(f.error, CircuitOpen)
        and (f.rec.key == letter.record_key or f.rec.key not in others)
    ]
    return "again" if stopped else "through"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class Runner:
    """One run of one flow. Use :meth:`engine.Engine.run`; this class is its machinery."""

    def __init__(
        self,
        flow: Flow,
        *,
        registry: Registry,
        state: Path | StateLocation,
        vars: dict[str, Any] | None = None,
        dry_run: bool = False,
        log_stderr: bool = False,
        listeners: Iterable[Listener] = (),
        wait_lock: float = 0.0,
        kind: str = "run",
        lease_ttl: float = LEASE_TTL,
        resume_ids: list[int] | None = None,
    ):
        self.flow = flow
        self.state = StateLocation.of(state)
        self.given_vars = dict(vars or {})  # kept with the run, for a replay to reuse
        self.vars = {**flow.vars, **self.given_vars}
        self.dry_run = dry_run
        self.kind = kind
        self.resume_ids = resume_ids  # a resume run's approvals (None: every decided one)
        self.wait_lock = wait_lock
        self.run_id = new_run_id()
        env = resolve_references(flow)  # ${env:NAME} and ${file:PATH}: engine/envrefs.py
        self.store: StateStore = open_store(self.state, dry_run=dry_run)
        self.log = self._open_log(env, log_stderr, listeners)
        self.ctx = RunContext.create(
            flow,
            run_id=self.run_id,
            registry=registry,
            store=self.store,
            log=self.log,
            vars=self.vars,
            env=env,
            dry_run=dry_run,
            refresh_after=min(PRUNE_SLACK, (flow.retention_s or PRUNE_SLACK) / 10),
        )
        self.group = Group(self.store, flow.name)
        self.executor = Executor(self.ctx, self.group)
        # what lanes its concurrency runs on (engine/lanes.py): none, threads or processes
        self.lanes = lane_kind(flow, registry, dry_run)
        self.lane_processes = process_count(flow.concurrency) if self.lanes == "processes" else 0
        if self.lane_processes and fork_context() is None:
            self.lane_processes = 0
        if self.lanes == "processes" and not self.lane_processes:
            self.lanes = "threads"
        self.group_records = getattr(flow, "group_records", None) or GROUP_RECORDS
        self.group_seconds = getattr(flow, "group_seconds", None) or GROUP_SECONDS
        self._lease = LeaseKeeper(self.store, flow.name, f"{holder_id()}:{self.run_id}", lease_ttl)
        self.counts = {"read": 0, **{outcome.value: 0 for outcome in Outcome}}
        self.would_send: list[dict[str, Any]] = []
        self.dead_letter_ids: list[int] = []
        self.review_ids: list[int] = []
        self._batch = Batch()
        self._watermark = Watermark()
        self._open_keys: set[str] = set()  # records with open items, before this run
        self._digests: RecordDigests | None = None  # set per run: None for replays
        self._last_commit = time.monotonic()
        self._stop: tuple[str, str] | None = None  # (status, why) once the run must stop
        self._lost = False  # a group could not be committed: no later one may commit
        self._writing: AbstractContextManager[Any] = nullcontext()  # held around commits
        self._batch_resumed: list[int] = []  # approvals resumed since the last commit
        self._exit: int | None = None  # an exit code that the status alone does not tell
        self._inbox = False  # records from the flow's inbox (engine/serve/): see run()

    def _open_log(self, env: dict[str, str], stderr: bool, listeners: Iterable[Listener]) -> RunLog:
        path = None if self.dry_run else run_log_path(self.state.runs_folder, self.run_id)
        try:
            return RunLog(
                self.run_id,
                self.flow.name,
                path=path,
                stderr=stderr,
                secrets=set(env.values()),
                listeners=listeners,
                debug=os.environ.get("FLOWYARD_LOG_LEVEL", "").lower() == "debug",
            )
        except OSError as exc:
            self.store.close()
            assert path is not None  # a dry run writes no log file
            raise StateError(
                f"run log {path}: cannot write it: {exc.strerror or exc}; flowyard writes "
                f"each run's log in {path.parent}"
                + (", beside the state file" if self.state.path is not None else ""),
                str(path),
            ) from None

    # -- the run ---------------------------------------------------------------------------------
    def run(
        self,
        records: Iterable[Any] | None = None,
        replay: list[DeadLetter] | None = None,
        *,
        from_start: bool = False,
        inbox: Iterable[Item] | None = None,
    ) -> RunResult:
        """Run the flow; every failure ends in a result (status ``failed`` and its exit
        code), except those before the run started: :class:`LockHeld` and a state file that
        cannot be opened (:class:`StateError`).

        ``inbox``: the records are events of the flow's inbox (engine/serve/inbox.py), each
        an item whose position is ``{"inbox": id, "webhook": arrival}``: the cursor stays,
        each event is marked done in the commit that makes its record final, and its trace
        starts with its arrival."""
        self._inbox = inbox is not None
        records = inbox if inbox is not None else records
        started = time.perf_counter()
        self._start(replay)
        status, message = RunStatus.OK.value, None
        try:
            self._use_digests(replay is None)
            self.log.event(
                "run_started",
                kind=self.kind,
                dry_run=self.dry_run,
                concurrency=self.flow.concurrency,
                lanes=f"{self.lanes}:{self.lane_processes}"
                if self.lanes == "processes"
                else self.lanes,
            )
            self.log.flush()
            stopped = self._loop(self._work(records, replay, from_start))
            if stopped:
                status, message = stopped
        except Exception as exc:  # the run cannot go on: say why in one line, never a traceback
            status, message = RunStatus.FAILED.value, self.ctx.mask(self._failure(exc))
        finally:
            self._lease.stop()
            # the last group commits while its targets' connections are still open
            status, message = self._wind_up(status, message)
            self.group.rollback_targets()  # a group that could not be committed: none of it
            for name, error in self.ctx.connections.close():
                self.log.event("connection_close_failed", connection=name, error=str(error))
        result = RunResult(
            self.run_id,
            self.flow.name,
            status,
            dict(self.counts),
            round(time.perf_counter() - started, 3),
            self._exit_code(status),
            message,
            self.dry_run,
            self.would_send,
            str(self.log.path) if self.log.path else None,
            self.dead_letter_ids,
            self.review_ids,
        )
        self.log.event(
            "run_finished",
            outcome=status,
            counts=result.counts,
            duration_ms=round(result.duration_s * 1000, 1),
            message=message,
        )
        self.log.close()
        self._finish_run(result)
        return result

    def _resumed_then(self, work: Iterator[Work]) -> Iterator[Work]:
        """The records of approvals decided since the flow last ran, each resumed at its
        approve step, then ``work`` (the source's records; none for a run of kind
        ``resume``), numbered after them."""
        decided = [] if self.dry_run else self.store.to_resume(self.flow.name)
        if self.resume_ids is not None:
            decided = [item for item in decided if item.id in self.resume_ids]
        resumed = list(resume_work(self.flow, decided))
        yield from resumed
        if self.kind == "resume":
            return
        for w in work:
            w.seq += len(resumed)
            yield w

    def _start(self, replay: list[DeadLetter] | None) -> None:
        """Take the flow's lease and record the run; nothing of a run that never started
        is left behind (its run log goes too)."""
        try:
            dead = self._lease.acquire(self.wait_lock)
            if dead:
                self.log.event("lease_taken_over", holder=dead, reason="holder is gone")
            self.store.mark_abandoned_runs(self.flow.name)
            self.store.start_run(
                self.run_id,
                self.flow.name,
                kind=self.kind,
                vars=self.given_vars,
                holder=holder_id(),
            )
            if replay is None:
                self._open_keys = self.store.open_item_keys(self.flow.name)
        except BaseException:
            self._lease.stop()
            self.log.close()
            if self.log.path is not None:
                self.log.path.unlink(missing_ok=True)
            try:
                self._lease.release()
            except Exception:
                pass  # the lease expires by itself; the error below is the one to report
            self.store.close()
            raise

    def _work(
        self, records: Iterable[Any] | None, replay: list[DeadLetter] | None, from_start: bool
    ) -> Iterator[Work]:
        """The run's work items: replayed dead letters, or the records of decided approvals
        then what the source delivers."""
        if replay is not None:
            return replay_work(self.flow, replay, from_start)
        return self._resumed_then(source_work(self.flow, self.vars, self._source(records)))

    def _use_digests(self, from_source: bool) -> None:
        """Skip records unchanged since they last went through, where the flow allows it
        (engine/unchanged.py); a replay, which may change keys behind the digests' back,
        makes the flow forget them."""
        digests = RecordDigests(self.flow, self.vars)
        if from_source and digests.enabled:
            self._digests = digests
        else:
            self.store.forget_record_digests(self.flow.name)

    def _wind_up(self, status: str, message: str | None) -> tuple[str, str | None]:
        """Commit what is left and prune by the flow's retention; a failure there fails the
        run. Then the status says whether records need a person."""
        for final_step in (self._flush, self._apply_retention, self._escalate):
            if self._exit == EXIT_STATE:
                break  # the state cannot be written: do not try again
            try:
                final_step()
            except Exception as exc:
                if status != RunStatus.FAILED:
                    status, message = RunStatus.FAILED.value, self._failure(exc)
        if status == RunStatus.OK and self.counts[Outcome.DEAD_LETTERED]:
            status = RunStatus.DEAD_LETTERED.value
        elif status == RunStatus.OK and self.counts[Outcome.REVIEW]:
            status = RunStatus.REVIEW.value
        return status, message

    def _exit_code(self, status: str) -> int:
        if self._exit is not None:
            return self._exit
        if status == RunStatus.STOPPED and self.counts[Outcome.PARKED]:
            return EXIT_CANNOT_PROCEED
        return {
            RunStatus.OK: EXIT_OK,
            RunStatus.DEAD_LETTERED: EXIT_DEAD_LETTERS,
            RunStatus.REVIEW: EXIT_REVIEW,
            RunStatus.FAILED: EXIT_CANNOT_PROCEED,
        }.get(RunStatus(status), EXIT_DEAD_LETTERS)

    def _failure(self, exc: BaseException) -> str:
        """The one-line reason for a run that cannot go on; the traceback goes to the run
        log only. A fault of the state sets the exit code 4."""
        if isinstance(exc, StateError):
            self._exit = EXIT_STATE
            return str(exc)
        if isinstance(exc, RunError):
            return str(exc)
        self._exit = EXIT_CANNOT_PROCEED
        self.log.event(
            "run_error",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
        where = f"; the traceback is in {self.log.path}" if self.log.path else ""
        return f"unexpected {type(exc).__name__}: {one_line(exc)}{where}"

    def _finish_run(self, result: RunResult) -> None:
        try:
            self.store.finish_run(
                self.run_id, result.status, result.counts, result.exit_code, result.message
            )
            self._lease.release()
        except Exception:
            # the state cannot be written (the reason is the run's message): the run stays
            # ``running`` in it, and the next run marks it ``crashed`` and takes the lease
            pass
        finally:
            self.store.close()

    def _escalate(self) -> None:
        """Escalate the flow's open items past their due time (engine/work_items.py); each
        is an ``item_escalated`` event in the run log and to the run's listeners."""
        if not self.dry_run:
            escalate(self.store, flow=self.flow.name, listeners=[self._log_escalation])

    def _log_escalation(self, event: dict[str, Any]) -> None:
        facts = {k: v for k, v in event.items() if k not in ("event", "ts", "flow")}
        self.log.event("item_escalated", **facts)

    def _apply_retention(self) -> None:
        """Prune the flow's data older than its ``retention``, when some is well past it.

        One indexed look-up per run; the prune itself runs about once per ``PRUNE_SLACK``
        (or a tenth of the retention, if shorter).
        """
        keep = self.flow.retention_s
        if not keep:
            return
        oldest = self.store.oldest_run(self.flow.name)
        if oldest is not None and oldest < time.time() - keep - min(PRUNE_SLACK, keep / 10):
            pruned = self.store.prune(keep, self.flow.name)
            remove_run_logs(self.state.runs_folder, pruned.run_ids)
            self.log.event("pruned", **pruned.counts())

    # -- records in ------------------------------------------------------------------------------
    def _source(self, records: Iterable[Any] | None) -> Iterator[Item]:
        if records is not None:
            for data in records:
                yield data if isinstance(data, Item) else Item(data=data)
            return
        source = self.flow.source
        if source.webhook is not None:
            raise RunError(
                f"flow {self.flow.name!r} takes its records from webhooks: serve it with "
                "`flowyard serve` (records pushed to it are kept in its inbox until then)"
            )
        connector = self.ctx.connections.get(source.connection).connector
        cursor = self.store.cursor(self.flow.name)
        try:
            yield from connector.read(
                self.ctx.render_options(source.options), cursor.position if cursor else None
            )
        except (ConnectorError, OSError) as exc:
            raise SourceUnavailable(
                f"source {source.connection!r} could not be read: {exc}"
            ) from exc

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self, work: Iterable[Work]) -> tuple[str, str] | None:
        """Process every work item; returns (status, message) when the run stopped early."""
        work = self._handed_out(work)
        if self.lanes == "none":
            for w in work:
                self._complete(w, self._execute(w))
                if self._stop:
                    break
        elif self.lanes == "processes" and self._process_lanes(work):
            pass
        else:
            lanes = Lanes(
                lane_count(self.flow.concurrency),
                self._execute,
                self._complete,
                lambda: bool(self._stop),
            )
            lanes.run(work, key=lambda w: w.rec.key if isinstance(w, RecordWork) else w.seq)
        return self._stop

    def _process_lanes(self, work: Iterable[Work]) -> bool:
        """The lanes in worker processes (engine/lane_processes.py): records go there to be
        taken through the steps; the rest (inputs that are not records, unchanged records,
        the accounting and the commits) stays here. False, with nothing done, when the
        processes could not start: the lanes are threads then."""
        context = fork_context()
        assert context is not None  # self.lanes says "processes" only where it is
        calls = {s.connection for s, _, _ in self.flow.walk() if isinstance(s, CallStep)}
        self.ctx.connections.share(calls, context)
        lanes: ProcessLanes[RecordWork] = ProcessLanes(
            lane_count(self.flow.concurrency),
            self.lane_processes,
            context,
            start_worker=lambda: LaneWorker(self.ctx, self.state, lanes.write_lock),
            payload=_payload,
            complete=self._complete_relayed,
            stopping=lambda: bool(self._stop),
        )
        try:
            with self._lease.paused():  # no thread of the run is inside the store at the fork
                lanes.start()
        except LaneLost as exc:
            self.log.event("lanes_as_threads", reason=str(exc))
            self.lanes, self.lane_processes = "threads", 0
            return False
        self._writing = lanes.write_lock
        try:
            lanes.run(self._dispatched(work), key=lambda w: w.rec.key)
        except BaseException:
            if not lanes.settled:  # the processes' part of the group may not be in the
                self._lost = True  # state: commit no more (a Ctrl-C lets them settle)
            raise
        finally:
            self._writing = nullcontext()
        return True

    def _dispatched(self, work: Iterable[Work]) -> Iterator[RecordWork]:
        """The records the lane processes take through the steps; inputs that are not
        records, and records unchanged since they last went through, are done here."""
        for w in work:
            if isinstance(w, BadInput):
                self._complete(w, None)
            else:
                unchanged = self._unchanged(w)
                if unchanged is None:
                    yield w
                else:
                    self._complete(w, unchanged)
            if self._stop:
                return

    def _complete_relayed(
        self, w: RecordWork, answer: tuple[RecordResult, list[Relayed], list[str]]
    ) -> None:
        """A lane process's answer: the secrets it learned, its events, then the record."""
        result, events, secrets = answer
        if secrets:
            self.log.redact.add(*secrets)
        replay(self.log, events)
        self._complete(w, result)

    def _handed_out(self, work: Iterable[Work]) -> Iterator[Work]:
        """The work items, each noted by the watermark as it is handed out."""
        for w in work:
            self._watermark.add(w.seq, None if self._inbox else w.position)
            yield w

    def _execute(self, w: Work) -> RecordResult | None:
        """Take a record through the steps, unless it is unchanged since it last went
        through (then it is skipped before its first step). Runs on a lane."""
        if isinstance(w, BadInput):
            return None  # dead-lettered as it is, in _complete
        return self._unchanged(w) or self.executor.process(w.rec, w.start)

    def _unchanged(self, w: RecordWork) -> RecordResult | None:
        """The result of a record that is the same as when it last went through, or None
        (a record resumed at a later step is never: engine/work.py)."""
        if self._digests is not None and w.start is None:
            try:
                w.digest = self._digests.of(w.rec.key, w.rec.data, w.rec.meta)
            except Exception:  # a record JSON cannot hold: it goes through its steps each run
                w.digest = None
        if w.digest is not None:
            last = self.store.record_digest(self.flow.name, w.rec.key)
            if last is not None and last.digest == w.digest:
                # a filter would drop it again; done or skipped, its sends would be duplicates
                w.unchanged = True
                w.seen_again = last.at < time.time() - self.ctx.refresh_after
                outcome = Outcome.FILTERED if last.outcome == Outcome.FILTERED else Outcome.SKIPPED
                trace = [["unchanged", outcome.value, f"as in run {last.run_id}"]]
                return RecordResult(outcome, trace)
        return None

    # -- results in (main thread only) -----------------------------------------------------------
    def _complete(self, w: Work, result: RecordResult | None) -> None:
        """Account for one finished work item."""
        if isinstance(w, BadInput):
            self._complete_bad_input(w)
        elif result is not None:
            self._complete_record(w, result)

    def _complete_record(self, w: RecordWork, result: RecordResult) -> None:
        now = time.time()
        if not w.letters and not w.resumes:
            self.counts["read"] += 1
        self.counts[result.outcome] += 1
        self.would_send += result.would_send
        self._batch.seen_keys += result.seen_keys
        error = self._park_failures(result)
        self._batch_resumed += w.resumes
        self._batch.traces.append(
            Trace(
                self.run_id,
                self.flow.name,
                w.rec.key,
                result.outcome,
                self.ctx.mask(self._arrived(w) + result.trace),
                self.ctx.mask(error),
                now,
                started_at=result.started_at,
                labels=self.ctx.mask(result.labels),
            )
        )
        self._log_record(w, result.outcome)
        self._remember_pass(w, result, now)
        self._finish(w, final=result.outcome != Outcome.PARKED)

    def _park_failures(self, result: RecordResult) -> str | None:
        """Dead letters and review items for the record's failures; returns the error its
        trace shows. An open circuit, or a failure under ``on_error: stop``, stops the run."""
        error = None
        for failure in result.failures:
            if isinstance(failure.error, CircuitOpen):
                error = str(failure.error)
                if self._stop is None:
                    self._stop = (RunStatus.STOPPED.value, error)
                continue
            item = parked_item(self.run_id, failure)
            item.update(labels=result.labels, flow_file=self.flow.file)
            self._batch.items.append(ParkedItem(**self.ctx.mask(item)))
            if failure.review is not None:
                error = error or failure.review.reason
                continue  # a record held for a person is no failure of the flow's
            error = f"{type(failure.error).__name__}: {describe(failure.error)}"
            if self.flow.on_error == "stop" and self._stop is None:
                self._stop = (
                    RunStatus.STOPPED.value,
                    f"record {failure.rec.key} failed at {failure.step} and the flow says "
                    "on_error: stop",
                )
        return error

    def _log_record(self, w: RecordWork, outcome: Outcome) -> None:
        """A record's line: in the run log when it needs a person (or was replayed by
        one), else at the debug level (engine/runlog.py)."""
        needs_person = outcome in _NEEDS_PERSON or bool(w.letters)
        if not needs_person and not self.log.detailed:
            return
        replay_of = [letter.id for letter in w.letters]
        (self.log.event if needs_person else self.log.detail)(
            "record",
            record_key=w.rec.key,
            outcome=outcome.value,
            **(
                {"replay_of": replay_of[0] if len(replay_of) == 1 else replay_of}
                if w.letters
                else {}
            ),
            **({"reason": "unchanged"} if w.unchanged else {}),
        )

    def _remember_pass(self, w: RecordWork, result: RecordResult, now: float) -> None:
        """What a record's pass changes beyond its trace: its digest, the dead letters it
        replayed, and the open items of an earlier run it resolved."""
        key, outcome = w.rec.key, result.outcome
        if w.seen_again:
            self._batch.seen_records.append(key)
        if w.digest and not w.unchanged:
            # a record that did not go through may have sent part of its requests: forget it
            clean = outcome in FINAL_CLEAN and not result.failures
            digest = w.digest if clean else None
            self._batch.digests.append(DigestWrite(key, digest, outcome, self.run_id, now))
        for letter in w.letters:
            others = {other.record_key for other in w.letters if other is not letter}
            replayed = _replayed_as(letter, result, {k for k in others if k is not None})
            self._batch.replayed.append((letter.id, replayed))
        if not w.letters and key in self._open_keys and outcome in FINAL_CLEAN:
            self._batch.resolved.append(key)  # an earlier run's dead letter: went through now

    def _complete_bad_input(self, w: BadInput) -> None:
        """Dead-letter an input that could not become a record (see :func:`bad_input_rows`)."""
        self.counts["read"] += 1
        self.counts[Outcome.DEAD_LETTERED] += 1
        key, letter, trace = bad_input_rows(self.run_id, self.flow.name, w)
        letter.update(dead_letter_assignment(self.flow, letter["error_class"]).fields())
        self._batch.items.append(ParkedItem(**self.ctx.mask(letter)))
        self._batch.traces.append(trace)
        self.log.event(
            "record",
            record_key=key,
            outcome=Outcome.DEAD_LETTERED.value,
            step="source",
            error=w.error,
        )
        self._finish(w, final=True)

    def _finish(self, w: Work, final: bool) -> None:
        self._check_lease()
        self._watermark.finish(w.seq, final)
        if final and w.queued is not None:
            self._batch.work_done.append(w.queued)
        if final and self._inbox:
            self._batch.inbox_done.append(w.position["inbox"])
        if (
            len(self._batch.traces) >= self.group_records
            or time.monotonic() - self._last_commit >= self.group_seconds
        ):
            self._flush()

    def _check_lease(self) -> None:
        """Stop taking records once another run took the flow's lease."""
        if self._lease.lost and self._stop is None:
            self._stop = (
                RunStatus.FAILED.value,
                f"the run lost its lease on flow {self.flow.name!r} (it was not renewed in "
                f"time and another run took it); stopping so that the two do not overlap",
            )

    def _arrived(self, w: RecordWork) -> list[list[Any]]:
        """An inbox event's arrival, the first step of its trace (none for other records)."""
        if self._inbox and isinstance(w.position, dict) and "webhook" in w.position:
            return [["webhook", "received", w.position["webhook"]]]
        return []

    # -- commits ---------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Commit the group: the targets' transactions first, then the batch with its key
        states and the cursor in one transaction of the state, then close the dead letters
        a replay settled; the run log's lines up to here reach the file with the state
        they describe (docs/semantics.md, "Group commit")."""
        if self._lost:
            return  # a group was lost: committing a later cursor would pass its records
        # (a lane process's results come back once their outcomes are committed: nothing
        # to wait for here; engine/lane_processes.py)
        keys = self.group.take()  # before the targets commit: see Group.take
        try:
            self.group.commit_targets()
        except GroupLost as lost:
            self._lost = True
            raise RunError(
                f"{lost}: the last {len(self._batch.traces)} records' writes could not be "
                "committed, and none of them were kept; the next run takes them again"
            ) from lost
        progress = self._batch.progress(self.run_id, self._watermark.moved_to(), keys)
        try:
            with self._writing:
                ids = self.store.commit_progress(self.flow.name, progress)
        except BaseException:
            self._lost = True
            raise
        self._watermark.committed()
        self._note_item_ids(progress.items, ids)
        self._close_replayed(ids)
        if self._batch_resumed:  # the approvals whose records this run took on
            self.store.mark_resumed(self._batch_resumed, self.run_id)
            self._batch_resumed = []
        self._batch.clear()
        self._last_commit = time.monotonic()
        self.log.flush()
        if self.log.error is not None:
            raise StateError(
                f"run log {self.log.path}: cannot write it: "
                f"{self.log.error.strerror or self.log.error}",
                str(self.log.path),
            )

    def _note_item_ids(self, items: list[ParkedItem], ids: list[int]) -> None:
        """Keep the ids of the items written, for the result (a dry run writes none)."""
        for item, item_id in zip(items, ids, strict=False):
            held = self.dead_letter_ids if item.kind == "dead_letter" else self.review_ids
            held.append(item_id)

    def _close_replayed(self, ids: list[int]) -> None:
        for letter_id, how in self._batch.replayed:
            if how == "through":
                self.store.close_dead_letter(letter_id, "replayed", self.run_id)
            elif how == "again" and letter_id not in ids:
                # it failed at another step, or went on to review: the new item replaces it
                self.store.close_dead_letter(letter_id, "superseded", self.run_id)
            # failed again at the same step: the same dead letter was refreshed and stays open
