"""The run loop: source to steps to store, with bounded memory.

Records stream from the source one by one; with ``concurrency`` above 1 they are
spread over worker lanes by key, so records that share a key stay in order. Final
record states (traces, dead letters and review items) are committed in batches together
with the source cursor, and the cursor only moves past a record once every record
before it is final.

A replay takes each dead letter back to the record's first lookup (the first ``enrich``
it went through, with the record as it reached it), so every answer is looked up again
and every step that used one runs again; or, ``from_start``, to the flow's first step
with the record as the source delivered it.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors import Connector, Item, Registry
from engine.envrefs import ENV_CONTEXT, env_references
from engine.errors import (
    CircuitOpen,
    ConnectorError,
    FlowError,
    LockHeld,
    Problem,
    RunError,
    SourceUnavailable,
    StateError,
)
from engine.model import Flow
from engine.retry import CircuitBreaker, RateLimiter
from engine.runlog import Listener, RunLog
from engine.steps import OUTCOMES, ConnectionState, Executor, Failure, Outcome, Rec
from engine.store import DeadLetter, Store, dumps, holder_id, state_error
from engine.templates import compile_value, default_environment
from engine.unchanged import FINAL_CLEAN, RecordDigests

COMMIT_EVERY = 500  # records per progress commit
COMMIT_SECONDS = 1.0
LEASE_TTL = 60.0  # seconds; a run renews its lease every third of it
PRUNE_SLACK = 3600.0  # how far past its retention a flow's data gets before a run prunes it

EXIT_OK, EXIT_DEAD_LETTERS, EXIT_INVALID, EXIT_CANNOT_PROCEED, EXIT_STATE = 0, 1, 2, 3, 4
EXIT_REVIEW = EXIT_DEAD_LETTERS  # some records need a person, either way


@dataclass
class RunResult:
    """What a run did: counts of records by outcome, its status and the exit code it implies."""

    run_id: str
    flow: str
    status: str  # ok | dead_lettered | review | stopped | failed
    counts: dict[str, int]
    duration_s: float
    exit_code: int
    message: str | None = None
    dry_run: bool = False
    would_send: list[dict] = field(default_factory=list)
    log_path: str | None = None
    dead_letter_ids: list[int] = field(default_factory=list)
    review_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "would_send"}
        if self.dry_run:
            out["would_send"] = self.would_send
        return out


@dataclass
class _Work:
    seq: int
    rec: Rec | None
    item: Item | None = None
    start: str | None = None
    letters: list[DeadLetter] = field(default_factory=list)  # what a replay replays
    position: Any = None
    has_position: bool = False
    digest: str | None = None  # the record's digest, when the flow remembers them
    unchanged: bool = False  # skipped: the same as when it last went through
    seen_again: bool = False  # unchanged, and its digest's time is due to be refreshed


# a lane's answer for work it skipped because the run is stopping: the item stays not final
_NOT_RUN = object()


def _replayed_as(letter: DeadLetter, outcome: Outcome, others: set[str]) -> str:
    """How a replayed dead letter's record did: ``through`` (it went on), ``again`` (it, or
    what it went on to, stopped again: dead-lettered or held for review) or ``parked``.

    ``others`` are the record keys of the other dead letters replayed by the same pass (the
    items of one record, replayed from the start): their failures are theirs.
    """
    if outcome.outcome == "parked":
        return "parked"
    stopped = [
        f
        for f in outcome.failures
        if not isinstance(f.error, CircuitOpen)
        and (f.rec.key == letter.record_key or f.rec.key not in others)
    ]
    return "again" if stopped else "through"


def describe(error: BaseException) -> str:
    """An error's message with the target's answer, which is what a person can act on."""
    message = str(error)
    response = getattr(error, "response", None)
    if response not in (None, "", {}):
        answer = response if isinstance(response, str) else dumps(response)
        if answer not in message:
            message += f"; the target answered: {answer[:2000]}"
    return message


def _raw_text(data: Any) -> str | None:
    """A record as JSON text, for a dead letter that has no raw line of its own."""
    try:
        return dumps(data)
    except Exception:  # what cannot be written as JSON is shown as Python shows it
        return repr(data)[:100_000]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class Runner:
    """One run of one flow. Use :meth:`engine.Engine.run`; this class is its machinery."""

    def __init__(
        self,
        flow: Flow,
        *,
        registry: Registry,
        state: Path,
        vars: dict | None = None,
        dry_run: bool = False,
        log_stderr: bool = False,
        listeners: Iterable[Listener] = (),
        wait_lock: float = 0.0,
        kind: str = "run",
        lease_ttl: float = LEASE_TTL,
    ):
        self.flow = flow
        self.registry = registry
        self.state = Path(state)
        self.given_vars = dict(vars or {})  # kept with the run, for a replay to reuse
        self.vars = {**flow.vars, **self.given_vars}
        self._exit: int | None = None  # an exit code that the status alone does not tell
        self.dry_run = dry_run
        self.kind = kind
        self.wait_lock = wait_lock
        self.lease_ttl = lease_ttl
        self.run_id = new_run_id()
        self.env = self._environment()
        self.secrets = set(self.env.values())
        self.store: Store | None = None
        if dry_run:
            if self.state.exists():
                self.store = Store(self.state, readonly=True)
        else:
            self.store = Store(self.state)
        log_path = None if dry_run else self.state.parent / "runs" / f"{self.run_id}.jsonl"
        try:
            self.log = RunLog(
                self.run_id,
                flow.name,
                path=log_path,
                stderr=log_stderr,
                secrets=self.secrets,
                listeners=listeners,
            )
        except OSError as exc:
            if self.store is not None:
                self.store.close()
            raise StateError(
                f"run log {log_path}: cannot write it: {exc.strerror or exc}; flowyard writes "
                f"each run's log in {log_path.parent}, beside the state file",
                str(log_path),
            ) from None
        self._connections: dict[str, ConnectionState] = {}
        self._conn_lock = threading.Lock()
        self.executor = Executor(
            flow,
            self.run_id,
            self.vars,
            self.connection,
            self.store,
            self.log,
            dry_run=dry_run,
            mask=self.mask,
            env=self.env,
            refresh_after=min(PRUNE_SLACK, (flow.retention_s or PRUNE_SLACK) / 10),
        )
        self.counts = {"read": 0, **{name: 0 for name in OUTCOMES}}
        self._traces: list[dict] = []
        self._dead: list[dict] = []
        self._replayed: list[tuple[int, str]] = []  # (dead letter, through | again | parked)
        self._open_keys: set[str] = set()  # records with open items, before this run
        self._digests: RecordDigests | None = None  # set per run: None for replays
        self._digest_writes: list[tuple[str, str | None, str, str, float]] = []  # None: forget
        self._seen: list[str] = []  # records seen again unchanged: keep their state alive
        self._resolved: list[str] = []
        self.dead_letter_ids: list[int] = []
        self.review_ids: list[int] = []
        self._holder = f"{holder_id()}:{self.run_id}"
        self._stop_lease = threading.Event()
        # the watermark: the cursor moves over the contiguous run of final records only
        self._pending: dict[int, _Work] = {}
        self._finished: set[int] = set()
        self._next_seq = 0
        self._cursor: Any = None
        self._cursor_moved = False
        self._cursor_blocked = False  # a parked record: the cursor stays before it
        self._last_commit = time.monotonic()
        self._stop: tuple[str, str] | None = None
        self._lease_lost = threading.Event()

    # -- environment and secrets -----------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        import os

        missing = sorted(n for n in self.flow.env_names if n not in os.environ)
        if missing:
            # the loader found where each one is used: report them there, now as errors
            where = {
                name: p
                for p in self.flow.warnings
                for name in missing
                if f"environment variable {name} " in p.message
            }
            raise FlowError(
                [
                    Problem(
                        self.flow.file,
                        where[name].line if name in where else None,
                        where[name].column if name in where else None,
                        where[name].path if name in where else "",
                        f"environment variable {name} is not set; the flow needs it to run",
                    )
                    for name in missing
                ]
            )
        return {name: os.environ[name] for name in self.flow.env_names}

    def mask(self, value: Any) -> Any:
        return self.log.redact(value)

    def _options(self, raw: dict) -> dict:
        """Connection and source options: ``{{ vars.x }}`` and ``${env:X}`` rendered.

        They were checked at load time; compiled here once per run, in the shared
        environment that caches compiled templates. ``${env:X}`` is a reference made from
        the flow's own text (engine/envrefs.py): a var holding that text stays that text.
        """
        return compile_value(default_environment(), env_references(raw))(
            {"vars": self.vars, "run": self.executor.run_info, ENV_CONTEXT: self.env}
        )

    def connection(self, name: str) -> ConnectionState:
        with self._conn_lock:
            state = self._connections.get(name)
            if state is None:
                conn = self.flow.connections[name]
                cls = self.registry.get(conn.connector)
                connector: Connector = cls(self._options(conn.options))
                connector.root = Path(self.flow.file).resolve().parent
                connector.on_secret(self.log.redact.add)  # masked from now on, encoded too
                state = ConnectionState(
                    name,
                    connector,
                    conn.retry,
                    RateLimiter(conn.rate_limit),
                    CircuitBreaker(name, conn.breaker),
                )
                self._connections[name] = state
            return state

    # -- lease -----------------------------------------------------------------------------------
    def _acquire(self) -> None:
        deadline = time.monotonic() + self.wait_lock
        while True:
            try:
                dead = self.store.acquire_lease(self.flow.name, self._holder, self.lease_ttl)
                if dead:
                    self.log.event("lease_taken_over", holder=dead, reason="holder is gone")
                break
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
        threading.Thread(target=self._renew, daemon=True, name="flowyard-lease").start()

    def _renew(self) -> None:
        while not self._stop_lease.wait(self.lease_ttl / 3):
            try:
                if not self.store.renew_lease(self.flow.name, self._holder, self.lease_ttl):
                    self._lease_lost.set()  # it expired and another run took it: stop
                    return
            except Exception:  # a busy or failing store: try again at the next renewal
                pass

    # -- records in ------------------------------------------------------------------------------
    def _key(self, data: Any, item: Item, seq: int) -> str:
        if self.flow.source.key is not None:
            return str(self.flow.source.key({"record": data, "vars": self.vars}))
        if isinstance(data, dict) and data.get("id") is not None:
            return str(data["id"])
        return f"line:{item.line}" if item.line is not None else f"#{seq}"

    def _source(self, records: Iterable[Any] | None) -> Iterator[Item]:
        if records is not None:
            for data in records:
                yield data if isinstance(data, Item) else Item(data=data)
            return
        source = self.flow.source
        state = self.connection(source.connection)
        cursor = self.store.get_cursor(self.flow.name) if self.store is not None else None
        try:
            yield from state.connector.read(self._options(source.options), cursor)
        except ConnectorError as exc:
            raise SourceUnavailable(
                f"source {source.connection!r} could not be read: {exc}"
            ) from exc
        except OSError as exc:
            raise SourceUnavailable(
                f"source {source.connection!r} could not be read: {exc}"
            ) from exc

    def _work(self, records: Iterable[Any] | None) -> Iterator[_Work]:
        for seq, item in enumerate(self._source(records)):
            work = _Work(
                seq, None, item=item, position=item.position, has_position=item.position is not None
            )
            if item.error is None:
                try:
                    key = self._key(item.data, item, seq)
                    work.rec = Rec(
                        key=key,
                        data=item.data,
                        meta={"key": key, "line": item.line, "position": item.position},
                        source=item.data,
                    )
                except Exception as exc:  # a key template failing on this record
                    item.error = f"the record key cannot be made: {_one_line(exc)}"
            yield work

    def _replay_work(self, letters: list[DeadLetter], from_start: bool) -> Iterator[_Work]:
        if from_start:
            yield from self._replay_from_start(letters)
            return
        for seq, letter in enumerate(letters):
            context = letter.context or {}
            meta = {**(context.get("meta") or {}), "replay_of": letter.id}
            start, data = letter.step, letter.record
            lookup = context.get("lookup")
            if lookup and self.flow.step(lookup.get("step")) is not None:
                # look everything up again: the answers saved in the record may be stale
                start, data = lookup["step"], lookup.get("record")
            rec = Rec(
                key=letter.record_key or f"dead_letter:{letter.id}",
                data=data,
                meta=meta,
                parent=context.get("parent"),
                loop=context.get("loop") or {},
                source=letter.source_record,
            )
            yield _Work(seq, rec, start=start, letters=[letter])

    def _replay_from_start(self, letters: list[DeadLetter]) -> Iterator[_Work]:
        # the items of one source record (a foreach) are replayed by one pass of the record
        works: dict[str, _Work] = {}
        for letter in letters:
            meta = dict((letter.context or {}).get("meta") or {})
            key = str(meta.get("key") or letter.record_key or f"dead_letter:{letter.id}")
            if key in works:
                works[key].letters.append(letter)
                continue
            for name in ("index", "dry_run_unknown"):
                meta.pop(name, None)
            rec = Rec(
                key=key,
                data=letter.source_record,
                meta={**meta, "key": key, "replay_of": letter.id},
                source=letter.source_record,
            )
            works[key] = _Work(len(works), rec, letters=[letter])
        yield from works.values()

    # -- the loop --------------------------------------------------------------------------------
    def run(
        self,
        records: Iterable[Any] | None = None,
        replay: list[DeadLetter] | None = None,
        *,
        from_start: bool = False,
    ) -> RunResult:
        """Run the flow; every failure ends in a result (status ``failed`` and its exit
        code), except those before the run started: :class:`LockHeld` and a state file that
        cannot be opened (:class:`StateError`)."""
        started = time.perf_counter()
        if self.store is not None and not self.dry_run:
            self._start(replay)
        status, message = "ok", None
        try:
            if self.store is not None and not self.dry_run:
                digests = RecordDigests(self.flow, self.vars)
                if replay is None and digests.enabled:
                    self._digests = digests
                else:  # this run may change keys behind the digests' back
                    self.store.forget_record_digests(self.flow.name)
            self.log.event("run_started", kind=self.kind, dry_run=self.dry_run)
            self.log.flush()
            work = (
                self._replay_work(replay, from_start) if replay is not None else self._work(records)
            )
            stopped = self._loop(work)
            if stopped:
                status, message = stopped
        except Exception as exc:  # the run cannot go on: say why in one line, never a traceback
            status, message = "failed", self.mask(self._failure(exc))  # it may quote a URL path
        finally:
            self._stop_lease.set()
            for state in self._connections.values():
                try:
                    state.connector.close()
                except Exception as exc:
                    self.log.event("connection_close_failed", connection=state.name, error=str(exc))
        for final_step in (self._flush_final, self._apply_retention):
            if self._exit is not None and self._exit == EXIT_STATE:
                break  # the state cannot be written: do not try again
            try:
                final_step()
            except Exception as exc:
                if status != "failed":
                    status, message = "failed", self._failure(exc)
        if status == "ok" and self.counts["dead_lettered"]:
            status = "dead_lettered"
        elif status == "ok" and self.counts["review"]:
            status = "review"
        exit_code = {"ok": EXIT_OK, "dead_lettered": EXIT_DEAD_LETTERS, "review": EXIT_REVIEW}.get(
            status, EXIT_CANNOT_PROCEED if status == "failed" else EXIT_DEAD_LETTERS
        )
        if status == "stopped" and self.counts["parked"]:
            exit_code = EXIT_CANNOT_PROCEED
        if self._exit is not None:
            exit_code = self._exit
        result = RunResult(
            self.run_id,
            self.flow.name,
            status,
            dict(self.counts),
            round(time.perf_counter() - started, 3),
            exit_code,
            message,
            self.dry_run,
            self.executor.would_send,
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

    def _start(self, replay: list[DeadLetter] | None) -> None:
        """Take the flow's lease and record the run; nothing of a run that never started
        is left behind (its run log goes too)."""
        try:
            self._acquire()
            self.store.mark_abandoned_runs(self.flow.name)
            self.store.start_run(self.run_id, self.flow.name, self.kind, self.given_vars)
            if replay is None:
                self._open_keys = self.store.open_item_keys(self.flow.name)
        except BaseException:
            self._stop_lease.set()
            self.log.close()
            self.log.path.unlink(missing_ok=True)
            try:
                self.store.release_lease(self.flow.name, self._holder)
            except Exception:
                pass  # the lease expires by itself; the error below is the one to report
            self.store.close()
            raise

    def _failure(self, exc: BaseException) -> str:
        """The one-line reason for a run that cannot go on; the traceback goes to the run
        log only. A fault of the state file sets the exit code 4."""
        import traceback

        if isinstance(exc, sqlite3.Error):
            exc = state_error(exc, self.state)
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
        return f"unexpected {type(exc).__name__}: {_one_line(exc)}{where}"

    def _flush_final(self) -> None:
        self._flush(final=True)

    def _finish_run(self, result: RunResult) -> None:
        if self.store is None:
            return
        try:
            if not self.dry_run:
                self.store.finish_run(
                    self.run_id, result.status, result.counts, result.exit_code, result.message
                )
                self.store.release_lease(self.flow.name, self._holder)
        except Exception:
            # the state cannot be written (the reason is the run's message): the run stays
            # ``running`` in it, and the next run marks it ``crashed`` and takes the lease
            pass
        finally:
            self.store.close()

    def _loop(self, work: Iterator[_Work]) -> tuple[str, str] | None:
        """Process every work item; returns (status, message) when the run stopped early."""
        if self.flow.concurrency <= 1:
            for w in work:
                self._pending[w.seq] = w
                self._complete(w, self._execute(w))
                if self._stop:
                    break
            return self._stop
        return self._loop_concurrent(work)

    def _loop_concurrent(self, work: Iterator[_Work]) -> tuple[str, str] | None:
        lanes = self.flow.concurrency
        inboxes: list[queue.Queue] = [queue.Queue(maxsize=32) for _ in range(lanes)]
        done: queue.Queue = queue.Queue()
        stop = threading.Event()

        def lane(inbox: queue.Queue) -> None:
            while True:
                w = inbox.get()
                if w is None:
                    return
                if stop.is_set():
                    done.put((w, _NOT_RUN))
                    continue
                try:
                    done.put((w, self._execute(w)))
                except BaseException as exc:  # surfaced in the main thread
                    done.put((w, exc))

        threads = [threading.Thread(target=lane, args=(q,), daemon=True) for q in inboxes]
        for t in threads:
            t.start()
        in_flight = 0

        def drain(block: bool) -> None:
            nonlocal in_flight
            while in_flight:
                try:
                    w, outcome = done.get(block=block, timeout=0.2 if block else None)
                except queue.Empty:
                    return
                in_flight -= 1
                if isinstance(outcome, BaseException):
                    stop.set()
                    raise outcome
                if outcome is not _NOT_RUN:  # None: an unreadable input, dead-lettered
                    self._complete(w, outcome)
                if self._stop:
                    stop.set()
                block = False

        try:
            for w in work:
                if stop.is_set():
                    break
                self._pending[w.seq] = w
                lane_no = hash(w.rec.key if w.rec else w.seq) % lanes
                while True:
                    try:
                        inboxes[lane_no].put(w, timeout=0.05)
                        break
                    except queue.Full:
                        drain(block=False)
                in_flight += 1
                drain(block=False)
            while in_flight:
                drain(block=True)
        finally:
            stop.set() if self._stop else None
            for q in inboxes:
                q.put(None)
            for t in threads:
                t.join()
        return self._stop

    def _execute(self, w: _Work) -> Outcome | None:
        if w.rec is None:
            return None  # an unreadable input: dead-lettered as it is in _complete
        if self._digests is not None:
            try:
                w.digest = self._digests.of(w.rec.key, w.rec.data, w.rec.meta)
            except Exception:  # a record JSON cannot hold: it goes through its steps each run
                w.digest = None
        if w.digest is not None:
            last = self.store.record_digest(self.flow.name, w.rec.key)
            if last is not None and last[0] == w.digest:
                # a filter would drop it again; done or skipped, its sends would be duplicates
                w.unchanged = True
                w.seen_again = last[3] < time.time() - self.executor.refresh_after
                outcome = "filtered" if last[1] == "filtered" else "skipped"
                return Outcome(outcome, [["unchanged", outcome, f"as in run {last[2]}"]], [])
        return self.executor.process(w.rec, w.start)

    def _complete(self, w: _Work, outcome: Outcome | None) -> None:
        """Account for one finished work item (main thread only)."""
        now = time.time()
        if not w.letters:
            self.counts["read"] += 1
        if outcome is None:
            self._source_dead_letter(w, now)
            return
        self.counts[outcome.outcome] += 1
        error = None
        for failure in outcome.failures:
            if isinstance(failure.error, CircuitOpen):
                error = str(failure.error)
                if self._stop is None:
                    self._stop = ("stopped", error)
                continue
            self._dead.append(self.mask(self._parked_item(failure)))
            if failure.review is not None:
                error = error or failure.review.reason
                continue  # a record held for a person is no failure of the flow's
            error = f"{type(failure.error).__name__}: {describe(failure.error)}"
            rec = failure.rec
            if self.flow.on_error == "stop" and self._stop is None:
                self._stop = (
                    "stopped",
                    f"record {rec.key} failed at {failure.step} and the flow says on_error: stop",
                )
        self._traces.append(
            {
                "run_id": self.run_id,
                "flow": self.flow.name,
                "record_key": w.rec.key,
                "outcome": outcome.outcome,
                "steps": self.mask(outcome.trace),
                "error": self.mask(error),
                "at": now,
            }
        )
        replay_of = [letter.id for letter in w.letters]
        self.log.event(
            "record",
            record_key=w.rec.key,
            outcome=outcome.outcome,
            **(
                {"replay_of": replay_of[0] if len(replay_of) == 1 else replay_of}
                if w.letters
                else {}
            ),
            **({"reason": "unchanged"} if w.unchanged else {}),
        )
        if w.seen_again:
            self._seen.append(w.rec.key)
        if w.digest and not w.unchanged:
            # a record that did not go through may have sent part of its requests: forget it
            clean = outcome.outcome in FINAL_CLEAN and not outcome.failures
            digest = w.digest if clean else None
            self._digest_writes.append((w.rec.key, digest, outcome.outcome, self.run_id, now))
        for letter in w.letters:
            others = {other.record_key for other in w.letters if other is not letter}
            self._replayed.append((letter.id, _replayed_as(letter, outcome, others)))
        if not w.letters and w.rec.key in self._open_keys and outcome.outcome in FINAL_CLEAN:
            self._resolved.append(w.rec.key)  # an earlier run's dead letter: went through now
        self._finish(w, final=outcome.outcome != "parked")

    def _source_dead_letter(self, w: _Work, now: float) -> None:
        """Dead-letter an input that could not become a record: unreadable, or no key.

        It is kept under a key of its own: its line (``line:N``, the same line refreshes
        the same dead letter on every run of a file), else this run and its place in the
        run's input (``input:<run>#<n>``), so two such inputs never share a dead letter.
        The record (when it was read) and its raw text are kept with it.
        """
        item = w.item
        key = f"line:{item.line}" if item.line is not None else f"input:{self.run_id}#{w.seq}"
        raw = item.raw
        if raw is None and item.data is not None:
            raw = _raw_text(item.data)
        error_class = "UnreadableRecord" if item.data is None else "UnkeyedRecord"
        self.counts["dead_lettered"] += 1
        self._dead.append(
            self.mask(
                {
                    "run_id": self.run_id,
                    "record_key": key,
                    "step": "source",
                    "error_class": error_class,
                    "message": item.error,
                    "raw": raw,
                    "line": item.line,
                    "attempts": 1,
                    "record": item.data,
                    "source_record": item.data,
                    "context": {"meta": {"line": item.line, "position": item.position}},
                }
            )
        )
        self._traces.append(
            {
                "run_id": self.run_id,
                "flow": self.flow.name,
                "record_key": key,
                "outcome": "dead_lettered",
                "steps": [["source", "unreadable" if item.data is None else "unkeyed", item.error]],
                "error": item.error,
                "at": now,
            }
        )
        self.log.event(
            "record", record_key=key, outcome="dead_lettered", step="source", error=item.error
        )
        self._finish(w, final=True)

    def _parked_item(self, failure: Failure) -> dict:
        """A dead letter or review item for the store, with what a replay needs."""
        rec = failure.rec
        context: dict[str, Any] = {"meta": rec.meta, "parent": rec.parent, "loop": rec.loop}
        if rec.lookup is not None:
            context["lookup"] = {"step": rec.lookup[0], "record": rec.lookup[1]}
        item = {
            "run_id": self.run_id,
            "record_key": rec.key,
            "step": failure.step,
            "attempts": failure.attempts,
            "record": rec.data,
            "source_record": rec.source,
            "context": context,
            "line": rec.meta.get("line"),
        }
        if failure.review is not None:
            review = failure.review
            return {
                **item,
                "kind": "review",
                "queue": review.queue,
                "message": review.reason,
                "figures": review.figures,
            }
        return {
            **item,
            "error_class": type(failure.error).__name__,
            "message": describe(failure.error),
        }

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
            self.log.event("pruned", **self.store.prune(keep, self.flow.name))

    def _finish(self, w: _Work, final: bool) -> None:
        if self._lease_lost.is_set() and self._stop is None:
            self._stop = (
                "failed",
                f"the run lost its lease on flow {self.flow.name!r} (it was not renewed in "
                f"time and another run took it); stopping so that the two do not overlap",
            )
        if final:
            self._finished.add(w.seq)
        else:
            self._cursor_blocked = True
        # advance the watermark over the contiguous run of final records
        while self._next_seq in self._finished and not self._cursor_blocked:
            done = self._pending.pop(self._next_seq)
            self._finished.discard(self._next_seq)
            if done.has_position:
                self._cursor, self._cursor_moved = done.position, True
            self._next_seq += 1
        if (
            len(self._traces) >= COMMIT_EVERY
            or time.monotonic() - self._last_commit >= COMMIT_SECONDS
        ):
            self._flush()

    def _flush(self, final: bool = False) -> None:
        if self.store is None or self.dry_run:
            self._traces.clear()
            self._dead.clear()
            self._digest_writes.clear()
            self._seen.clear()
            self.executor.take_seen_keys()
            return
        ids = self.store.commit_progress(
            self.flow.name,
            self._traces,
            self._dead,
            self._cursor,
            move_cursor=self._cursor_moved,
            resolved=(self.run_id, self._resolved),
            digests=self._digest_writes,
            seen=(self._seen, self.executor.take_seen_keys()),
        )
        self._resolved.clear()
        self._digest_writes.clear()
        self._seen.clear()
        for item, item_id in zip(self._dead, ids, strict=True):
            (self.review_ids if item.get("kind") == "review" else self.dead_letter_ids).append(
                item_id
            )
        for letter_id, how in self._replayed:
            if how == "through":
                self.store.close_dead_letter(letter_id, "replayed", self.run_id)
            elif how == "again" and letter_id not in ids:
                # it failed at another step, or went on to review: the new item replaces it
                self.store.close_dead_letter(letter_id, "superseded", self.run_id)
            # failed again at the same step: the same dead letter was refreshed and stays open
        self._replayed.clear()
        self._traces.clear()
        self._dead.clear()
        self._cursor_moved = False
        self._last_commit = time.monotonic()
        # the log's lines up to here reach the file with the state they describe
        self.log.flush()
        if self.log.error is not None:
            raise StateError(
                f"run log {self.log.path}: cannot write it: "
                f"{self.log.error.strerror or self.log.error}",
                str(self.log.path),
            )
