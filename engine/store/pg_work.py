"""Work items and compensations in the PostgreSQL state (the part of
:class:`~engine.store.postgres.PostgresStore` that serves people: queues, decisions, SLAs,
and the undoing of sends).

The same rows and meaning as the SQLite store's (engine/store/sqlite_work.py,
engine/store/work_rows.py), with what several processes sharing one state need: a decision
reads and writes its item under the item's row lock (``FOR UPDATE``), so of two people (or
two ``flowyard serve`` processes) deciding one approval at the same moment one decides and
the other is told it is no longer open; an escalation locks the items it moves, so two
processes escalating at once escalate each item once; one pending compensation per send is
a unique index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from engine.codec import dumps, loads
from engine.outcomes import Outcome
from engine.store.pg_schema import storable as text
from engine.store.rows import ParkedItem, SendState, Trace
from engine.store.work_rows import (
    DECISIONS,
    Compensation,
    CompensationWrite,
    WorkItem,
    compensation_from_row,
    work_item_from_row,
)

_FACTS = (
    "run_id",
    "error_class",
    "message",
    "attempts",
    "record",
    "context",
    "raw",
    "line",
    "at",
    "figures",
    "source_record",
    "labels",
    "flow_file",
    "category",
)
# an item written again refreshes its facts; an escalated one keeps the queue and owner it
# was escalated to; when it was created, its due time and its history stay as they were
_WRITE_ITEM = (
    f"INSERT INTO dead_letters (flow, record_key, step, kind, {', '.join(_FACTS)}, queue, "
    "owner, created_at, due_at, escalate_to, history) VALUES ("
    + ", ".join(["%s"] * (len(_FACTS) + 10))
    + ") ON CONFLICT (flow, (coalesce(record_key, '')), (coalesce(step, '')), kind) "
    "WHERE status = 'open' DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _FACTS)
    + ", queue = CASE WHEN dead_letters.escalated_at IS NULL THEN EXCLUDED.queue "
    "ELSE dead_letters.queue END, owner = CASE WHEN dead_letters.escalated_at IS NULL "
    "THEN EXCLUDED.owner ELSE dead_letters.owner END RETURNING id"
)


def write_item(cur: psycopg.Cursor[Any], flow: str, item: ParkedItem, now: float) -> int:
    """Write a dead letter, review item or approval; returns its id. The unique index of
    open items makes a record held again at the same step refresh its one open item, even
    when two processes write it at once."""
    history = [{"at": now, "event": "created", "run_id": item.run_id}]
    cur.execute(
        _WRITE_ITEM,
        text(
            (
                flow,
                item.record_key,
                item.step,
                item.kind,
                item.run_id,
                item.error_class,
                item.message,
                item.attempts,
                dumps(item.record),
                dumps(item.context),
                item.raw,
                item.line,
                now,
                dumps(item.figures) if item.figures is not None else None,
                dumps(item.source_record) if item.source_record is not None else None,
                dumps(item.labels) if item.labels is not None else None,
                item.flow_file,
                item.category,
                item.queue,
                item.owner,
                now,
                now + item.due_s if item.due_s is not None else None,
                dumps(item.escalate_to) if item.escalate_to else None,
                dumps(history),
            )
        ),
    )
    row = cur.fetchone()
    assert row is not None  # RETURNING always gives the row written
    return int(row[0])


def _appended(history: str | None, entry: dict[str, Any]) -> str:
    return str(text(dumps([*(loads(history) or []), entry])))


class WorkItemsMixin:
    """Work items, decisions, escalations, compensations and history for stats, in
    PostgreSQL. Mixed into :class:`~engine.store.postgres.PostgresStore`, whose pool and
    transactions it uses."""

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError  # PostgresStore's

    def _write(self, query: str, params: Sequence[Any] = ()) -> int:
        raise NotImplementedError  # PostgresStore's

    def transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError  # PostgresStore's

    # -- work items ------------------------------------------------------------------------
    def work_items(
        self,
        kind: str | None = None,
        flow: str | None = None,
        queue: str | None = None,
        owner: str | None = None,
        status: str | Sequence[str] | None = "open",
        since: float | None = None,
        limit: int | None = None,
    ) -> list[WorkItem]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", kind), ("flow", flow), ("queue", queue), ("owner", owner)):
            if value:
                clauses.append(f"{column} = %s")
                params.append(value)
        if isinstance(status, str):
            clauses.append("status = %s")
            params.append(status)
        elif status:
            clauses.append("status = ANY(%s)")
            params.append(list(status))
        if since is not None:
            clauses.append("coalesce(created_at, at) >= %s")
            params.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit else ""
        rows = self._rows(f"SELECT * FROM dead_letters {where} ORDER BY id{tail}", params)
        return [work_item_from_row(r) for r in rows]

    def work_item(self, id: int) -> WorkItem | None:
        rows = self._rows("SELECT * FROM dead_letters WHERE id = %s", (id,))
        return work_item_from_row(rows[0]) if rows else None

    def approval(self, flow: str, record_key: str, step: str) -> WorkItem | None:
        rows = self._rows(
            "SELECT * FROM dead_letters WHERE flow = %s AND record_key = %s AND step = %s "
            "AND kind = 'approval' AND status != 'resolved' ORDER BY id DESC LIMIT 1",
            (flow, record_key, step),
        )
        return work_item_from_row(rows[0]) if rows else None

    def decide(
        self,
        id: int,
        decision: str,
        by: str,
        comment: str | None = None,
        at: float | None = None,
    ) -> WorkItem:
        at = time.time() if at is None else at
        with self.transaction() as conn:
            # the row locked: a second decision at the same moment waits for this one,
            # then finds the item no longer open
            row = conn.execute(
                "SELECT kind, status, history, record, figures FROM dead_letters "
                "WHERE id = %s FOR UPDATE",
                (id,),
            ).fetchone()
            if row is None or row[0] not in DECISIONS:
                raise LookupError(f"no review item or approval {id}")
            kind, status, history, record, figures = row
            if decision not in DECISIONS[kind]:
                raise ValueError(
                    f"a {kind.replace('_', ' ')} is decided as {' or '.join(DECISIONS[kind])}, "
                    f"not {decision}"
                )
            if status != "open":
                raise ValueError(f"{kind} {id} is {status}, not open")
            entry = {"at": at, "event": decision, "by": by, "comment": comment}
            if kind == "approval":  # the record and figures as the person decided on them
                entry.update(record=loads(record), figures=loads(figures))
            conn.execute(
                "UPDATE dead_letters SET status = %s, decided_by = %s, decided_at = %s, "
                "comment = %s, history = %s WHERE id = %s AND status = 'open'",
                text((decision, by, at, comment, _appended(history, entry), id)),
            )
        item = self.work_item(id)
        assert item is not None  # decided just now
        return item

    def to_resume(self, flow: str) -> list[WorkItem]:
        rows = self._rows(
            "SELECT * FROM dead_letters WHERE flow = %s AND kind = 'approval' "
            "AND status IN ('approved', 'rejected') AND resumed_run IS NULL "
            "ORDER BY decided_at, id",
            (flow,),
        )
        return [work_item_from_row(r) for r in rows]

    def mark_resumed(self, ids: Sequence[int], run_id: str) -> None:
        if not ids:
            return
        now = time.time()
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT id, history FROM dead_letters WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                (list(ids),),
            ).fetchall()
            for id, history in rows:
                entry = {"at": now, "event": "resumed", "run_id": run_id}
                conn.execute(
                    "UPDATE dead_letters SET resumed_run = %s, history = %s WHERE id = %s",
                    (run_id, _appended(history, entry), id),
                )

    def escalate_due(self, now: float | None = None, flow: str | None = None) -> list[WorkItem]:
        now = time.time() if now is None else now
        extra, params = ("AND flow = %s", (now, flow)) if flow else ("", (now,))
        with self.transaction() as conn:
            # locked: a process escalating at the same moment waits, then finds these
            # escalated (or decided) and leaves them
            due = conn.execute(
                "SELECT id, queue, owner, escalate_to, history, due_at FROM dead_letters "
                "WHERE status = 'open' AND due_at IS NOT NULL AND due_at <= %s "
                f"AND escalated_at IS NULL {extra} ORDER BY due_at, id FOR UPDATE",
                params,
            ).fetchall()
            for id, queue, owner, escalate_to, history, due_at in due:
                target = loads(escalate_to) or {}
                to_queue = target.get("queue") or queue
                to_owner = target.get("owner") or owner
                entry = {
                    "at": now,
                    "event": "escalated",
                    "due_at": due_at,
                    "from": {"queue": queue, "owner": owner},
                    "to": {"queue": to_queue, "owner": to_owner},
                }
                conn.execute(
                    "UPDATE dead_letters SET escalated_at = %s, breached = true, queue = %s, "
                    "owner = %s, history = %s WHERE id = %s",
                    text((now, to_queue, to_owner, _appended(history, entry), id)),
                )
        return [item for id, *_ in due if (item := self.work_item(id)) is not None]

    # -- compensations ---------------------------------------------------------------------
    def add_compensation(self, flow: str, write: CompensationWrite) -> None:
        row = text(
            (
                flow,
                write.source_key,
                write.record_key,
                write.step,
                write.key,
                write.run_id,
                dumps(write.record),
                dumps(write.meta),
                time.time(),
            )
        )
        with self.transaction() as conn:
            # the same send registered again (a duplicate in a later pass): one row, the
            # latest; two processes registering it at once meet on the unique index
            conn.execute(
                "DELETE FROM compensations WHERE flow = %s AND key = %s AND state = 'pending'",
                (row[0], row[4]),
            )
            conn.execute(
                "INSERT INTO compensations (flow, source_key, record_key, step, key, run_id, "
                "record, meta, state, at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,'pending',%s) "
                "ON CONFLICT (flow, key) WHERE state = 'pending' DO UPDATE SET "
                "source_key = EXCLUDED.source_key, record_key = EXCLUDED.record_key, "
                "step = EXCLUDED.step, run_id = EXCLUDED.run_id, record = EXCLUDED.record, "
                "meta = EXCLUDED.meta, at = EXCLUDED.at",
                row,
            )

    def compensations(
        self, flow: str, source_key: str | None = None, state: str | None = "pending"
    ) -> list[Compensation]:
        clauses, params = ["flow = %s"], [flow]
        if source_key is not None:
            clauses.append("source_key = %s")
            params.append(source_key)
        if state is not None:
            clauses.append("state = %s")
            params.append(state)
        rows = self._rows(
            f"SELECT * FROM compensations WHERE {' AND '.join(clauses)} ORDER BY id", params
        )
        return [compensation_from_row(r) for r in rows]

    def finish_compensation(
        self,
        id: int,
        run_id: str,
        *,
        error: str | None = None,
        response: Any = None,
    ) -> None:
        if error is not None:  # it stays pending: the record's next failure tries again
            self._write(
                "UPDATE compensations SET error = %s, done_run = %s WHERE id = %s",
                (error, run_id, id),
            )
            return
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE compensations SET state = 'done', done_run = %s, error = NULL, "
                "response = %s WHERE id = %s RETURNING flow, key",
                text((run_id, dumps(response) if response is not None else None, id)),
            ).fetchone()
            if row is not None:  # the send was undone: sending it again is a new operation
                conn.execute(
                    "UPDATE keys SET state = %s WHERE flow = %s AND key = %s AND state = 'done'",
                    (SendState.COMPENSATED.value, row[0], row[1]),
                )

    def settle_compensations(self, flow: str, source_key: str) -> None:
        self._write(
            "UPDATE compensations SET state = 'settled' WHERE flow = %s AND source_key = %s "
            "AND state = 'pending'",
            (flow, source_key),
        )

    # -- history, for stats and the report ------------------------------------------------
    def traces_since(self, since: float | None = None, flow: str | None = None) -> Iterator[Trace]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("t.at >= %s")
            params.append(since)
        if flow:
            clauses.append("t.flow = %s")
            params.append(flow)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(
            "SELECT t.run_id, t.flow, t.record_key, t.outcome, t.steps, t.error, t.at, "
            "r.kind, t.started_at, t.labels FROM traces t LEFT JOIN runs r "
            f"ON r.run_id = t.run_id {where} ORDER BY t.at, t.id",
            params,
        )
        for row in rows:
            yield Trace(
                run_id=row["run_id"],
                flow=row["flow"],
                record_key=row["record_key"],
                outcome=Outcome(row["outcome"]),
                steps=loads(row["steps"]),
                error=row["error"],
                at=row["at"],
                kind=row["kind"],
                started_at=row["started_at"],
                labels=loads(row["labels"]),
            )

    @staticmethod
    def _prune_work(conn: psycopg.Connection[Any], cutoff: float, flow: str | None) -> None:
        """Compensations that ran or were settled, older than ``cutoff``."""
        extra, params = ("AND flow = %s", (cutoff, flow)) if flow else ("", (cutoff,))
        conn.execute(
            f"DELETE FROM compensations WHERE at < %s AND state != 'pending' {extra}", params
        )
