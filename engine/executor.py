"""Taking one record through a flow's steps (run time).

:class:`Executor` runs a record from any step (a replayed dead letter restarts at the
step that failed, or at its first lookup) to the end of the flow and returns a
:class:`RecordResult`: its outcome, its trace, why it stopped, and what the runner must
remember for it. It works with what the run context gives it (engine/context.py) and
never calls back into the runner, so it can be run, and tested, on its own.

Each step kind is one small method returning a typed :data:`StepResult`: :class:`GoOn`
(the record, changed or not, goes to the next step) or :class:`Stop`. Records are never
changed in place: a step that changes a record makes a new dict, so the record a dead
letter keeps is exactly the one the failing step received, and keeping a reference to the
record as the source delivered it (for a replay from the start) or as it reached its first
lookup (for a replay that looks things up again) costs nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from connectors import Request, Response
from engine.codec import dumps, dumps_sorted, loads
from engine.compensation import Compensator
from engine.context import ConnectionState, RunContext
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
from engine.group import Group
from engine.idempotency import fingerprint, first_sent_key, next_sent_key
from engine.model import (
    ApproveStep,
    CallStep,
    FailStep,
    FilterStep,
    ForeachStep,
    MapStep,
    ReconcileStep,
    ReviewStep,
    RouteStep,
    SetStep,
    Step,
    ValidateStep,
)
from engine.outcomes import STOPPED, Outcome, worst
from engine.reconcile import compare, tolerance
from engine.retry import call_with_retry
from engine.store import KeyState, KeyWrite, SendState, WorkItem
from engine.work_items import Assignment, assign, dead_letter_assignment, render_labels

#: a step's line in a record's trace: ``[step, what happened, detail?]``
TraceLine = list[Any]


@dataclass(slots=True)
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
    """Why a record needs a person: the queue it waits in, the reason and the figures;
    ``kind`` is ``review`` or ``approval``, ``assignment`` its owner, category and SLA."""

    queue: str
    reason: str
    figures: dict[str, Any]
    kind: str = "review"
    assignment: Assignment | None = None


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
    assignment: Assignment | None = None  # a dead letter's queue, owner and category


@dataclass(slots=True)
class RecordResult:
    """How one record (with everything it split into) ended.

    ``seen_keys`` are idempotency keys its sends met as duplicates whose time is due to be
    refreshed (retention counts from when a key was last seen, so a source that keeps
    delivering a record never has it sent again); ``would_send`` are a dry run's requests.
    """

    outcome: Outcome
    trace: list[TraceLine] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seen_keys: list[str] = field(default_factory=list)
    would_send: list[dict[str, Any]] = field(default_factory=list)
    started_at: float | None = None  # when its pass began (for cycle times)
    labels: dict[str, Any] | None = None  # the flow's labels of the record
    ended: bool = False  # it took an approval's on_reject steps: nothing else follows


@dataclass(slots=True)
class GoOn:
    """The record goes on to the next step; ``outcome`` is what the step did to count
    (``done`` for a send, ``skipped`` for a duplicate; None: nothing that counts)."""

    rec: Rec
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """The record stops here (filtered, parked, or what it split into stopped)."""

    outcome: Outcome


StepResult = GoOn | Stop

_FILTERED = Stop(Outcome.FILTERED)
_PARKED = Stop(Outcome.PARKED)
# where a step's record goes on: the lists and positions that follow the step
_Chain = list[tuple[list[Step], int]]


class Executor:
    """Runs records through a flow's steps with what the run context gives."""

    def __init__(self, ctx: RunContext, group: Group | None = None):
        self.ctx = ctx
        self.flow = ctx.flow
        self.store = ctx.store
        self.log = ctx.log
        self.dry_run = ctx.dry_run
        # the run's open group of writes (engine/group.py); on its own, every key state is
        # committed at once, as a run without groups would
        self.group = group or Group(ctx.store, ctx.flow.name, immediate=True)
        self.compensator = Compensator(ctx)
        self._where: dict[str, _Chain] = {}
        self._index(self.flow.steps, [])

    def _index(self, steps: list[Step], chain: _Chain) -> None:
        for i, step in enumerate(steps):
            self._where[step.name] = [(steps, i), *chain]
            if isinstance(step, RouteStep):
                for branch in step.branches:
                    self._index(branch.steps, [(steps, i + 1), *chain])
            elif isinstance(step, ForeachStep):
                # a foreach body ends its item: nothing of the outer flow follows it
                self._index(step.steps, [])
            elif isinstance(step, ApproveStep):
                self._index(step.on_reject, [])  # a rejected record ends after these

    def context(self, rec: Rec) -> dict[str, Any]:
        """What templates of a step see for ``rec``."""
        ctx = {
            "record": rec.data,
            "vars": self.ctx.vars,
            "meta": rec.meta,
            "run": self.ctx.run_info,
        }
        if rec.parent is not None:
            ctx["parent"] = rec.parent
        if rec.loop:
            ctx.update(rec.loop)
        return ctx

    # -- the entry point ------------------------------------------------------------------------
    def process(self, rec: Rec, start: str | None = None) -> RecordResult:
        """Take ``rec`` from the first step (or from step ``start``) to the end."""
        result = RecordResult(Outcome.DONE, started_at=time.time())
        chain = [(self.flow.steps, 0)] if start is None else self._where[start]
        outcome: Outcome | None = None
        for steps, index in chain:
            reached, rec = self._run(steps, index, rec, result)
            outcome = worst(outcome, reached)
            if reached in STOPPED or result.ended:
                break
        result.outcome = outcome or Outcome.DONE
        self._settle(rec, result)
        return result

    def _settle(self, rec: Rec, result: RecordResult) -> None:
        """What a finished pass leaves: the record's labels, and its compensations run
        (it failed for good) or settled (it went through)."""
        result.labels = render_labels(self.flow, self.context(rec))
        if not self.compensator.enabled:
            return
        source_key = str(rec.meta.get("key", rec.key))
        if result.outcome == Outcome.DEAD_LETTERED:
            self.compensator.undo(source_key, "a later step failed", result.trace)
        elif result.outcome in (Outcome.DONE, Outcome.SKIPPED, Outcome.FILTERED):
            self.compensator.settle(source_key)

    # -- the step loop ------------------------------------------------------------------------
    def _run(
        self, steps: list[Step], index: int, rec: Rec, out: RecordResult
    ) -> tuple[Outcome | None, Rec]:
        """Run ``steps[index:]``; returns the outcome (None: nothing sent) and the record."""
        outcome: Outcome | None = None
        for step in steps[index:]:
            started = time.perf_counter()
            try:
                result = self._step(step, rec, out)
            except CircuitOpen as exc:
                out.failures.append(Failure(step.name, exc, 0, rec))
                out.trace.append([step.name, "parked"])
                return Outcome.PARKED, rec
            except _NeedsReview as held:
                if self._unknown_in_dry_run(step, rec, out):
                    return worst(outcome, Outcome.DONE), rec
                self._held(step, rec, held.review, started, out)
                return Outcome.REVIEW, rec
            except RunError:
                raise  # the run cannot go on (the state failed): not this record's doing
            except Exception as exc:
                # _Failed, or anything else a step raised on this record (a value too big for
                # a filter, a recursion): the record is dead-lettered, the run goes on
                if self._unknown_in_dry_run(step, rec, out):
                    return worst(outcome, Outcome.DONE), rec
                self._failed(
                    step, rec, exc if isinstance(exc, _Failed) else _Failed(exc), started, out
                )
                return Outcome.DEAD_LETTERED, rec
            if isinstance(result, Stop):  # the record stops here: filtered, parked, failed
                return worst(outcome, result.outcome), rec
            rec = result.rec
            if result.outcome is not None:
                outcome = worst(outcome, result.outcome)
        # None when nothing was sent: a route branch that only maps must not make a
        # record whose sends were all skipped count as done
        return outcome, rec

    def _unknown_in_dry_run(self, step: Step, rec: Rec, out: RecordResult) -> bool:
        """In a dry run, a step that needed an answer a dry run does not get (a lookup's,
        a send's) is shown as not checked: not the record's fault."""
        unknown = rec.meta.get("dry_run_unknown") if self.dry_run else None
        if unknown:
            out.trace.append([step.name, f"not checked (dry run: no answer of {unknown})"])
        return bool(unknown)

    def _held(
        self, step: Step, rec: Rec, review: Review, started: float, out: RecordResult
    ) -> None:
        out.failures.append(Failure(step.name, None, 1, rec, review))
        detail: dict[str, Any] = {
            "queue": review.queue,
            "reason": review.reason,
            "figures": review.figures,
        }
        if review.assignment is not None:
            detail["owner"] = review.assignment.owner
            if review.assignment.due_s is not None:
                detail["due_in_s"] = int(review.assignment.due_s)
        out.trace.append([step.name, "approval" if review.kind == "approval" else "review", detail])
        self.log.event(
            "step",
            step=step.name,
            record_key=rec.key,
            outcome=Outcome.REVIEW.value,
            kind=review.kind,
            queue=review.queue,
            reason=review.reason,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _failed(
        self, step: Step, rec: Rec, failed: _Failed, started: float, out: RecordResult
    ) -> None:
        category = step.name if isinstance(step, FailStep) else type(failed.error).__name__
        out.failures.append(
            Failure(
                step.name,
                failed.error,
                failed.attempts,
                rec,
                assignment=dead_letter_assignment(self.flow, category),
            )
        )
        error = f"{type(failed.error).__name__}: {failed.error}"
        out.trace.append([step.name, "dead_lettered", error])
        self.log.event(
            "step",
            step=step.name,
            record_key=rec.key,
            outcome=Outcome.DEAD_LETTERED.value,
            error=error,
            attempt=failed.attempts,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _step(self, step: Step, rec: Rec, out: RecordResult) -> StepResult:
        try:
            if isinstance(step, MapStep):
                data = step.mapping(rec.data, self.context(rec))
                if step.into is not None:
                    data = {**rec.data, step.into: data}
                out.trace.append([step.name, "mapped"])
                return GoOn(_with(rec, data))
            if isinstance(step, ValidateStep):
                step.validator(rec.data)
                out.trace.append([step.name, "valid"])
                return GoOn(rec)
            if isinstance(step, FilterStep):
                if step.condition(self.context(rec)):
                    out.trace.append([step.name, "kept"])
                    return GoOn(rec)
                out.trace.append([step.name, "filtered"])
                return _FILTERED
            if isinstance(step, SetStep):
                ctx = self.context(rec)
                data = dict(rec.data)
                for name, value in step.fields.items():
                    data[name] = value(ctx)
                out.trace.append([step.name, "set"])
                return GoOn(_with(rec, data))
            if isinstance(step, RouteStep):
                return self._route(step, rec, out)
            if isinstance(step, ForeachStep):
                return self._foreach(step, rec, out)
            if isinstance(step, CallStep):
                return self._call(step, rec, out)
            if isinstance(step, FailStep):
                raise RecordRejected(str(step.message(self.context(rec))))
            if isinstance(step, ApproveStep):
                return self._approve(step, rec, out)
            if isinstance(step, ReviewStep):
                ctx = self.context(rec)
                figures = {name: value(ctx) for name, value in step.figures.items()}
                raise _NeedsReview(
                    Review(
                        step.queue,
                        str(step.reason(ctx)),
                        figures,
                        assignment=self._assignment(step),
                    )
                )
            if isinstance(step, ReconcileStep):
                return self._reconcile(step, rec, out)
        except (RecordError, PermanentError) as exc:
            raise _Failed(exc, getattr(exc, "attempts", 1)) from exc
        raise AssertionError(f"unknown step {step!r}")  # the loader only builds the kinds above

    def _route(self, step: RouteStep, rec: Rec, out: RecordResult) -> StepResult:
        ctx = self.context(rec)
        for i, branch in enumerate(step.branches):
            if branch.condition is None or branch.condition(ctx):
                out.trace.append([step.name, f"branch {i}" if branch.condition else "otherwise"])
                outcome, rec = self._run(branch.steps, 0, rec, out)
                if outcome in STOPPED or out.ended:
                    return Stop(outcome or Outcome.DONE)
                return GoOn(rec, outcome)
        out.trace.append([step.name, "no branch"])
        return GoOn(rec)

    def _foreach(self, step: ForeachStep, rec: Rec, out: RecordResult) -> StepResult:
        items = step.items(self.context(rec))
        if not isinstance(items, (list, tuple)):
            raise _Failed(RecordError(f"foreach items must be a list, got {type(items).__name__}"))
        outcome: Outcome | None = None
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
            reached, _ = self._run(step.steps, 0, child, out)
            outcome = worst(outcome, reached)
        out.trace.append([step.name, f"{len(items)} items"])
        if outcome == Outcome.PARKED:
            return _PARKED
        return GoOn(rec, Outcome.DONE if outcome in (None, Outcome.FILTERED) else outcome)

    # -- money --------------------------------------------------------------------------------
    def _reconcile(self, step: ReconcileStep, rec: Rec, out: RecordResult) -> StepResult:
        ctx = self.context(rec)
        default = tolerance(step.tolerance(ctx) if step.tolerance else None, "the step")
        pairs = []
        for name, expected, actual, allowed in self._amounts(step, ctx):
            allowed = default if allowed is None else tolerance(allowed, name)
            pairs.append((name, expected, actual, allowed))
        result = compare(pairs)
        if result.matches:
            out.trace.append([step.name, "reconciled", result.figures])
            return GoOn(rec)
        reason = "; ".join(result.differences)
        if step.reason is not None:
            reason = f"{step.reason(ctx)}: {reason}"
        raise _NeedsReview(
            Review(
                step.queue,
                reason,
                result.figures,
                assignment=assign(self.flow, step.queue, step.name),
            )
        )

    # -- people ---------------------------------------------------------------------------------
    def _assignment(self, step: ReviewStep) -> Assignment:
        return assign(
            self.flow,
            step.queue,
            step.category or step.name,
            owner=step.owner,
            due_s=step.due_s,
            escalate_to=step.escalate_to,
        )

    def _approve(self, step: ApproveStep, rec: Rec, out: RecordResult) -> StepResult:
        """Go on when a person approved the record with these figures; take the reject
        branch when one rejected it; otherwise stop it as an approval to decide."""
        ctx = self.context(rec)
        figures = {name: value(ctx) for name, value in step.figures.items()}
        reason = str(step.reason(ctx))
        decided = self.store.approval(self.flow.name, rec.key, step.name)
        if decided is not None and decided.status in ("approved", "rejected"):
            if _same_figures(decided, self.ctx.mask(figures)):
                return self._decided(step, rec, decided, out)
        raise _NeedsReview(
            Review(step.queue, reason, figures, kind="approval", assignment=self._assignment(step))
        )

    def _decided(
        self, step: ApproveStep, rec: Rec, decided: WorkItem, out: RecordResult
    ) -> StepResult:
        at = decided.decided_at or 0.0
        detail = {
            "item": decided.id,
            "by": decided.decided_by,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            "comment": decided.comment,
        }
        out.trace.append([step.name, decided.status, detail])
        self.log.event(
            "step",
            step=step.name,
            record_key=rec.key,
            outcome=decided.status,
            item=decided.id,
            by=decided.decided_by,
        )
        if decided.status == "approved":
            return GoOn(rec)
        why = f"approval {decided.id} rejected by {decided.decided_by}"
        self.compensator.undo(str(rec.meta.get("key", rec.key)), why, out.trace)
        outcome, rec = self._run(step.on_reject, 0, rec, out)
        out.ended = True
        return Stop(outcome or Outcome.DONE)

    @staticmethod
    def _amounts(step: ReconcileStep, ctx: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
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
        amounts = []
        for name, value in items:
            if not isinstance(value, dict) or "expected" not in value or "actual" not in value:
                raise RecordError(
                    f"reconcile: amount {name} must be a mapping with expected and actual"
                )
            amounts.append((name, value["expected"], value["actual"], value.get("tolerance")))
        return amounts

    # -- sends and lookups ----------------------------------------------------------------------
    def _call(self, step: CallStep, rec: Rec, out: RecordResult) -> StepResult:
        conn = self.ctx.connections.get(step.connection)
        ctx = self.context(rec)
        # the flow's ${env:NAME} became references at load (engine/envrefs.py): the values
        # go where the flow's text put them, and the record's text is never scanned for more
        env = self.ctx.env
        options = step.options({**ctx, ENV_CONTEXT: env} if env else ctx)
        if step.kind == "enrich":
            return self._lookup(step, conn, rec, options, out)

        key = (
            str(step.idempotency_key(ctx))
            if step.idempotency_key is not None
            else f"{self.flow.name}:{step.name}:{rec.key}"
        )
        fp = fingerprint(options)
        prev = self.group.get_key(key)
        sent_key = first_sent_key(key, fp)
        if prev is not None and prev.state == SendState.COMPENSATED:
            # its earlier send was undone: this one is a new operation
            sent_key = next_sent_key(key, prev.sent_key, fp)
        elif prev is not None:
            if prev.fingerprint == fp:
                if prev.state == SendState.DONE:
                    return self._duplicate(step, rec, key, prev, out)
                sent_key = prev.sent_key  # in flight or failed: repeat the very same request
            elif prev.state in (SendState.DONE, SendState.IN_FLIGHT):
                if step.on_change == "skip":
                    out.trace.append([step.name, "skipped", "changed, on_change: skip"])
                    return GoOn(self._saved_key(step, rec, prev), Outcome.SKIPPED)
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
            out.would_send.append(
                {
                    "step": step.name,
                    "connection": step.connection,
                    "record_key": rec.key,
                    "idempotency_key": sent_key,
                    "request": self.ctx.mask(options),
                }
            )
            out.trace.append([step.name, "would send (dry run)"])
            return GoOn(self._unanswered(step, rec), Outcome.DONE)

        # a target that holds the group in its own transaction needs no mark before the
        # request: until the group commits, neither the row nor the key is kept
        # ... unless the flow can undo sends (compensate:): a compensation commits its state
        # at once (engine/compensation.py), so a target's rows must be committed as they go,
        # or a crash would keep the compensation's key and lose the row change it made
        held = not self.compensator.enabled and self.group.holds(conn.connector, conn.name)
        if not held:
            self.group.mark_in_flight(
                self._key_write(key, SendState.IN_FLIGHT, fp, sent_key, step, rec)
            )
        try:
            response = self._attempts(
                step, conn, rec, Request(options=options, idempotency_key=sent_key)
            )
        except _Failed as failed:
            # a transient failure may have been applied: its key stays in flight and the
            # next attempt repeats the same request; anything else was refused
            if not isinstance(failed.error, TransientError):
                write = self._key_write(key, SendState.FAILED, fp, sent_key, step, rec)
                self.group.outcome(write, held=held)
            raise
        write = self._key_write(key, SendState.DONE, fp, sent_key, step, rec, response.body)
        self.group.outcome(write, held=held)
        out.trace.append(
            [
                step.name,
                "sent",
                {"status": response.status, "key": sent_key, "response": response.body},
            ]
        )
        sent = self._saved(step, rec, response.body)
        if step.compensate is not None:
            self.compensator.register(step, key, sent_key, rec.key, sent.data, self.context(sent))
        return GoOn(sent, Outcome.DONE)

    def _lookup(
        self,
        step: CallStep,
        conn: ConnectionState,
        rec: Rec,
        options: dict[str, Any],
        out: RecordResult,
    ) -> StepResult:
        if self.dry_run:
            out.trace.append([step.name, "not looked up (dry run)"])
            return GoOn(self._unanswered(step, rec))
        response = self._attempts(step, conn, rec, Request(options=options))
        out.trace.append([step.name, "looked up"])
        looked_up = _with(rec, {**rec.data, step.save_as: response.body})
        if rec.lookup is None:  # where a replay starts to look things up again
            looked_up.lookup = (step.name, rec.data)
        return GoOn(looked_up)

    def _duplicate(
        self, step: CallStep, rec: Rec, key: str, prev: KeyState, out: RecordResult
    ) -> StepResult:
        if prev.updated_at < time.time() - self.ctx.refresh_after:
            out.seen_keys.append(key)
        out.trace.append([step.name, "skipped", "duplicate"])
        if self.log.detailed:
            self._duplicate_line(step, rec, key)
        return GoOn(self._saved_key(step, rec, prev), Outcome.SKIPPED)

    def _duplicate_line(self, step: CallStep, rec: Rec, key: str) -> None:
        self.log.detail(
            "step",
            step=step.name,
            record_key=rec.key,
            outcome=Outcome.SKIPPED.value,
            reason="duplicate",
            key=key,
        )

    def _attempts(
        self, step: CallStep, conn: ConnectionState, rec: Rec, request: Request
    ) -> Response:
        attempts: list[tuple[int, float, BaseException | None]] = []

        def on_attempt(attempt: int, ms: float, error: BaseException | None) -> None:
            attempts.append((attempt, ms, error))

        try:
            response, _ = call_with_retry(
                lambda: conn.connector.call(request),
                step.retry or conn.retry,
                limiter=conn.limiter,
                breaker=conn.breaker,
                on_attempt=on_attempt,
            )
        except TransientError as exc:
            self._log_attempts(step, rec, attempts, True)
            raise _Failed(exc, (step.retry or conn.retry).attempts) from exc
        except CircuitOpen:
            self._log_attempts(step, rec, attempts, True)
            raise
        except Exception as exc:  # permanent, or a connector bug: the record is dead-lettered
            self._log_attempts(step, rec, attempts, True)
            raise _Failed(exc, 1) from exc
        # a call that went through at once needs no person: its line is a debug one
        self._log_attempts(step, rec, attempts, len(attempts) > 1)
        return response

    def _log_attempts(
        self,
        step: CallStep,
        rec: Rec,
        attempts: list[tuple[int, float, BaseException | None]],
        needs_person: bool,
    ) -> None:
        """One ``attempt`` line per attempt of a call: in the run log when the call was
        retried or failed, else at the debug level."""
        if not needs_person and not self.log.detailed:
            return
        write = self.log.event if needs_person else self.log.detail
        for attempt, ms, error in attempts:
            write(
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

    def _key_write(
        self,
        key: str,
        state: SendState,
        fp: str,
        sent_key: str,
        step: CallStep,
        rec: Rec,
        response: Any = None,
    ) -> KeyWrite:
        return KeyWrite(
            key=key,
            state=state,
            fingerprint=fp,
            sent_key=sent_key,
            step=step.name,
            record_key=rec.key,
            run_id=self.ctx.run_id,
            response=self.ctx.mask(response),
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


def _same_figures(decided: WorkItem, figures: dict[str, Any]) -> bool:
    """Whether ``figures`` are those an approval was decided on (as the store keeps them)."""
    return dumps_sorted(decided.figures) == dumps_sorted(loads(dumps(figures)))


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
