"""Undoing the sends of a record that cannot finish (run time).

A send may say how it is undone (``compensate:``: cancel the draft sale, delete the draft
credit note, release a reservation). When it is performed, the record as it was right
after it (its ``save_as`` field holds the target's answer) is registered in the store.
If the record later fails for good (a dead letter) or its approval is rejected, the
compensations of its sends run in **reverse order** (the last send is undone first), each
once, under its own idempotency key (the send's operation key and ``:compensate``: a
send made again after it was undone is undone again); the trace shows
each. A record that goes through settles its compensations: they never run.

The saga is the source record: compensations registered while it waited for a person (a
draft made before an approval) still run when the approval is rejected in a later run.
A compensation that fails stays pending (the trace says why) and runs again the next time
the record fails or is rejected; one whose step no longer says ``compensate:`` is skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors import Request
from engine.envrefs import ENV_CONTEXT
from engine.errors import TransientError
from engine.idempotency import fingerprint, first_sent_key, next_sent_key
from engine.model import CallStep
from engine.retry import call_with_retry
from engine.store import Compensation, CompensationWrite, KeyWrite, SendState

if TYPE_CHECKING:
    from engine.context import RunContext


class Compensator:
    """Registers and runs the compensations of a flow's sends, for one run."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.flow = ctx.flow
        self.steps = {
            step.name: step
            for step, _, _ in ctx.flow.walk()
            if isinstance(step, CallStep) and step.compensate is not None
        }

    @property
    def enabled(self) -> bool:
        """Whether any send of the flow can be undone."""
        return bool(self.steps)

    def register(
        self,
        step: CallStep,
        key: str,
        sent_key: str,
        record_key: str,
        data: Any,
        context: dict[str, Any],
    ) -> None:
        """Remember how to undo ``step``'s send under idempotency ``key`` (performed as the
        operation ``sent_key``: each operation of a key is undone under a key of its own)."""
        if self.ctx.dry_run or step.compensate is None:
            return
        meta = context.get("meta") or {}
        self.ctx.store.add_compensation(
            self.flow.name,
            CompensationWrite(
                source_key=str(meta.get("key", record_key)),
                record_key=record_key,
                step=step.name,
                key=key,
                run_id=self.ctx.run_id,
                record=self.ctx.mask(data),
                meta=self.ctx.mask(
                    {
                        "sent_key": sent_key,
                        **{k: context.get(k) for k in ("meta", "parent", "loop") if context.get(k)},
                    }
                ),
            ),
        )

    def settle(self, source_key: str) -> None:
        """The record went through: its compensations will never run."""
        if self.enabled and not self.ctx.dry_run:
            self.ctx.store.settle_compensations(self.flow.name, source_key)

    def undo(self, source_key: str, why: str, trace: list[list[Any]]) -> int:
        """Run the record's pending compensations, last send first; returns how many failed.
        Each leaves a line in ``trace``: ``compensated``, ``would compensate (dry run)``,
        ``compensation failed`` or ``not compensated``."""
        if not self.enabled:
            return 0
        failed = 0
        for comp in reversed(self.ctx.store.compensations(self.flow.name, source_key)):
            step = self.steps.get(comp.step)
            if step is None:
                trace.append([comp.step, "not compensated", "the step has no compensate: now"])
                continue
            if self.ctx.dry_run:
                trace.append([comp.step, "would compensate (dry run)", why])
                continue
            try:
                detail = self._run(step, comp)
            except Exception as exc:
                failed += 1
                error = f"{type(exc).__name__}: {exc}"
                self.ctx.store.finish_compensation(comp.id, self.ctx.run_id, error=error)
                trace.append([comp.step, "compensation failed", error])
                self._log(comp, "failed", error=error)
                continue
            trace.append([comp.step, "compensated", {"why": why, **detail}])
            self._log(comp, "done", key=detail["key"])
        return failed

    def _run(self, step: CallStep, comp: Compensation) -> dict[str, Any]:
        assert step.compensate is not None and step.compensate_connection is not None
        saved = comp.meta or {}
        context: dict[str, Any] = {
            "record": comp.record,
            "vars": self.ctx.vars,
            "meta": saved.get("meta") or {"key": comp.record_key},
            "run": self.ctx.run_info,
        }
        if saved.get("parent") is not None:
            context["parent"] = saved["parent"]
        context.update(saved.get("loop") or {})
        env = self.ctx.env
        options = step.compensate({**context, ENV_CONTEXT: env} if env else context)
        key = (
            str(step.compensate_key(context))
            if step.compensate_key is not None
            else f"{saved.get('sent_key') or comp.key}:compensate"
        )
        fp = fingerprint(options)
        store, flow = self.ctx.store, self.flow.name
        prev = store.get_key(flow, key)
        if prev is not None and prev.state == SendState.DONE and prev.fingerprint == fp:
            store.finish_compensation(comp.id, self.ctx.run_id, response=prev.response)
            return {"key": prev.sent_key, "duplicate": True}
        if prev is None:
            sent_key = first_sent_key(key, fp)
        elif prev.fingerprint == fp:
            sent_key = prev.sent_key  # in flight or failed: the very same request again
        else:
            sent_key = next_sent_key(key, prev.sent_key, fp)
        self._remember(key, SendState.IN_FLIGHT, fp, sent_key, comp)
        conn = self.ctx.connections.get(step.compensate_connection)
        try:
            response, _ = call_with_retry(
                lambda: conn.connector.call(Request(options=options, idempotency_key=sent_key)),
                conn.retry,
                limiter=conn.limiter,
                breaker=conn.breaker,
                on_attempt=lambda attempt, ms, error: self._log(
                    comp,
                    "ok" if error is None else "attempt failed",
                    attempt=attempt,
                    duration_ms=round(ms, 2),
                    **({"error": f"{type(error).__name__}: {error}"} if error else {}),
                ),
            )
        except Exception as exc:
            if not isinstance(exc, TransientError):
                self._remember(key, SendState.FAILED, fp, sent_key, comp)
            raise
        body = self.ctx.mask(response.body)
        self._remember(key, SendState.DONE, fp, sent_key, comp, body)
        store.finish_compensation(comp.id, self.ctx.run_id, response=body)
        return {"key": sent_key, "response": body}

    def _remember(
        self,
        key: str,
        state: SendState,
        fp: str,
        sent_key: str,
        comp: Compensation,
        response: Any = None,
    ) -> None:
        self.ctx.store.write_keys(
            self.flow.name,
            [
                KeyWrite(
                    key=key,
                    state=state,
                    fingerprint=fp,
                    sent_key=sent_key,
                    step=f"{comp.step}:compensate",
                    record_key=comp.record_key,
                    run_id=self.ctx.run_id,
                    response=response,
                    source_key=comp.source_key,
                )
            ],
        )

    def _log(self, comp: Compensation, outcome: str, **extra: Any) -> None:
        self.ctx.log.event(
            "compensation", step=comp.step, record_key=comp.record_key, outcome=outcome, **extra
        )
