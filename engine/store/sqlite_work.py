"""Work items and compensations in the SQLite state file (the part of :class:`SqliteStore`
that serves people: queues, decisions, SLAs, and the undoing of sends).

Work items are rows of ``dead_letters`` (the table's name is older than approvals): a
``kind`` of ``dead_letter``, ``review`` or ``approval``, each with a queue, an owner, a
reason category, a due time and a history. Compensations have their own table. Rows and
their meaning: engine/store/work_rows.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from engine.codec import dumps, loads
from engine.outcomes import Outcome
from engine.store.faults import Connection
from engine.store.rows import ParkedItem, SendState, Trace
from engine.store.work_rows import (
    DECISIONS,
    Compensation,
    CompensationWrite,
    WorkItem,
    compensation_from_row,
    work_item_from_row,
)

_WORK_COLUMNS = (
    "id, kind, flow, queue, owner, category, message, figures, record_key, step, run_id, "
    "created_at, at, due_at, status, decided_by, decided_at, comment, escalated_at, "
    "escalate_to, breached, history, labels, resumed_run, record, context, source_record, "
    "flow_file, error_class"
)
# an approval decided and not yet resumed is kept by prune: a run still has to act on it
KEEP_UNRESUMED = (
    "NOT (kind = 'approval' AND status IN ('approved', 'rejected') AND resumed_run IS NULL)"
)


def write_item(conn: Connection, flow: str, item: ParkedItem, now: float) -> int:
    """Write a dead letter, review item or approval; returns its id. A record held again
    at the same step (a file source is re-read each run) refreshes its one open item: its
    record, reason, figures and labels; when it was created, its due time and an
    escalation stay as they were."""
    same = conn.fetchone(
        "SELECT id FROM dead_letters WHERE flow = ? AND record_key IS ? AND "
        "step IS ? AND kind = ? AND status = 'open' ORDER BY id DESC LIMIT 1",
        (flow, item.record_key, item.step, item.kind),
    )
    facts = (
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
    )
    if same is not None:
        conn.execute(
            "UPDATE dead_letters SET run_id = ?, error_class = ?, message = ?, "
            "attempts = ?, record = ?, context = ?, raw = ?, line = ?, at = ?, "
            "figures = ?, source_record = ?, labels = ?, flow_file = ?, category = ?, "
            "queue = CASE WHEN escalated_at IS NULL THEN ? ELSE queue END, "
            "owner = CASE WHEN escalated_at IS NULL THEN ? ELSE owner END WHERE id = ?",
            (*facts, item.queue, item.owner, same[0]),
        )
        return int(same[0])
    history = [{"at": now, "event": "created", "run_id": item.run_id}]
    cur = conn.execute(
        "INSERT INTO dead_letters (flow, record_key, step, kind, run_id, "
        "error_class, message, attempts, record, context, raw, line, at, figures, "
        "source_record, labels, flow_file, category, queue, owner, created_at, due_at, "
        "escalate_to, history) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            flow,
            item.record_key,
            item.step,
            item.kind,
            *facts,
            item.queue,
            item.owner,
            now,
            now + item.due_s if item.due_s is not None else None,
            dumps(item.escalate_to) if item.escalate_to else None,
            dumps(history),
        ),
    )
    assert cur.lastrowid is not None  # an INSERT always sets it
    return cur.lastrowid


class WorkItemsMixin:
    """Work items, decisions, escalations, compensations and history for stats, in SQLite.

    Mixed into :class:`~engine.store.sqlite.SqliteStore`, whose connection, lock and
    transactions it uses.
    """

    _conn: Connection
    _has_work: bool  # False: a file of an older schema, opened read-only (a dry run)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError  # SqliteStore's

    def transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # SqliteStore's

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
        if not self._has_work:
            return []
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", kind), ("flow", flow), ("queue", queue), ("owner", owner)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if isinstance(status, str):
            clauses.append("status = ?")
            params.append(status)
        elif status:
            clauses.append(f"status IN ({','.join('?' * len(status))})")
            params.extend(status)
        if since is not None:
            clauses.append("COALESCE(created_at, at) >= ?")
            params.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit else ""
        rows = self._query(
            f"SELECT {_WORK_COLUMNS} FROM dead_letters {where} ORDER BY id{tail}", tuple(params)
        )
        return [work_item_from_row(r) for r in rows]

    def work_item(self, id: int) -> WorkItem | None:
        rows = self._query(f"SELECT {_WORK_COLUMNS} FROM dead_letters WHERE id = ?", (id,))
        return work_item_from_row(rows[0]) if rows else None

    def approval(self, flow: str, record_key: str, step: str) -> WorkItem | None:
        if not self._has_work:
            return None
        rows = self._query(
            f"SELECT {_WORK_COLUMNS} FROM dead_letters WHERE flow = ? AND record_key = ? "
            "AND step = ? AND kind = 'approval' AND status != 'resolved' "
            "ORDER BY id DESC LIMIT 1",
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
            row = conn.fetchone(
                "SELECT kind, status, history, record, figures FROM dead_letters WHERE id = ?",
                (id,),
            )
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
                "UPDATE dead_letters SET status = ?, decided_by = ?, decided_at = ?, "
                "comment = ?, history = ? WHERE id = ?",
                (decision, by, at, comment, dumps([*(loads(history) or []), entry]), id),
            )
        item = self.work_item(id)
        assert item is not None  # decided just now
        return item

    def to_resume(self, flow: str) -> list[WorkItem]:
        if not self._has_work:
            return []
        rows = self._query(
            f"SELECT {_WORK_COLUMNS} FROM dead_letters WHERE flow = ? AND kind = 'approval' "
            "AND status IN ('approved', 'rejected') AND resumed_run IS NULL ORDER BY decided_at",
            (flow,),
        )
        return [work_item_from_row(r) for r in rows]

    def mark_resumed(self, ids: Sequence[int], run_id: str) -> None:
        if not ids:
            return
        now = time.time()
        with self.transaction() as conn:
            for id in ids:
                row = conn.fetchone("SELECT history FROM dead_letters WHERE id = ?", (id,))
                if row is None:
                    continue
                entry = {"at": now, "event": "resumed", "run_id": run_id}
                conn.execute(
                    "UPDATE dead_letters SET resumed_run = ?, history = ? WHERE id = ?",
                    (run_id, dumps([*(loads(row[0]) or []), entry]), id),
                )

    def escalate_due(self, now: float | None = None, flow: str | None = None) -> list[WorkItem]:
        now = time.time() if now is None else now
        extra, params = ("AND flow = ?", (now, flow)) if flow else ("", (now,))
        with self.transaction() as conn:
            due = conn.fetchall(
                "SELECT id, queue, owner, escalate_to, history, due_at FROM dead_letters "
                "WHERE status = 'open' AND due_at IS NOT NULL AND due_at <= ? "
                f"AND escalated_at IS NULL {extra} ORDER BY due_at, id",
                params,
            )
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
                    "UPDATE dead_letters SET escalated_at = ?, breached = 1, queue = ?, "
                    "owner = ?, history = ? WHERE id = ?",
                    (now, to_queue, to_owner, dumps([*(loads(history) or []), entry]), id),
                )
        return [item for id, *_ in due if (item := self.work_item(id)) is not None]

    # -- compensations ---------------------------------------------------------------------
    def add_compensation(self, flow: str, write: CompensationWrite) -> None:
        with self.transaction() as conn:
            # the same send registered again (a duplicate in a later pass): one row
            conn.execute(
                "DELETE FROM compensations WHERE flow = ? AND key = ? AND state = 'pending'",
                (flow, write.key),
            )
            conn.execute(
                "INSERT INTO compensations (flow, source_key, record_key, step, key, run_id, "
                "record, meta, state, at) VALUES (?,?,?,?,?,?,?,?,'pending',?)",
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
                ),
            )

    def compensations(
        self, flow: str, source_key: str | None = None, state: str | None = "pending"
    ) -> list[Compensation]:
        if not self._has_work:
            return []
        clauses, params = ["flow = ?"], [flow]
        if source_key is not None:
            clauses.append("source_key = ?")
            params.append(source_key)
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        rows = self._query(
            f"SELECT * FROM compensations WHERE {' AND '.join(clauses)} ORDER BY id",
            tuple(params),
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
        with self.transaction() as conn:
            if error is not None:  # it stays pending: the record's next failure tries again
                conn.execute(
                    "UPDATE compensations SET error = ?, done_run = ? WHERE id = ?",
                    (error, run_id, id),
                )
                return
            row = conn.fetchone("SELECT flow, key FROM compensations WHERE id = ?", (id,))
            conn.execute(
                "UPDATE compensations SET state = 'done', done_run = ?, error = NULL, "
                "response = ? WHERE id = ?",
                (run_id, dumps(response) if response is not None else None, id),
            )
            if row is not None:  # the send was undone: sending it again is a new operation
                conn.execute(
                    "UPDATE keys SET state = ? WHERE flow = ? AND key = ? AND state = 'done'",
                    (SendState.COMPENSATED.value, row[0], row[1]),
                )

    def settle_compensations(self, flow: str, source_key: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE compensations SET state = 'settled' WHERE flow = ? AND source_key = ? "
                "AND state = 'pending'",
                (flow, source_key),
            )

    # -- history, for stats and the report ------------------------------------------------
    def traces_since(self, since: float | None = None, flow: str | None = None) -> Iterator[Trace]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("t.at >= ?")
            params.append(since)
        if flow:
            clauses.append("t.flow = ?")
            params.append(flow)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            "SELECT t.run_id, t.flow, t.record_key, t.outcome, t.steps, t.error, t.at, "
            f"r.kind, t.started_at, t.labels FROM traces t LEFT JOIN runs r "
            f"ON r.run_id = t.run_id {where} ORDER BY t.at, t.id",
            tuple(params),
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

    def _prune_work(self, conn: Connection, cutoff: float, flow: str | None) -> None:
        """Compensations that ran or were settled, older than ``cutoff``."""
        extra, params = ("AND flow = ?", (cutoff, flow)) if flow else ("", (cutoff,))
        conn.execute(
            f"DELETE FROM compensations WHERE at < ? AND state != 'pending' {extra}", params
        )
