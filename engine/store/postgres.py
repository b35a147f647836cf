"""The PostgreSQL state store: one database that processes on several machines share.

The same :class:`~engine.store.protocol.StateStore` as the SQLite file, for deployments
that run ``flowyard worker`` (or several cron hosts) against one state, plus the work queue
they share (:class:`~engine.store.protocol.WorkQueue`). What several processes must never
do twice rests on the database, not on locks in a process: primary keys and a unique index
of open items, ``INSERT ... ON CONFLICT``, row locks (``FOR UPDATE``, ``SKIP LOCKED`` for
claims) and transactions. Times of leases and claims are the database's clock, so machines
whose clocks differ still agree on when one expired.

Durability is PostgreSQL's: a method that writes has committed when it returns. The
driver is psycopg 3 with one connection pool per store (a run's lanes, its lease thread and
a worker's heartbeat share it). The layout and its migrations are in
engine/store/pg_schema.py. A fault of the database (cannot connect, connection lost, disk
full, read-only) is a :class:`StateError` naming the database with its password masked.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from engine.codec import dumps, loads
from engine.errors import LockHeld, StateError
from engine.outcomes import Outcome
from engine.store import pg_schema
from engine.store.location import dsn_password, mask_dsn
from engine.store.pg_inbox import InboxMixin, inbox_done
from engine.store.pg_schema import storable as _text
from engine.store.pg_work import WorkItemsMixin, write_item
from engine.store.rows import (
    ClaimedRecord,
    Cursor,
    DeadLetter,
    KeyState,
    KeyWrite,
    Lease,
    ParkedItem,
    Progress,
    Pruned,
    QueuedRecord,
    RecordDigest,
    ReviewItem,
    Run,
    Trace,
    process_gone,
)
from engine.store.sqlite_work import KEEP_UNRESUMED  # the same SQL on both stores

_NOW = pg_schema.NOW
_KEY_COLUMNS = "key, state, fingerprint, sent_key, response, run_id, updated_at, record_key, step"
_WRITE_KEY = (
    "INSERT INTO keys (flow, key, state, fingerprint, sent_key, step, record_key, run_id, "
    "response, updated_at, source_key) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
    "ON CONFLICT (flow, key) DO UPDATE SET state = EXCLUDED.state, "
    "fingerprint = EXCLUDED.fingerprint, sent_key = EXCLUDED.sent_key, step = EXCLUDED.step, "
    "record_key = EXCLUDED.record_key, run_id = EXCLUDED.run_id, "
    "response = EXCLUDED.response, updated_at = EXCLUDED.updated_at, "
    "source_key = EXCLUDED.source_key"
)
_LETTER_COLUMNS = (
    "id",
    "flow",
    "run_id",
    "record_key",
    "step",
    "error_class",
    "message",
    "attempts",
    "raw",
    "line",
    "at",
    "status",
    "replay_run",
)


def _key_row(flow: str, w: KeyWrite, now: float) -> tuple[Any, ...]:
    response = dumps(w.response) if w.response is not None else None
    return _text(
        (
            flow,
            w.key,
            str(w.state),
            w.fingerprint,
            w.sent_key,
            w.step,
            w.record_key,
            w.run_id,
            response,
            now,
            w.source_key,
        )
    )


class PostgresStore(WorkItemsMixin, InboxMixin):
    """The PostgreSQL :class:`~engine.store.protocol.StateStore` and
    :class:`~engine.store.protocol.WorkQueue`. Thread-safe: a pool of connections.

    Opening connects (a wrong host, password or database name is a :class:`StateError`
    at once) and brings the layout up to date (engine/store/pg_schema.py). ``readonly``
    changes nothing, the layout included (a dry run). ``max_connections`` bounds the pool:
    a run uses one per lane, one for its lease and one for the commits.
    """

    def __init__(self, dsn: str, *, readonly: bool = False, max_connections: int = 10):
        self.dsn = dsn
        self.shown = mask_dsn(dsn)
        self.readonly = readonly
        self._secret = dsn_password(dsn)
        self._closed = False
        from psycopg.conninfo import conninfo_to_dict

        given = str(conninfo_to_dict(dsn).get("options") or "")  # the URL's own, kept
        options = f"{given} -c search_path={pg_schema.SCHEMA}".strip()
        if readonly:
            options += " -c default_transaction_read_only=on"
        self._kwargs: dict[str, Any] = {"autocommit": True, "options": options}
        with self._faults():
            # one connection first: its error says what is wrong (a pool only times out)
            with psycopg.connect(dsn, connect_timeout=10, **self._kwargs) as conn:
                self._version = self._migrate(conn) if not readonly else _version(conn)
            self._pool = ConnectionPool(
                dsn,
                min_size=1,
                max_size=max_connections,
                kwargs=self._kwargs,
                open=False,
                timeout=30,
                name="flowyard-state",
            )
            self._pool.open(wait=True, timeout=10)

    def _migrate(self, conn: psycopg.Connection[Any]) -> int:
        """Apply the migrations this state lacks, under an advisory lock; its version."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (pg_schema.ADVISORY_LOCK,))
            conn.execute(pg_schema.VERSIONS_TABLE)
            current = _version(conn)
            self._refuse_newer(current)
            for migration in pg_schema.pending(current):
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_versions (version, description) VALUES (%s, %s)",
                    (migration.version, migration.description),
                )
        return max(current, pg_schema.LATEST)

    def _refuse_newer(self, version: int) -> None:
        if version > pg_schema.LATEST:
            raise StateError(
                f"state database {self.shown}: written by a newer flowyard (schema "
                f"{version}; this one knows {pg_schema.LATEST}); upgrade flowyard to use it",
                self.shown,
            )

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        """The highest migration applied (0: a database flowyard has not written yet)."""
        return self._version

    # -- faults and connections -----------------------------------------------------------------
    def _mask(self, text: str) -> str:
        text = mask_dsn(text)
        return text.replace(self._secret, "***") if self._secret else text

    @contextmanager
    def _faults(self) -> Iterator[None]:
        """Anything wrong with the database, told as one :class:`StateError` line."""
        try:
            yield
        except psycopg.OperationalError as exc:  # connecting, connection lost, disk full
            raise self._error(exc) from None
        except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege) as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> StateError:
        text = " ".join(self._mask(str(exc)).split()) or type(exc).__name__
        low = text.lower()
        if "password" in low or "authentication" in low:
            hint = "check the user and password in the state's URL"
        elif "does not exist" in low and "database" in low:
            hint = "create the database first (createdb), or fix its name in the URL"
        elif "read-only" in low or "read only" in low:
            hint = "the database is read-only (a standby?): point --state at the primary"
        elif "permission denied" in low:
            hint = "the user may not create or change flowyard's tables: grant it or use another"
        elif "no space" in low or "disk full" in low:
            hint = "the database server's disk is full"
        elif "couldn't get a connection" in low or "timeout" in low:
            hint = "the database did not answer in time: is it running and reachable?"
        else:
            hint = "is the database running and reachable?"
        return StateError(f"state database {self.shown}: {text}; {hint}", self.shown)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        with self._faults(), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside one transaction, committed at the end of the block."""
        with self._conn() as conn, conn.transaction():
            yield conn

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, _text(tuple(params)))
            return cur.fetchall()

    def _one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._conn() as conn:
            return conn.execute(query, _text(tuple(params))).fetchone()

    def _write(self, query: str, params: Sequence[Any] = ()) -> int:
        with self._conn() as conn:
            return conn.execute(query, _text(tuple(params))).rowcount

    # -- idempotency keys ------------------------------------------------------------------
    def get_key(self, flow: str, key: str) -> KeyState | None:
        row = self._one(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE flow = %s AND key = %s", (flow, key)
        )
        return None if row is None else KeyState(*row)

    def write_keys(self, flow: str, writes: Sequence[KeyWrite]) -> None:
        now = time.time()
        if len(writes) == 1:  # one statement in autocommit: its own transaction
            self._write(_WRITE_KEY, _key_row(flow, writes[0], now))
        elif writes:
            with self.transaction() as conn, conn.cursor() as cur:
                cur.executemany(_WRITE_KEY, [_key_row(flow, w, now) for w in writes])

    def keys_in_flight(self, flow: str) -> list[KeyState]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE flow = %s AND state = 'in_flight' "
                "ORDER BY updated_at",
                (flow,),
            ).fetchall()
        return [KeyState(*row) for row in rows]

    # -- cursors and digests ---------------------------------------------------------------------
    def cursor(self, flow: str) -> Cursor | None:
        row = self._one("SELECT position, updated_at FROM cursors WHERE flow = %s", (flow,))
        return None if row is None else Cursor(flow, loads(row[0]), row[1] or 0.0)

    def record_digest(self, flow: str, record_key: str) -> RecordDigest | None:
        row = self._one(
            "SELECT digest, outcome, run_id, at FROM record_digests "
            "WHERE flow = %s AND record_key = %s",
            (flow, record_key),
        )
        return None if row is None else RecordDigest(*row)

    def forget_record_digests(self, flow: str) -> None:
        self._write("DELETE FROM record_digests WHERE flow = %s", (flow,))

    # -- progress ----------------------------------------------------------------------------------
    def commit_progress(self, flow: str, progress: Progress) -> list[int]:
        now = time.time()
        with self.transaction() as conn, conn.cursor() as cur:
            if progress.keys:  # the group's sends (engine/group.py), before everything else
                cur.executemany(_WRITE_KEY, [_key_row(flow, w, now) for w in progress.keys])
            self._refresh_seen(cur, flow, progress, now)
            self._write_digests(cur, flow, progress)
            if progress.resolved:
                cur.execute(
                    "UPDATE dead_letters SET status = 'resolved', replay_run = %s "
                    "WHERE flow = %s AND status = 'open' AND record_key = ANY(%s)",
                    _text((progress.run_id, flow, list(progress.resolved))),
                )
            if progress.traces:
                cur.executemany(
                    "INSERT INTO traces (run_id, flow, record_key, outcome, steps, error, at, "
                    "started_at, labels) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        _text(
                            (t.run_id, t.flow, t.record_key, str(t.outcome), dumps(t.steps))
                            + (t.error, t.at, t.started_at, dumps(t.labels) if t.labels else None)
                        )
                        for t in progress.traces
                    ],
                )
            ids = [self._write_item(cur, flow, item, now) for item in progress.items]
            if progress.work_done:
                cur.execute("DELETE FROM work WHERE id = ANY(%s)", (list(progress.work_done),))
            if progress.inbox_done:
                inbox_done(cur, flow, progress, now)
            if progress.cursor is not None:
                cur.execute(
                    "INSERT INTO cursors VALUES (%s, %s, %s) ON CONFLICT (flow) DO UPDATE "
                    "SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
                    _text((flow, dumps(progress.cursor), now)),
                )
        return ids

    @staticmethod
    def _refresh_seen(cur: psycopg.Cursor[Any], flow: str, progress: Progress, now: float) -> None:
        """Records and keys the source delivered again: retention counts from now."""
        if progress.seen_records:
            keys = _text(list(progress.seen_records))
            cur.execute(
                "UPDATE record_digests SET at = %s WHERE flow = %s AND record_key = ANY(%s)",
                (now, flow, keys),
            )
            cur.execute(
                "UPDATE keys SET updated_at = %s WHERE flow = %s AND source_key = ANY(%s) "
                "AND state = 'done'",
                (now, flow, keys),
            )
        if progress.seen_keys:
            cur.execute(
                "UPDATE keys SET updated_at = %s WHERE flow = %s AND key = ANY(%s) "
                "AND state = 'done'",
                (now, flow, _text(list(progress.seen_keys))),
            )

    @staticmethod
    def _write_digests(cur: psycopg.Cursor[Any], flow: str, progress: Progress) -> None:
        kept = [d for d in progress.digests if d.digest is not None]
        if kept:
            cur.executemany(
                "INSERT INTO record_digests VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (flow, record_key) DO UPDATE SET digest = EXCLUDED.digest, "
                "outcome = EXCLUDED.outcome, run_id = EXCLUDED.run_id, at = EXCLUDED.at",
                [
                    _text((flow, d.record_key, d.digest, str(d.outcome), d.run_id, d.at))
                    for d in kept
                ],
            )
        gone = [d.record_key for d in progress.digests if d.digest is None]
        if gone:
            cur.execute(
                "DELETE FROM record_digests WHERE flow = %s AND record_key = ANY(%s)",
                (flow, _text(gone)),
            )

    @staticmethod
    def _write_item(cur: psycopg.Cursor[Any], flow: str, item: ParkedItem, now: float) -> int:
        """Write a dead letter, review item or approval; returns its id (one open item per
        record and step, refreshed, by a unique index: engine/store/pg_work.py)."""
        return write_item(cur, flow, item, now)

    # -- runs --------------------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        flow: str,
        *,
        kind: str = "run",
        vars: dict[str, Any] | None = None,
        holder: str | None = None,
    ) -> None:
        self._write(
            "INSERT INTO runs (run_id, flow, started_at, status, kind, holder, vars) "
            "VALUES (%s, %s, %s, 'running', %s, %s, %s)",
            (run_id, flow, time.time(), kind, holder, dumps(vars or {})),
        )

    def finish_run(
        self,
        run_id: str,
        status: str,
        counts: dict[str, int],
        exit_code: int,
        message: str | None = None,
    ) -> None:
        self._write(
            "UPDATE runs SET ended_at = %s, status = %s, counts = %s, exit_code = %s, "
            "message = %s WHERE run_id = %s",
            (time.time(), status, dumps(counts), exit_code, message, run_id),
        )

    def mark_abandoned_runs(self, flow: str) -> int:
        # a worker's run is another process's while its heartbeat goes on: claim_work marks
        # it crashed once it stopped
        return self._write(
            "UPDATE runs SET status = 'crashed' WHERE flow = %s AND status = 'running' "
            "AND run_id NOT IN (SELECT run_id FROM workers WHERE flow = %s)",
            (flow, flow),
        )

    def run_vars(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not run_ids:
            return {}
        rows = self._rows(
            "SELECT run_id, vars FROM runs WHERE run_id = ANY(%s) AND vars IS NOT NULL",
            (list(run_ids),),
        )
        return {r["run_id"]: loads(r["vars"]) for r in rows}

    def oldest_run(self, flow: str) -> float | None:
        row = self._one(
            "SELECT min(started_at) FROM runs WHERE flow = %s AND status != 'running'", (flow,)
        )
        return None if row is None or row[0] is None else float(row[0])

    @staticmethod
    def _run(row: dict[str, Any]) -> Run:
        return Run(
            run_id=row["run_id"],
            flow=row["flow"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            status=row["status"],
            counts=loads(row["counts"]),
            exit_code=row["exit_code"],
            kind=row["kind"],
            holder=row["holder"],
            message=row["message"],
            vars=loads(row["vars"]),
        )

    def list_runs(self, flow: str | None = None, limit: int = 20) -> list[Run]:
        where, params = ("WHERE flow = %s", (flow, limit)) if flow else ("", (limit,))
        rows = self._rows(f"SELECT * FROM runs {where} ORDER BY started_at DESC LIMIT %s", params)
        return [self._run(r) for r in rows]

    def get_run(self, run_id: str) -> Run | None:
        rows = self._rows(
            "SELECT * FROM runs WHERE run_id = %s OR starts_with(run_id, %s) "
            "ORDER BY run_id = %s DESC, started_at DESC LIMIT 2",
            (run_id, run_id, run_id),
        )
        if rows and (rows[0]["run_id"] == run_id or len(rows) == 1):
            return self._run(rows[0])
        return None

    @staticmethod
    def _trace(row: dict[str, Any]) -> Trace:
        return Trace(
            run_id=row["run_id"],
            flow=row["flow"],
            record_key=row["record_key"],
            outcome=Outcome(row["outcome"]),
            steps=loads(row["steps"]),
            error=row["error"],
            at=row["at"],
            kind=row.get("kind"),
            started_at=row.get("started_at"),
            labels=loads(row.get("labels")),
        )

    _TRACE_SELECT = (
        "SELECT t.run_id, t.flow, t.record_key, t.outcome, t.steps, t.error, t.at, r.kind, "
        "t.started_at, t.labels FROM traces t LEFT JOIN runs r ON r.run_id = t.run_id "
    )

    def run_records(self, run_id: str, limit: int = 1000) -> list[Trace]:
        rows = self._rows(
            self._TRACE_SELECT + "WHERE t.run_id = %s ORDER BY t.id LIMIT %s", (run_id, limit)
        )
        return [self._trace(r) for r in rows]

    def trace(self, record_key: str, flow: str | None = None) -> list[Trace]:
        query, params = self._TRACE_SELECT + "WHERE t.record_key = %s", [record_key]
        if flow:
            query += " AND t.flow = %s"
            params.append(flow)
        return [self._trace(r) for r in self._rows(query + " ORDER BY t.at, t.id", params)]

    # -- dead letters ------------------------------------------------------------------------
    @staticmethod
    def _dead_letter(row: dict[str, Any]) -> DeadLetter:
        return DeadLetter(
            **{name: row[name] for name in _LETTER_COLUMNS},
            record=loads(row["record"]),
            context=loads(row["context"]),
            source_record=loads(row["source_record"]),
        )

    def _items(
        self, kind: str, filters: dict[str, str | None], limit: int | None
    ) -> list[dict[str, Any]]:
        clauses, params = ["kind = %s"], [kind]
        for column, value in filters.items():
            if value:
                clauses.append(f"{column} = %s")
                params.append(value)
        tail = f" LIMIT {int(limit)}" if limit else ""
        return self._rows(
            f"SELECT * FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY id{tail}", params
        )

    def dead_letters(
        self, flow: str | None = None, status: str | None = "open", limit: int | None = None
    ) -> list[DeadLetter]:
        rows = self._items("dead_letter", {"flow": flow, "status": status}, limit)
        return [self._dead_letter(r) for r in rows]

    def dead_letter(self, id: int) -> DeadLetter | None:
        rows = self._rows(
            "SELECT * FROM dead_letters WHERE id = %s AND kind = 'dead_letter'", (id,)
        )
        return self._dead_letter(rows[0]) if rows else None

    def open_item_keys(self, flow: str) -> set[str]:
        rows = self._rows(
            "SELECT DISTINCT record_key FROM dead_letters WHERE flow = %s AND status = 'open'",
            (flow,),
        )
        return {r["record_key"] for r in rows}

    def close_dead_letter(self, id: int, status: str, replay_run: str) -> None:
        self._write(
            "UPDATE dead_letters SET status = %s, replay_run = %s WHERE id = %s",
            (status, replay_run, id),
        )

    def purge_dead_letters(self, ids: list[int] | None = None, flow: str | None = None) -> int:
        if ids is not None:
            return self._write(
                "DELETE FROM dead_letters WHERE id = ANY(%s) AND kind = 'dead_letter'",
                (list(ids),),
            )
        if flow:
            return self._write(
                "DELETE FROM dead_letters WHERE flow = %s AND kind = 'dead_letter'", (flow,)
            )
        return self._write("DELETE FROM dead_letters WHERE kind = 'dead_letter'")

    # -- review items --------------------------------------------------------------------------
    @staticmethod
    def _review(row: dict[str, Any]) -> ReviewItem:
        return ReviewItem(
            id=row["id"],
            flow=row["flow"],
            queue=row["queue"],
            reason=row["message"],
            figures=loads(row["figures"]),
            record_key=row["record_key"],
            step=row["step"],
            record=loads(row["record"]),
            run_id=row["run_id"],
            at=row["at"],
            status=row["status"],
            resolved_run=row["replay_run"],
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            comment=row["comment"],
            context=loads(row["context"]),
            source_record=loads(row["source_record"]),
            owner=row["owner"],
            category=row["category"] or row["step"],
            due_at=row["due_at"],
            escalated_at=row["escalated_at"],
        )

    def reviews(
        self,
        flow: str | None = None,
        queue: str | None = None,
        status: str | None = "open",
        limit: int | None = None,
    ) -> list[ReviewItem]:
        rows = self._items("review", {"flow": flow, "queue": queue, "status": status}, limit)
        return [self._review(r) for r in rows]

    def review(self, id: int) -> ReviewItem | None:
        rows = self._rows("SELECT * FROM dead_letters WHERE id = %s AND kind = 'review'", (id,))
        return self._review(rows[0]) if rows else None

    def close_review(self, id: int, by: str, comment: str | None = None) -> ReviewItem:
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT status FROM dead_letters WHERE id = %s AND kind = 'review' FOR UPDATE",
                (id,),
            ).fetchone()
            if row is None:
                raise LookupError(f"no review item {id}")
            if row[0] != "open":
                raise ValueError(f"review item {id} is {row[0]}, not open")
            conn.execute(
                "UPDATE dead_letters SET status = 'closed', decided_by = %s, decided_at = %s, "
                "comment = %s WHERE id = %s",
                _text((by, time.time(), comment, id)),
            )
        item = self.review(id)
        assert item is not None  # closed just now
        return item

    # -- leases ------------------------------------------------------------------------------
    def acquire_lease(self, flow: str, holder: str, ttl: float) -> str | None:
        with self.transaction() as conn:
            now = _clock(conn)
            row = conn.execute(
                "SELECT flow, holder, pid, host, acquired_at, expires_at FROM leases "
                "WHERE flow = %s FOR UPDATE",
                (flow,),
            ).fetchone()
            dead = None
            if row is not None:
                held = Lease(*row)
                if held.holder != holder and held.expires_at > now:
                    if not held.holder_gone():
                        raise LockHeld(
                            f"flow {flow!r} is being run by {held.holder} (pid {held.pid} on "
                            f"{held.host}); its lease expires in {held.expires_at - now:.0f} s"
                        )
                    dead = held.holder
            conn.execute(
                "INSERT INTO leases VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (flow) DO "
                "UPDATE SET holder = EXCLUDED.holder, pid = EXCLUDED.pid, host = EXCLUDED.host, "
                "acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at",
                (flow, holder, os.getpid(), socket.gethostname(), now, now + ttl),
            )
        return dead

    def renew_lease(self, flow: str, holder: str, ttl: float) -> bool:
        return (
            self._write(
                f"UPDATE leases SET expires_at = {_NOW} + %s WHERE flow = %s AND holder = %s",
                (ttl, flow, holder),
            )
            == 1
        )

    def release_lease(self, flow: str, holder: str) -> None:
        self._write("DELETE FROM leases WHERE flow = %s AND holder = %s", (flow, holder))

    def lease(self, flow: str) -> Lease | None:
        row = self._one(
            "SELECT flow, holder, pid, host, acquired_at, expires_at FROM leases WHERE flow = %s",
            (flow,),
        )
        return None if row is None else Lease(*row)

    # -- retention ---------------------------------------------------------------------------
    def prune(self, older_than_s: float, flow: str | None = None) -> Pruned:
        cutoff = time.time() - older_than_s
        extra, params = ("AND flow = %s", (cutoff, flow)) if flow else ("", (cutoff,))
        with self.transaction() as conn:
            old_runs = conn.execute(
                f"DELETE FROM runs WHERE started_at < %s AND status != 'running' {extra} "
                "RETURNING run_id",
                params,
            ).fetchall()
            pruned = Pruned(
                traces=conn.execute(f"DELETE FROM traces WHERE at < %s {extra}", params).rowcount,
                runs=len(old_runs),
                dead_letters=conn.execute(
                    f"DELETE FROM dead_letters WHERE at < %s AND status != 'open' "
                    f"AND {KEEP_UNRESUMED} {extra}",
                    params,
                ).rowcount,
                run_ids=sorted(run_id for (run_id,) in old_runs),
            )
            # a record whose keys go must be evaluated again, not skipped as unchanged
            conn.execute(
                "DELETE FROM record_digests WHERE (at < %s OR (flow, record_key) IN (SELECT "
                "flow, record_key FROM keys WHERE updated_at < %s AND state != 'in_flight')) "
                + extra,
                (cutoff, *params),
            )
            pruned.keys = conn.execute(
                f"DELETE FROM keys WHERE updated_at < %s AND state != 'in_flight' {extra}", params
            ).rowcount
            self._prune_work(conn, cutoff, flow)
        return pruned

    # -- the work queue (flowyard worker) ----------------------------------------------------------
    def enqueue(
        self,
        flow: str,
        holder: str,
        records: Sequence[QueuedRecord],
        cursor: Any,
        at_end: bool = False,
    ) -> bool:
        now = time.time()
        with self.transaction() as conn:
            # the lease row locked: a feeder that lost the lease (it stalled, another took
            # it) queues nothing, so no record is queued twice by two feeders
            row = conn.execute(
                "SELECT holder FROM leases WHERE flow = %s FOR UPDATE", (flow,)
            ).fetchone()
            if row is None or row[0] != holder:
                return False
            if records:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO work (flow, record_key, item, enqueued_at) "
                        "VALUES (%s, %s, %s, %s)",
                        [_text((flow, r.record_key, dumps(r.item), now)) for r in records],
                    )
            if cursor is not None:
                conn.execute(
                    "INSERT INTO cursors VALUES (%s, %s, %s) ON CONFLICT (flow) DO UPDATE "
                    "SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
                    _text((flow, dumps(cursor), now)),
                )
            if at_end:
                conn.execute(
                    f"INSERT INTO sources VALUES (%s, {_NOW}) ON CONFLICT (flow) DO UPDATE "
                    "SET read_to_end_at = EXCLUDED.read_to_end_at",
                    (flow,),
                )
        return True

    def read_to_end(self, flow: str) -> float | None:
        row = self._one("SELECT read_to_end_at FROM sources WHERE flow = %s", (flow,))
        return None if row is None else float(row[0])

    def join_workers(self, flow: str, holder: str, run_id: str, ttl: float) -> float:
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO workers VALUES (%s, %s, %s, %s, %s, "
                f"{_NOW}, {_NOW} + %s) ON CONFLICT (flow, holder) DO UPDATE SET "
                "run_id = EXCLUDED.run_id, expires_at = EXCLUDED.expires_at RETURNING started_at",
                (flow, holder, run_id, socket.gethostname(), os.getpid(), ttl),
            ).fetchone()
        assert row is not None  # RETURNING gives the row written
        return float(row[0])

    def heartbeat(self, flow: str, holder: str, ttl: float) -> bool:
        with self.transaction() as conn:
            alive = conn.execute(
                f"UPDATE workers SET expires_at = {_NOW} + %s WHERE flow = %s AND holder = %s",
                (ttl, flow, holder),
            ).rowcount
            if alive:
                conn.execute(
                    f"UPDATE work SET claim_expires = {_NOW} + %s "
                    "WHERE flow = %s AND claimed_by = %s",
                    (ttl, flow, holder),
                )
        return alive == 1

    def claim_work(self, flow: str, holder: str, limit: int, ttl: float) -> list[ClaimedRecord]:
        with self.transaction() as conn:
            self._let_go_of_gone_workers(conn, flow)
            rows = conn.execute(
                f"UPDATE work SET claimed_by = %s, claim_expires = {_NOW} + %s "
                "WHERE id IN (SELECT w.id FROM work w WHERE w.flow = %s "
                f"AND (w.claimed_by IS NULL OR w.claim_expires < {_NOW}) "
                "AND NOT EXISTS (SELECT 1 FROM work o WHERE o.flow = w.flow "
                "AND o.record_key = w.record_key AND o.id < w.id) "
                "ORDER BY w.id LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING id, record_key, item",
                (holder, ttl, flow, limit),
            ).fetchall()
        return sorted(
            (ClaimedRecord(id, key, loads(item)) for id, key, item in rows), key=lambda c: c.id
        )

    @staticmethod
    def _let_go_of_gone_workers(conn: psycopg.Connection[Any], flow: str) -> None:
        """Workers whose heartbeat stopped, or whose process on this host is gone: their
        runs are marked crashed and their claims freed."""
        rows = conn.execute(
            f"SELECT holder, run_id, host, pid, expires_at < {_NOW} FROM workers WHERE flow = %s",
            (flow,),
        ).fetchall()
        gone = [(h, r) for h, r, host, pid, expired in rows if expired or process_gone(host, pid)]
        if not gone:
            return
        holders = [h for h, _ in gone]
        conn.execute("DELETE FROM workers WHERE flow = %s AND holder = ANY(%s)", (flow, holders))
        conn.execute(
            "UPDATE work SET claimed_by = NULL, claim_expires = NULL "
            "WHERE flow = %s AND claimed_by = ANY(%s)",
            (flow, holders),
        )
        conn.execute(
            "UPDATE runs SET status = 'crashed' WHERE run_id = ANY(%s) AND status = 'running'",
            ([r for _, r in gone],),
        )

    def leave_workers(self, flow: str, holder: str) -> int:
        with self.transaction() as conn:
            freed = conn.execute(
                "UPDATE work SET claimed_by = NULL, claim_expires = NULL "
                "WHERE flow = %s AND claimed_by = %s",
                (flow, holder),
            ).rowcount
            conn.execute("DELETE FROM workers WHERE flow = %s AND holder = %s", (flow, holder))
        return freed

    def queue_depth(self, flow: str) -> int:
        row = self._one("SELECT count(*) FROM work WHERE flow = %s", (flow,))
        return int(row[0]) if row else 0


def _version(conn: psycopg.Connection[Any]) -> int:
    """The highest migration applied to the database of ``conn`` (0: none, or no table)."""
    found = conn.execute(
        "SELECT to_regclass(%s)", (f"{pg_schema.SCHEMA}.schema_versions",)
    ).fetchone()
    if found is None or found[0] is None:
        return 0
    row = conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_versions").format(
            sql.Identifier(pg_schema.SCHEMA)
        )
    ).fetchone()
    return int(row[0]) if row else 0


def _clock(conn: psycopg.Connection[Any]) -> float:
    row = conn.execute(f"SELECT {_NOW}").fetchone()
    assert row is not None
    return float(row[0])
