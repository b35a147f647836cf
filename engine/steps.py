"""Taking one record through a flow's steps.

:class:`Executor` runs a record from any step (a replayed dead letter restarts at
the step that failed) to the end of the flow and returns its outcome and its
trace. Each step kind is one small method. Records are never changed in place: a
step that changes a record makes a new dict, so the record a dead letter keeps
is exactly the one the failing step received, and keeping a reference to the record
as the source delivered it (for a replay from the start) or as it reached its first
lookup (for a replay that looks things up again) costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connectors import Connector, Request
from engine.envrefs import ENV_CONTEXT
from engine.errors import (
    CircuitOpen,
    ConflictError,
    PermanentError,
    RecordError,
    RecordRejected,
    RunError,
    TransientError,
)
from engine.model import (
    CallStep,
    FailStep,
    FilterStep,
    Flow,
    ForeachStep,
    MapStep,
    ReconcileStep,
    RetryPolicy,
    ReviewStep,
    RouteStep,
    SetStep,
    Step,
    ValidateStep,
)
from engine.reconcile import compare, tolerance
from engine.retry import CircuitBreaker, RateLimiter, call_with_retry
from engine.runlog import RunLog
from engine.store import KeyState, Store, _default

# How a source record ended, worst first: the worst outcome of any branch wins.
OUTCOMES = ("dead_lettered", "review", "parked", "done", "skipped", "filtered")
_RANK = {name: i for i, name in enumerate(OUTCOMES)}
# Outcomes after which a record goes no further (parked: not final, left for the next run).
STOPPED = frozenset({"dead_lettered", "review", "parked", "filtered"})


def worst(a: str | None, b: str | None) -> str | None:
    """The worse of two outcomes; None (steps that sent nothing) counts as no outcome."""
    if b is None:
        return a
    return b if a is None or _RANK[b] < _RANK[a] else a


def fingerprint(options: Any) -> str:
    """A stable hash of a request's options: the same request gives the same fingerprint."""
    return hashlib.sha256(dumps_sorted(options).encode()).hexdigest()[:32]


def first_sent_key(key: str, fp: str) -> str:
    """The ``Idempotency-Key`` a key's first request is sent with: ``<key>#<request hash>``.

    The request's own hash is part of it, so the header is never reused with a different
    request, even when the state that remembers keys was lost or pruned: the same request
    gets the same header (a target that honours it answers from its store), a different
    one gets a new header (instead of a 422 for a reused key).
    """
    return f"{key}#{fp[:12]}"


def next_sent_key(key: str, previous: str, fp: str) -> str:
    """The key a changed request is sent with: ``<key>#<hash>``, new for every change.

    The hash covers the previous operation's key as well as the request, so a value that
    comes back (a stock level 10, 9, 10, 9) never reuses a key a target has already seen:
    a target that honours ``Idempotency-Key`` would answer it from its store and apply
    nothing.
    """
    return f"{key}#{hashlib.sha256(f'{previous}|{fp}'.encode()).hexdigest()[:12]}"


def dumps_sorted(value: Any) -> str:
    return json.dumps(value, default=_default, sort_keys=True, separators=(",", ":"))


@dataclass
class Rec:
    """A record on its way through the steps.

    ``source`` is the record as the source delivered it; ``lookup`` is ``(step name,
    record)`` as the record reached the first ``enrich`` it went through. Both are only
    references (records are never changed in place); a dead letter keeps them for replay.
    """

    key: str
    data: Any
    meta: dict[str, Any]
    parent: Any = None
    loop: dict[str, Any] = field(default_factory=dict)
    source: Any = None
    lookup: tuple[str, Any] | None = None


@dataclass
class Review:
    """Why a record needs a person: the queue it waits in, the reason and the figures."""

    queue: str
    reason: str
    figures: dict[str, Any]


@dataclass
class Failure:
    """Why a record was dead-lettered, parked or held for review, and where.

    A review has ``review`` set and no ``error``.
    """

    step: str
    error: BaseException | None
    attempts: int
    rec: Rec
    review: Review | None = None


@dataclass
class Outcome:
    """How one record (with everything it split into) ended."""

    outcome: str
    trace: list[list[Any]]
    failures: list[Failure]


class ConnectionState:
    """A connection opened for one run: the connector and what governs calls through it."""

    def __init__(
        self,
        name: str,
        connector: Connector,
        retry: RetryPolicy,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
    ):
        self.name = name
        self.connector = connector
        self.retry = retry
        self.limiter = limiter
        self.breaker = breaker


@dataclass
class Executor:
    """Runs records through a flow's steps with the run's connections, store and log."""

    flow: Flow
    run_id: str
    vars: dict[str, Any]
    connection: Callable[[str], ConnectionState]
    store: Store | None
    log: RunLog
    dry_run: bool = False
    would_send: list[dict] = field(default_factory=list)
    mask: Callable[[Any], Any] = lambda v: v
    env: dict[str, str] = field(default_factory=dict)  # the values of the flow's ${env:NAME}
    # a key skipped as a duplicate is kept alive when its time is older than this (seconds)
    refresh_after: float = 3600.0

    def __post_init__(self) -> None:
        self.run_info = {"id": self.run_id, "flow": self.flow.name}
        self._seen_keys: list[str] = []  # duplicates met again: the runner refreshes them
        # continuation of each step: the lists and positions that follow it
        self._where: dict[str, list[tuple[list[Step], int, Step | None]]] = {}
        self._index(self.flow.steps, [])

    def _index(self, steps: list[Step], chain: list[tuple[list[Step], int, Step | None]]) -> None:
        for i, step in enumerate(steps):
            here = [(steps, i, None)] + chain
            self._where[step.name] = here
            if isinstance(step, RouteStep):
                for branch in step.branches:
                    self._index(branch.steps, [(steps, i + 1, step)] + chain)
            elif isinstance(step, ForeachStep):
                # a foreach body ends its item: nothing of the outer flow follows it
                self._index(step.steps, [])

    def take_seen_keys(self) -> list[str]:
        """The idempotency keys skipped as duplicates since the last call, for the runner to
        keep alive with its next progress commit (retention counts from when a key was last
        seen, so a source that keeps delivering a record never has it sent again)."""
        taken, self._seen_keys = self._seen_keys, []  # one swap: lanes may append meanwhile
        return taken

    def context(self, rec: Rec) -> dict[str, Any]:
        ctx = {"record": rec.data, "vars": self.vars, "meta": rec.meta, "run": self.run_info}
        if rec.parent is not None:
            ctx["parent"] = rec.parent
        if rec.loop:
            ctx.update(rec.loop)
        return ctx

    # -- entry points --------------------------------------------------------------------------
    def process(self, rec: Rec, start: str | None = None) -> Outcome:
        """Take ``rec`` from the first step (or from step ``start``) to the end."""
        trace: list[list[Any]] = []
        failures: list[Failure] = []
        chain = [(self.flow.steps, 0, None)] if start is None else self._where[start]
        outcome: str | None = None
        for steps, index, _container in chain:
            result, rec = self._run(steps, index, rec, trace, failures)
            outcome = worst(outcome, result)
            if result in STOPPED:
                break
        return Outcome(outcome or "done", trace, failures)

    # -- the step loop ------------------------------------------------------------------------
    def _run(
        self, steps: list[Step], index: int, rec: Rec, trace: list, failures: list
    ) -> tuple[str | None, Rec]:
        """Run ``steps[index:]``; returns the outcome (None: nothing sent) and the record."""
        outcome: str | None = None
        for step in steps[index:]:
            started = time.perf_counter()
            try:
                result = self._step(step, rec, trace, failures)
            except CircuitOpen as exc:
                failures.append(Failure(step.name, exc, 0, rec))
                trace.append([step.name, "parked"])
                return "parked", rec
            except _NeedsReview as held:
                unknown = rec.meta.get("dry_run_unknown") if self.dry_run else None
                if unknown:  # it compared an answer a dry run does not get
                    trace.append([step.name, f"not checked (dry run: no answer of {unknown})"])
                    return worst(outcome, "done"), rec
                review = held.review
                failures.append(Failure(step.name, None, 1, rec, review))
                trace.append(
                    [
                        step.name,
                        "review",
                        {"queue": review.queue, "reason": review.reason, "figures": review.figures},
                    ]
                )
                self.log.event(
                    "step",
                    step=step.name,
                    record_key=rec.key,
                    outcome="review",
                    queue=review.queue,
                    reason=review.reason,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
                return "review", rec
            except RunError:
                raise  # the run cannot go on (the state file failed): not this record's doing
            except Exception as exc:
                # _Failed, or anything else a step raised on this record (a value too big for
                # a filter, a recursion): the record is dead-lettered, the run goes on
                failed = exc if isinstance(exc, _Failed) else _Failed(exc)
                unknown = rec.meta.get("dry_run_unknown") if self.dry_run else None
                if unknown:  # it needed an answer a dry run does not get: not the record's fault
                    trace.append([step.name, f"not checked (dry run: no answer of {unknown})"])
                    return worst(outcome, "done"), rec
                failures.append(Failure(step.name, failed.error, failed.attempts, rec))
                error = f"{type(failed.error).__name__}: {failed.error}"
                trace.append([step.name, "dead_lettered", error])
                self.log.event(
                    "step",
                    step=step.name,
                    record_key=rec.key,
                    outcome="dead_lettered",
                    error=error,
                    attempt=failed.attempts,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
                return "dead_lettered", rec
            if isinstance(result, str):  # the record stops here: filtered, parked, failed
                return worst(outcome, result), rec
            rec, step_outcome = result
            if step_outcome is not None:
                outcome = worst(outcome, step_outcome)
        # None when nothing was sent: a route branch that only maps must not make a
        # record whose sends were all skipped count as done
        return outcome, rec

    def _step(self, step: Step, rec: Rec, trace: list, failures: list) -> Any:
        try:
            if isinstance(step, MapStep):
                data = step.mapping(rec.data, self.context(rec))
                if step.into is not None:
                    data = {**rec.data, step.into: data}
                trace.append([step.name, "mapped"])
                return _with(rec, data), None
            if isinstance(step, ValidateStep):
                step.validator(rec.data)
                trace.append([step.name, "valid"])
                return rec, None
            if isinstance(step, FilterStep):
                if step.condition(self.context(rec)):
                    trace.append([step.name, "kept"])
                    return rec, None
                trace.append([step.name, "filtered"])
                return "filtered"
            if isinstance(step, SetStep):
                ctx = self.context(rec)
                data = dict(rec.data)
                for name, value in step.fields.items():
                    data[name] = value(ctx)
                trace.append([step.name, "set"])
                return _with(rec, data), None
            if isinstance(step, RouteStep):
                return self._route(step, rec, trace, failures)
            if isinstance(step, ForeachStep):
                return self._foreach(step, rec, trace, failures)
            if isinstance(step, CallStep):
                return self._call(step, rec, trace)
            if isinstance(step, FailStep):
                raise RecordRejected(str(step.message(self.context(rec))))
            if isinstance(step, ReviewStep):
                ctx = self.context(rec)
                figures = {name: value(ctx) for name, value in step.figures.items()}
                raise _NeedsReview(Review(step.queue, str(step.reason(ctx)), figures))
            if isinstance(step, ReconcileStep):
                return self._reconcile(step, rec, trace)
        except (RecordError, PermanentError) as exc:
            raise _Failed(exc, getattr(exc, "attempts", 1)) from exc
        raise AssertionError(f"unknown step {step!r}")  # the loader only builds the kinds above

    def _route(self, step: RouteStep, rec: Rec, trace: list, failures: list) -> Any:
        ctx = self.context(rec)
        for i, branch in enumerate(step.branches):
            if branch.condition is None or branch.condition(ctx):
                trace.append([step.name, f"branch {i}" if branch.condition else "otherwise"])
                result, rec = self._run(branch.steps, 0, rec, trace, failures)
                if result in STOPPED:
                    return result
                return rec, result
        trace.append([step.name, "no branch"])
        return rec, None

    def _foreach(self, step: ForeachStep, rec: Rec, trace: list, failures: list) -> Any:
        items = step.items(self.context(rec))
        if not isinstance(items, (list, tuple)):
            raise _Failed(RecordError(f"foreach items must be a list, got {type(items).__name__}"))
        outcome: str | None = None
        for i, item in enumerate(items):
            child = Rec(
                key=f"{rec.key}:{i}",
                data=item,
                meta={**rec.meta, "index": i},
                parent=rec.data,
                loop={step.as_name: item},
                source=rec.source,
            )
            if step.key is not None:
                child.key = str(step.key(self.context(child)))
            result, _ = self._run(step.steps, 0, child, trace, failures)
            outcome = worst(outcome, result)
        trace.append([step.name, f"{len(items)} items"])
        if outcome == "parked":
            return "parked"
        return rec, ("done" if outcome in (None, "filtered") else outcome)

    # -- money --------------------------------------------------------------------------------
    def _reconcile(self, step: ReconcileStep, rec: Rec, trace: list) -> Any:
        ctx = self.context(rec)
        default = tolerance(step.tolerance(ctx) if step.tolerance else None, "the step")
        pairs = []
        for name, expected, actual, allowed in self._amounts(step, ctx):
            allowed = default if allowed is None else tolerance(allowed, name)
            pairs.append((name, expected, actual, allowed))
        result = compare(pairs)
        if result.matches:
            trace.append([step.name, "reconciled", result.figures])
            return rec, None
        reason = "; ".join(result.differences)
        if step.reason is not None:
            reason = f"{step.reason(ctx)}: {reason}"
        raise _NeedsReview(Review(step.queue, reason, result.figures))

    @staticmethod
    def _amounts(step: ReconcileStep, ctx: dict) -> list[tuple[str, Any, Any, Any]]:
        """``(name, expected, actual, tolerance or None)`` of each amount, rendered."""
        if isinstance(step.amounts, list):
            return [
                (
                    a.name,
                    a.expected(ctx),
                    a.actual(ctx),
                    a.tolerance(ctx) if a.tolerance is not None else None,
                )
                for a in step.amounts
            ]
        given = step.amounts(ctx)  # one template: a mapping, or a list with names
        if isinstance(given, dict):
            items = [(str(name), value) for name, value in given.items()]
        elif isinstance(given, list | tuple):
            items = [
                (str(v.get("name", f"amount {i + 1}")) if isinstance(v, dict) else str(i), v)
                for i, v in enumerate(given)
            ]
        else:
            raise RecordError(
                "reconcile: amounts must give a mapping of name -> {expected, actual} or a "
                f"list of {{name, expected, actual}}; got {type(given).__name__}"
            )
        out = []
        for name, value in items:
            if not isinstance(value, dict) or "expected" not in value or "actual" not in value:
                raise RecordError(
                    f"reconcile: amount {name} must be a mapping with expected and actual"
                )
            out.append((name, value["expected"], value["actual"], value.get("tolerance")))
        return out

    # -- sends and lookups ----------------------------------------------------------------------
    def _call(self, step: CallStep, rec: Rec, trace: list) -> Any:
        conn = self.connection(step.connection)
        ctx = self.context(rec)
        # the flow's ${env:NAME} became references at load (engine/envrefs.py): the values
        # go where the flow's text put them, and the record's text is never scanned for more
        options = step.options({**ctx, ENV_CONTEXT: self.env} if self.env else ctx)
        if step.kind == "enrich":
            if self.dry_run:
                trace.append([step.name, "not looked up (dry run)"])
                return self._unanswered(step, rec), None
            response, _ = self._attempts(step, conn, rec, Request(options=options))
            trace.append([step.name, "looked up"])
            looked_up = _with(rec, {**rec.data, step.save_as: response.body})
            if rec.lookup is None:  # where a replay starts to look things up again
                looked_up.lookup = (step.name, rec.data)
            return looked_up, None

        key = (
            str(step.idempotency_key(ctx))
            if step.idempotency_key is not None
            else f"{self.flow.name}:{step.name}:{rec.key}"
        )
        fp = fingerprint(options)
        prev = self.store.get_key(self.flow.name, key) if self.store is not None else None
        sent_key = first_sent_key(key, fp)
        if prev is not None:
            if prev.fingerprint == fp:
                if prev.state == "done":
                    if prev.updated_at < time.time() - self.refresh_after:
                        self._seen_keys.append(key)
                    trace.append([step.name, "skipped", "duplicate"])
                    self.log.event(
                        "step",
                        step=step.name,
                        record_key=rec.key,
                        outcome="skipped",
                        reason="duplicate",
                        key=key,
                    )
                    return self._saved_key(step, rec, prev), "skipped"
                sent_key = prev.sent_key  # in flight or failed: repeat the very same request
            elif prev.state in ("done", "in_flight"):
                if step.on_change == "skip":
                    trace.append([step.name, "skipped", "changed, on_change: skip"])
                    return self._saved_key(step, rec, prev), "skipped"
                if step.on_change == "conflict":
                    raise ConflictError(
                        f"idempotency key {key!r} was already sent with a different request "
                        f"(run {prev.run_id}); the record changed since. Set on_change: update "
                        "to send the change, or skip to ignore it"
                    )
                sent_key = next_sent_key(key, prev.sent_key, fp)
            else:  # a failed request, changed: a new operation
                sent_key = next_sent_key(key, prev.sent_key, fp)

        if self.dry_run:
            self.would_send.append(
                {
                    "step": step.name,
                    "connection": step.connection,
                    "record_key": rec.key,
                    "idempotency_key": sent_key,
                    "request": self.mask(options),
                }
            )
            trace.append([step.name, "would send (dry run)"])
            return self._unanswered(step, rec), "done"

        self._remember(key, "in_flight", fp, sent_key, step, rec)
        try:
            response, _ = self._attempts(
                step, conn, rec, Request(options=options, idempotency_key=sent_key)
            )
        except _Failed as failed:
            # a transient failure may have been applied: its key stays in flight and the
            # next attempt repeats the same request; anything else was refused
            if not isinstance(failed.error, TransientError):
                self._remember(key, "failed", fp, sent_key, step, rec)
            raise
        self._remember(key, "done", fp, sent_key, step, rec, response.body)
        trace.append(
            [
                step.name,
                "sent",
                {"status": response.status, "key": sent_key, "response": response.body},
            ]
        )
        return self._saved(step, rec, response.body), "done"

    def _attempts(self, step: CallStep, conn: ConnectionState, rec: Rec, request: Request) -> Any:
        def on_attempt(attempt: int, ms: float, error: BaseException | None) -> None:
            self.log.event(
                "attempt",
                step=step.name,
                record_key=rec.key,
                attempt=attempt,
                duration_ms=round(ms, 2),
                outcome="ok"
                if error is None
                else ("transient" if isinstance(error, TransientError) else "failed"),
                **({"error": f"{type(error).__name__}: {error}"} if error else {}),
            )

        try:
            return call_with_retry(
                lambda: conn.connector.call(request),
                step.retry or conn.retry,
                limiter=conn.limiter,
                breaker=conn.breaker,
                on_attempt=on_attempt,
            )
        except TransientError as exc:
            raise _Failed(exc, (step.retry or conn.retry).attempts) from exc
        except CircuitOpen:
            raise
        except Exception as exc:  # permanent, or a connector bug: the record is dead-lettered
            raise _Failed(exc, 1) from exc

    def _remember(
        self,
        key: str,
        state: str,
        fp: str,
        sent_key: str,
        step: CallStep,
        rec: Rec,
        response: Any = None,
    ) -> None:
        if self.store is not None:
            self.store.set_key(
                self.flow.name,
                key,
                state=state,
                fingerprint=fp,
                sent_key=sent_key,
                step=step.name,
                record_key=rec.key,
                run_id=self.run_id,
                response=self.mask(response),
                source_key=rec.meta.get("key", rec.key),
            )

    def _saved(self, step: CallStep, rec: Rec, body: Any) -> Rec:
        if step.save_as is None:
            return rec
        return _with(rec, {**rec.data, step.save_as: body})

    def _saved_key(self, step: CallStep, rec: Rec, prev: KeyState) -> Rec:
        """A skipped send: its stored response, decoded only when ``save_as`` needs it."""
        return rec if step.save_as is None else self._saved(step, rec, prev.response)

    def _unanswered(self, step: CallStep, rec: Rec) -> Rec:
        """A dry run's call: ``save_as`` is null, and later failures may stem from that."""
        if step.save_as is None:
            return rec
        rec = self._saved(step, rec, None)
        rec.meta = {**rec.meta, "dry_run_unknown": step.name}
        return rec


class _NeedsReview(Exception):
    """A step holds the record for a person: it goes to a review queue."""

    def __init__(self, review: Review):
        super().__init__(review.reason)
        self.review = review


class _Failed(Exception):
    """A step failed for good: the record goes to the dead-letter queue."""

    def __init__(self, error: BaseException, attempts: int = 1):
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


def _with(rec: Rec, data: Any) -> Rec:
    return Rec(
        key=rec.key,
        data=data,
        meta=rec.meta,
        parent=rec.parent,
        loop=rec.loop,
        source=rec.source,
        lookup=rec.lookup,
    )
