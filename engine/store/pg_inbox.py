"""The inbox of pushed events, schedule slots and flow health in the PostgreSQL state (the
part of :class:`~engine.store.postgres.PostgresStore` that ``flowyard serve`` uses,
engine/serve/).

The same rows and meaning as the SQLite store's. What several ``flowyard serve`` processes
behind one load balancer must not do twice rests on the database: an event is kept once
per flow and event id (a unique constraint: two processes receiving the same delivery at
once count it twice and keep it once); claims are taken with ``FOR UPDATE SKIP LOCKED``
(no event held by two processes) and expire by the database's clock; a schedule slot is
won by the one process whose conditional upsert moved the flow's last slot.

The inbox's claims are the same idea as the work queue of ``flowyard worker``
(``work`` in engine/store/postgres.py), kept apart for now: the inbox holds events
before a run makes records of them, the work queue records a feeder read from a source.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from engine.codec import dumps, loads
from engine.store.pg_schema import NOW as _NOW
from engine.store.pg_schema import storable as text
from engine.store.rows import (
    FlowHealth,
    InboxAdded,
    InboxEntry,
    InboxEvent,
    Progress,
    ScheduleState,
    process_gone,
)

_COLUMNS = (
    "id, flow, event_id, topic, scheme, headers, body, received_at, deliveries, status, "
    "run_id, done_at"
)


def _entry(row: Sequence[Any]) -> InboxEntry:
    return InboxEntry(
        id=row[0],
        flow=row[1],
        event_id=row[2],
        topic=row[3],
        scheme=row[4],
        headers=loads(row[5]) or {},
        body=bytes(row[6]),
        received_at=row[7],
        deliveries=row[8],
        status=row[9],
        run_id=row[10],
        done_at=row[11],
    )


def inbox_done(cur: psycopg.Cursor[Any], flow: str, progress: Progress, now: float) -> None:
    """Mark the events whose records are final in this commit done (the first run to make
    one final is the one kept)."""
    cur.execute(
        "UPDATE inbox SET status = 'done', done_at = %s, run_id = %s, claimed_by = NULL, "
        "claim_expires = NULL WHERE flow = %s AND id = ANY(%s) AND status = 'pending'",
        (now, progress.run_id, flow, list(progress.inbox_done)),
    )


class InboxMixin:
    """The inbox, schedule slots and flow health, in PostgreSQL. Mixed into
    :class:`~engine.store.postgres.PostgresStore`, whose pool and transactions it uses."""

    def _one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        raise NotImplementedError  # PostgresStore's

    def _write(self, query: str, params: Sequence[Any] = ()) -> int:
        raise NotImplementedError  # PostgresStore's

    def _conn(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError  # PostgresStore's

    def transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError  # PostgresStore's

    # -- the inbox -------------------------------------------------------------------------
    def add_to_inbox(self, events: Sequence[tuple[str, InboxEvent]]) -> list[InboxAdded]:
        if not events:
            return []
        now = time.time()
        added: list[InboxAdded] = []
        with self.transaction() as conn:
            for flow, e in events:
                # a duplicate delivery counts; the event kept is the first one's
                row = conn.execute(
                    "INSERT INTO inbox (flow, event_id, topic, scheme, headers, body, "
                    "received_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (flow, event_id) DO UPDATE SET "
                    "deliveries = inbox.deliveries + 1 RETURNING id, deliveries",
                    text(
                        (
                            flow,
                            e.event_id,
                            e.topic,
                            e.scheme,
                            dumps(e.headers),
                            bytes(e.body),
                            e.received_at or now,
                        )
                    ),
                ).fetchone()
                assert row is not None  # an upsert with RETURNING always returns its row
                added.append(InboxAdded(int(row[0]), row[1] == 1, int(row[1])))
        return added

    def claim_inbox(self, flow: str, holder: str, limit: int, ttl: float) -> list[InboxEntry]:
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE inbox SET claim_expires = {_NOW} + %s WHERE flow = %s "
                "AND status = 'pending' AND claimed_by = %s",
                (ttl, flow, holder),
            )
            others = conn.execute(
                "SELECT DISTINCT claim_host, claim_pid FROM inbox WHERE flow = %s AND "
                "status = 'pending' AND claimed_by IS NOT NULL AND claimed_by != %s AND "
                f"claim_expires >= {_NOW}",
                (flow, holder),
            ).fetchall()
            for host, pid in others:
                if process_gone(host, pid):
                    conn.execute(
                        "UPDATE inbox SET claimed_by = NULL, claim_expires = NULL WHERE "
                        "flow = %s AND status = 'pending' AND claim_host = %s "
                        "AND claim_pid = %s",
                        (flow, host, pid),
                    )
            if limit <= 0:
                return []
            rows = conn.execute(
                f"UPDATE inbox SET claimed_by = %s, claim_pid = %s, claim_host = %s, "
                f"claim_expires = {_NOW} + %s WHERE id IN (SELECT id FROM inbox "
                "WHERE flow = %s AND status = 'pending' "
                f"AND (claimed_by IS NULL OR claim_expires < {_NOW}) "
                f"ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                (holder, os.getpid(), socket.gethostname(), ttl, flow, limit),
            ).fetchall()
        return sorted((_entry(r) for r in rows), key=lambda e: e.id)

    def release_inbox(self, flow: str, holder: str) -> int:
        return self._write(
            "UPDATE inbox SET claimed_by = NULL, claim_expires = NULL WHERE flow = %s AND "
            "status = 'pending' AND claimed_by = %s",
            (flow, holder),
        )

    def inbox_depth(self, flow: str | None = None) -> dict[str, int]:
        where, params = ("AND flow = %s", (flow,)) if flow else ("", ())
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT flow, count(*) FROM inbox WHERE status = 'pending' {where} GROUP BY flow",
                params,
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def inbox_events(
        self, flow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        clauses, params = ["true"], []
        if flow:
            clauses.append("flow = %s")
            params.append(flow)
        if status:
            clauses.append("status = %s")
            params.append(status)
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM inbox WHERE {' AND '.join(clauses)} "
                f"ORDER BY id LIMIT {int(limit)}",
                text(tuple(params)),
            ).fetchall()
        return [_entry(r) for r in rows]

    def prune_inbox(self, older_than_s: float, flow: str | None = None) -> int:
        cutoff = time.time() - older_than_s
        extra, params = ("AND flow = %s", (cutoff, flow)) if flow else ("", (cutoff,))
        return self._write(
            f"DELETE FROM inbox WHERE status = 'done' AND received_at < %s {extra}", params
        )

    # -- schedules -------------------------------------------------------------------------
    def claim_schedule(self, flow: str, due: float, holder: str) -> bool:
        # of several processes claiming one slot at once, the first moves the flow's last
        # slot; the others wait for its row, then find the slot no longer later than it
        return (
            self._write(
                "INSERT INTO schedules (flow, last_due, holder, claimed_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (flow) DO UPDATE SET "
                "last_due = EXCLUDED.last_due, holder = EXCLUDED.holder, "
                "claimed_at = EXCLUDED.claimed_at WHERE schedules.last_due < EXCLUDED.last_due",
                (flow, due, holder, time.time()),
            )
            == 1
        )

    def schedule_state(self, flow: str) -> ScheduleState | None:
        row = self._one(
            "SELECT flow, last_due, holder, claimed_at FROM schedules WHERE flow = %s", (flow,)
        )
        return None if row is None else ScheduleState(*row)

    # -- monitoring ------------------------------------------------------------------------
    def flow_health(self) -> list[FlowHealth]:
        found: dict[str, FlowHealth] = {}

        def of(flow: str) -> FlowHealth:
            return found.setdefault(flow, FlowHealth(flow))

        with self._conn() as conn:
            items = conn.execute(
                "SELECT flow, kind, queue, count(*) FROM dead_letters "
                "WHERE status = 'open' GROUP BY 1, 2, 3"
            ).fetchall()
            pending = conn.execute(
                "SELECT flow, count(*) FROM inbox WHERE status = 'pending' GROUP BY flow"
            ).fetchall()
            last = conn.execute(
                "SELECT DISTINCT ON (flow) flow, started_at, status FROM runs "
                "ORDER BY flow, started_at DESC"
            ).fetchall()
            done = conn.execute(
                "SELECT flow, max(ended_at) FROM runs WHERE status IN ('ok', 'dead_lettered', "
                "'review') GROUP BY flow"
            ).fetchall()
        for flow, kind, queue, n in items:
            if kind == "review":
                of(flow).reviews_open[queue or "review"] = int(n)
            else:
                of(flow).dead_letters_open += int(n)
        for flow, n in pending:
            of(flow).inbox_pending = int(n)
        for flow, started, status in last:
            of(flow).last_run_at, of(flow).last_status = started, status
        for flow, ended in done:
            of(flow).last_success_at = ended
        return [found[name] for name in sorted(found)]
