"""The SQLite state store: one file holding what a run must remember (the embedded default).

Durability: the file runs in WAL mode with ``synchronous=NORMAL``; every commit survives
the process being killed (not a power cut between checkpoints). Key states are committed
around each request, so a ``kill -9`` loses at most the requests in flight; traces, dead
letters and the cursor are committed together in batches, so the cursor never passes a
record whose final state was not written. The layout and its upgrades are in
engine/store/schema.py; faults of the file are told by engine/store/faults.py.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from engine.codec import dumps, loads
from engine.errors import LockHeld, StateError
from engine.outcomes import Outcome
from engine.store import schema
from engine.store.faults import Connection, check_state_file, state_error
from engine.store.rows import (
    Cursor,
    DeadLetter,
    FlowHealth,
    InboxAdded,
    InboxEntry,
    InboxEvent,
    KeyState,
    KeyWrite,
    Lease,
    ParkedItem,
    Progress,
    Pruned,
    RecordDigest,
    ReviewItem,
    Run,
    ScheduleState,
    Trace,
    process_gone,
)
from engine.store.sqlite_work import KEEP_UNRESUMED, WorkItemsMixin, write_item

if TYPE_CHECKING:
    import sqlite_utils

_KEY_COLUMNS = "key, state, fingerprint, sent_key, response, run_id, updated_at, record_key, step"
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


# built once: an f-string in the method would build the text, and hash it for SQLite's
# statement cache, on every look-up
_GET_KEY = f"SELECT {_KEY_COLUMNS} FROM keys WHERE flow = ? AND key = ?"
_GET_DIGEST = (
    "SELECT digest, outcome, run_id, at FROM record_digests WHERE flow = ? AND record_key = ?"
)

_WRITE_KEY = (
    "INSERT OR REPLACE INTO keys (flow, key, state, fingerprint, sent_key, step, record_key, "
    "run_id, response, updated_at, source_key) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


def _key_row(flow: str, w: KeyWrite, now: float) -> tuple[Any, ...]:
    response = dumps(w.response) if w.response is not None else None
    return (
        flow,
        w.key,
        w.state,
        w.fingerprint,
        w.sent_key,
        w.step,
        w.record_key,
        w.run_id,
        response,
        now,
        w.source_key,
    )


# How many stores this process holds open on each state file (by real path). Closing any
# file descriptor of a file drops every POSIX lock the process holds on it, SQLite's
# included: reading the header of a file a store here has open (another store opening it)
# would let a process that closes its own last connection to the file believe no one else
# uses it, and delete the write-ahead log under this one, its later commits with it.
_open_here: dict[str, int] = {}
_open_here_lock = threading.Lock()


def _opening(path: Path) -> str:
    """Count a store opening ``path``; the header is checked only when none is open here."""
    key = os.path.realpath(path)
    with _open_here_lock:
        if not _open_here.get(key):
            check_state_file(path)
        _open_here[key] = _open_here.get(key, 0) + 1
    return key


def _closed(key: str) -> None:
    with _open_here_lock:
        _open_here[key] -= 1
        if not _open_here[key]:
            del _open_here[key]


class SqliteStore(WorkItemsMixin):
    """The SQLite :class:`~engine.store.protocol.StateStore`. Thread-safe: one connection
    guarded by a lock.

    Opening checks what is cheap to check: that the file is an SQLite database no shorter
    than its header says, and that it is a flowyard state (its ``meta`` table) of a schema
    this flowyard knows. Anything wrong with the file, then or later (damaged pages, a
    read-only file or folder, a full disk), raises :class:`StateError` naming the file.
    The folder must exist: the store never creates one (see :func:`engine.api.Engine`).
    ``readonly`` opens the file without writing anything (a dry run).
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._open_key = _opening(self.path)
        try:
            if readonly:
                raw = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                )
            else:
                raw = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            _closed(self._open_key)
            raise state_error(exc, self.path) from None
        raw.isolation_level = None  # explicit transactions only
        self._conn = conn = Connection(raw, self.path)
        self._closed = False
        try:
            schema.check(conn, self.path)
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                with self._lock:
                    schema.create(conn)
                if not schema.up_to_date(conn):
                    with self.transaction() as tx:
                        schema.upgrade(tx)
            # a file opened read-only keeps the columns it has: an older one has no kinds
            self._has_kinds = "kind" in schema.columns(conn, "dead_letters")
            self._has_vars = "vars" in schema.columns(conn, "runs")
            self._has_work = "owner" in schema.columns(conn, "dead_letters")
        except BaseException:
            raw.close()
            _closed(self._open_key)
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._conn.close()
                finally:
                    _closed(self._open_key)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        """The state file's schema version (1: a file from before review items)."""
        rows = self._query("SELECT value FROM meta WHERE name = 'schema_version'")
        return int(rows[0]["value"]) if rows else 1

    @property
    def db(self) -> sqlite_utils.Database:
        """The same connection as a sqlite-utils ``Database``, for ad-hoc queries and tools."""
        import sqlite_utils  # on use: importing it costs ~0.15 s, a third of a CLI start

        return sqlite_utils.Database(self._conn.raw)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (taken at once: ``BEGIN IMMEDIATE``), committed at the end
        of the block, rolled back if it raises."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may have rolled back already
                    try:
                        self._conn.execute("ROLLBACK")
                    except StateError:
                        pass  # the error that brought us here is the one to report
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._conn.dicts(sql, params)

    def _kind(self, kind: str) -> str:
        """The SQL condition that keeps rows of ``kind``; an older file holds dead letters only."""
        if self._has_kinds:
            return f"kind = '{kind}'"
        return "1" if kind == "dead_letter" else "0"

    # -- idempotency keys ------------------------------------------------------------------
    def get_key(self, flow: str, key: str) -> KeyState | None:
        with self._lock:
            row = self._conn.fetchone(_GET_KEY, (flow, key))
        return None if row is None else KeyState(*row)

    def write_keys(self, flow: str, writes: Sequence[KeyWrite]) -> None:
        now = time.time()
        if len(writes) == 1:
            # One statement outside BEGIN/COMMIT is its own transaction, committed when it
            # returns: the same durability for a third of the statements (the hot path:
            # every send writes its key twice).
            with self._lock:
                self._conn.execute(_WRITE_KEY, _key_row(flow, writes[0], now))
        elif writes:
            with self.transaction() as conn:
                conn.executemany(_WRITE_KEY, [_key_row(flow, w, now) for w in writes])

    def keys_in_flight(self, flow: str) -> list[KeyState]:
        with self._lock:
            rows = self._conn.fetchall(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE flow = ? AND state = 'in_flight' "
                "ORDER BY updated_at",
                (flow,),
            )
        return [KeyState(*row) for row in rows]

    # -- cursors and digests ---------------------------------------------------------------------
    def cursor(self, flow: str) -> Cursor | None:
        rows = self._query("SELECT position, updated_at FROM cursors WHERE flow = ?", (flow,))
        if not rows:
            return None
        return Cursor(flow, loads(rows[0]["position"]), rows[0]["updated_at"] or 0.0)

    def record_digest(self, flow: str, record_key: str) -> RecordDigest | None:
        with self._lock:
            row = self._conn.fetchone(_GET_DIGEST, (flow, record_key))
        return None if row is None else RecordDigest(*row)

    def forget_record_digests(self, flow: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM record_digests WHERE flow = ?", (flow,))

    # -- progress: traces, items and the cursor, in one transaction --------------------------------
    def commit_progress(self, flow: str, progress: Progress) -> list[int]:
        now = time.time()
        # encoded before the transaction: the state's write lock is held the shorter
        traces = [
            (
                t.run_id,
                t.flow,
                t.record_key,
                t.outcome,
                dumps(t.steps),
                t.error,
                t.at,
                t.started_at,
                dumps(t.labels) if t.labels else None,
            )
            for t in progress.traces
        ]
        with self.transaction() as conn:
            if progress.keys:
                conn.executemany(_WRITE_KEY, [_key_row(flow, w, now) for w in progress.keys])
            self._refresh_seen(conn, flow, progress, now)
            self._write_digests(conn, flow, progress)
            if progress.resolved:
                conn.executemany(
                    "UPDATE dead_letters SET status = 'resolved', replay_run = ? "
                    "WHERE flow = ? AND status = 'open' AND record_key = ?",
                    [(progress.run_id, flow, key) for key in progress.resolved],
                )
            if traces:
                conn.executemany(
                    "INSERT INTO traces (run_id, flow, record_key, outcome, steps, error, at, "
                    "started_at, labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    traces,
                )
            ids = [self._write_item(conn, flow, item, now) for item in progress.items]
            if progress.cursor is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)",
                    (flow, dumps(progress.cursor), now),
                )
            if progress.inbox_done:
                self._inbox_done(conn, flow, progress, now)
        return ids

    @staticmethod
    def _refresh_seen(conn: Connection, flow: str, progress: Progress, now: float) -> None:
        """Records and keys the source delivered again: retention counts from now."""
        if progress.seen_records:
            params = [(now, flow, key) for key in progress.seen_records]
            conn.executemany(
                "UPDATE record_digests SET at = ? WHERE flow = ? AND record_key = ?", params
            )
            conn.executemany(
                "UPDATE keys SET updated_at = ? WHERE flow = ? AND source_key = ? "
                "AND state = 'done'",
                params,
            )
        if progress.seen_keys:
            conn.executemany(
                "UPDATE keys SET updated_at = ? WHERE flow = ? AND key = ? AND state = 'done'",
                [(now, flow, key) for key in progress.seen_keys],
            )

    @staticmethod
    def _write_digests(conn: Connection, flow: str, progress: Progress) -> None:
        if not progress.digests:
            return
        conn.executemany(
            "INSERT OR REPLACE INTO record_digests VALUES (?, ?, ?, ?, ?, ?)",
            [
                (flow, d.record_key, d.digest, d.outcome, d.run_id, d.at)
                for d in progress.digests
                if d.digest is not None
            ],
        )
        conn.executemany(
            "DELETE FROM record_digests WHERE flow = ? AND record_key = ?",
            [(flow, d.record_key) for d in progress.digests if d.digest is None],
        )

    @staticmethod
    def _write_item(conn: Connection, flow: str, item: ParkedItem, now: float) -> int:
        """Write a dead letter, review item or approval; returns its id (one open item per
        record and step, refreshed: engine/store/sqlite_work.py)."""
        return write_item(conn, flow, item, now)

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
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, flow, started_at, status, kind, holder, vars) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?)",
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
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET ended_at = ?, status = ?, counts = ?, exit_code = ?, "
                "message = ? WHERE run_id = ?",
                (time.time(), status, dumps(counts), exit_code, message, run_id),
            )

    def mark_abandoned_runs(self, flow: str) -> int:
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE runs SET status = 'crashed' WHERE flow = ? AND status = 'running'", (flow,)
            ).rowcount

    def run_vars(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not run_ids or not self._has_vars:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = self._query(
            f"SELECT run_id, vars FROM runs WHERE run_id IN ({marks}) AND vars IS NOT NULL",
            tuple(run_ids),
        )
        return {r["run_id"]: loads(r["vars"]) for r in rows}

    def oldest_run(self, flow: str) -> float | None:
        rows = self._query(
            "SELECT started_at FROM runs WHERE flow = ? AND status != 'running' "
            "ORDER BY started_at LIMIT 1",
            (flow,),
        )
        return rows[0]["started_at"] if rows else None

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
            vars=loads(row.get("vars")),
        )

    def list_runs(self, flow: str | None = None, limit: int = 20) -> list[Run]:
        where, params = ("WHERE flow = ?", (flow, limit)) if flow else ("", (limit,))
        rows = self._query(f"SELECT * FROM runs {where} ORDER BY started_at DESC LIMIT ?", params)
        return [self._run(r) for r in rows]

    def get_run(self, run_id: str) -> Run | None:
        rows = self._query(
            "SELECT * FROM runs WHERE run_id = ? OR run_id LIKE ? ORDER BY started_at DESC LIMIT 2",
            (run_id, run_id + "%"),
        )
        if len(rows) != 1 and not (rows and rows[0]["run_id"] == run_id):
            return None
        return self._run(rows[0])

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

    def run_records(self, run_id: str, limit: int = 1000) -> list[Trace]:
        rows = self._query(
            "SELECT t.run_id, t.flow, t.record_key, t.outcome, t.steps, t.error, t.at, r.kind, "
            "t.started_at, t.labels FROM traces t LEFT JOIN runs r ON r.run_id = t.run_id "
            "WHERE t.run_id = ? ORDER BY t.id LIMIT ?",
            (run_id, limit),
        )
        return [self._trace(r) for r in rows]

    def trace(self, record_key: str, flow: str | None = None) -> list[Trace]:
        sql = (
            "SELECT t.run_id, t.flow, t.record_key, t.outcome, t.steps, t.error, t.at, "
            "r.kind, t.started_at, t.labels FROM traces t LEFT JOIN runs r "
            "ON r.run_id = t.run_id WHERE t.record_key = ?"
        )
        params: tuple[str, ...] = (record_key,)
        if flow:
            sql += " AND t.flow = ?"
            params += (flow,)
        return [self._trace(r) for r in self._query(sql + " ORDER BY t.at, t.id", params)]

    # -- dead letters ------------------------------------------------------------------------
    @staticmethod
    def _dead_letter(row: dict[str, Any]) -> DeadLetter:
        return DeadLetter(
            **{name: row[name] for name in _LETTER_COLUMNS},
            record=loads(row["record"]),
            context=loads(row["context"]),
            source_record=loads(row.get("source_record")),
        )

    def dead_letters(
        self, flow: str | None = None, status: str | None = "open", limit: int | None = None
    ) -> list[DeadLetter]:
        clauses, params = [self._kind("dead_letter")], []
        if flow:
            clauses.append("flow = ?")
            params.append(flow)
        if status:
            clauses.append("status = ?")
            params.append(status)
        tail = f" LIMIT {int(limit)}" if limit else ""
        rows = self._query(
            f"SELECT * FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY id{tail}",
            tuple(params),
        )
        return [self._dead_letter(r) for r in rows]

    def dead_letter(self, id: int) -> DeadLetter | None:
        rows = self._query(
            f"SELECT * FROM dead_letters WHERE id = ? AND {self._kind('dead_letter')}", (id,)
        )
        return self._dead_letter(rows[0]) if rows else None

    def open_item_keys(self, flow: str) -> set[str]:
        rows = self._query(
            "SELECT DISTINCT record_key FROM dead_letters WHERE flow = ? AND status = 'open'",
            (flow,),
        )
        return {r["record_key"] for r in rows}

    def close_dead_letter(self, id: int, status: str, replay_run: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE dead_letters SET status = ?, replay_run = ? WHERE id = ?",
                (status, replay_run, id),
            )

    def purge_dead_letters(self, ids: list[int] | None = None, flow: str | None = None) -> int:
        kind = self._kind("dead_letter")
        with self.transaction() as conn:
            if ids is not None:
                marks = ",".join("?" * len(ids))
                return conn.execute(
                    f"DELETE FROM dead_letters WHERE id IN ({marks}) AND {kind}", ids
                ).rowcount
            if flow:
                return conn.execute(
                    f"DELETE FROM dead_letters WHERE flow = ? AND {kind}", (flow,)
                ).rowcount
            return conn.execute(f"DELETE FROM dead_letters WHERE {kind}").rowcount

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
            owner=row.get("owner"),
            category=row.get("category") or row["step"],
            due_at=row.get("due_at"),
            escalated_at=row.get("escalated_at"),
        )

    def reviews(
        self,
        flow: str | None = None,
        queue: str | None = None,
        status: str | None = "open",
        limit: int | None = None,
    ) -> list[ReviewItem]:
        if not self._has_kinds:
            return []
        clauses, params = ["kind = 'review'"], []
        for column, value in (("flow", flow), ("queue", queue), ("status", status)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        tail = f" LIMIT {int(limit)}" if limit else ""
        rows = self._query(
            f"SELECT * FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY id{tail}",
            tuple(params),
        )
        return [self._review(r) for r in rows]

    def review(self, id: int) -> ReviewItem | None:
        if not self._has_kinds:
            return None
        rows = self._query("SELECT * FROM dead_letters WHERE id = ? AND kind = 'review'", (id,))
        return self._review(rows[0]) if rows else None

    def close_review(self, id: int, by: str, comment: str | None = None) -> ReviewItem:
        with self.transaction() as conn:
            row = conn.fetchone(
                "SELECT status FROM dead_letters WHERE id = ? AND kind = 'review'", (id,)
            )
            if row is None:
                raise LookupError(f"no review item {id}")
            if row[0] != "open":
                raise ValueError(f"review item {id} is {row[0]}, not open")
            conn.execute(
                "UPDATE dead_letters SET status = 'closed', decided_by = ?, decided_at = ?, "
                "comment = ? WHERE id = ?",
                (by, time.time(), comment, id),
            )
        item = self.review(id)
        assert item is not None  # closed just now
        return item

    # -- leases ------------------------------------------------------------------------------
    def acquire_lease(self, flow: str, holder: str, ttl: float) -> str | None:
        now = time.time()
        with self.transaction() as conn:
            row = conn.fetchone("SELECT * FROM leases WHERE flow = ?", (flow,))
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
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?)",
                (flow, holder, os.getpid(), socket.gethostname(), now, now + ttl),
            )
        return dead

    def renew_lease(self, flow: str, holder: str, ttl: float) -> bool:
        with self.transaction() as conn:
            return (
                conn.execute(
                    "UPDATE leases SET expires_at = ? WHERE flow = ? AND holder = ?",
                    (time.time() + ttl, flow, holder),
                ).rowcount
                == 1
            )

    def release_lease(self, flow: str, holder: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE flow = ? AND holder = ?", (flow, holder))

    def lease(self, flow: str) -> Lease | None:
        with self._lock:
            row = self._conn.fetchone("SELECT * FROM leases WHERE flow = ?", (flow,))
        return None if row is None else Lease(*row)

    # -- retention ---------------------------------------------------------------------------
    def prune(self, older_than_s: float, flow: str | None = None) -> Pruned:
        cutoff = time.time() - older_than_s
        extra, params = ("AND flow = ?", (cutoff, flow)) if flow else ("", (cutoff,))
        with self.transaction() as conn:
            old_runs = conn.fetchall(
                f"SELECT run_id FROM runs WHERE started_at < ? AND status != 'running' {extra}",
                params,
            )
            pruned = Pruned(
                traces=conn.execute(f"DELETE FROM traces WHERE at < ? {extra}", params).rowcount,
                runs=conn.execute(
                    f"DELETE FROM runs WHERE started_at < ? AND status != 'running' {extra}", params
                ).rowcount,
                dead_letters=conn.execute(
                    f"DELETE FROM dead_letters WHERE at < ? AND status != 'open' "
                    f"AND {KEEP_UNRESUMED} {extra}",
                    params,
                ).rowcount,
                run_ids=[run_id for (run_id,) in old_runs],
            )
            # a record whose keys go must be evaluated again, not skipped as unchanged
            conn.execute(
                "DELETE FROM record_digests WHERE (at < ? OR (flow, record_key) IN (SELECT "
                "flow, record_key FROM keys WHERE updated_at < ? AND state != 'in_flight')) "
                + extra,
                (cutoff, *params),
            )
            pruned.keys = conn.execute(
                f"DELETE FROM keys WHERE updated_at < ? AND state != 'in_flight' {extra}", params
            ).rowcount
            self._prune_work(conn, cutoff, flow)
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return pruned

    # -- the inbox (engine/serve/) ---------------------------------------------------------------
    _INBOX_COLUMNS = (
        "id, flow, event_id, topic, scheme, headers, body, received_at, deliveries, status, "
        "run_id, done_at"
    )

    @staticmethod
    def _inbox_entry(row: Sequence[Any]) -> InboxEntry:
        body = row[6]
        return InboxEntry(
            id=row[0],
            flow=row[1],
            event_id=row[2],
            topic=row[3],
            scheme=row[4],
            headers=loads(row[5]) or {},
            body=bytes(body) if not isinstance(body, str) else body.encode("utf-8"),
            received_at=row[7],
            deliveries=row[8],
            status=row[9],
            run_id=row[10],
            done_at=row[11],
        )

    @staticmethod
    def _inbox_done(conn: Connection, flow: str, progress: Progress, now: float) -> None:
        conn.executemany(
            "UPDATE inbox SET status = 'done', done_at = ?, run_id = ?, claimed_by = NULL, "
            "claim_expires = NULL WHERE id = ? AND flow = ?",
            [(now, progress.run_id, id, flow) for id in progress.inbox_done],
        )

    def add_to_inbox(self, events: Sequence[tuple[str, InboxEvent]]) -> list[InboxAdded]:
        if not events:
            return []
        now = time.time()
        added: list[InboxAdded] = []
        with self.transaction() as conn:
            for flow, e in events:
                # a duplicate delivery counts; the event kept is the first one's
                row = conn.fetchone(
                    "INSERT INTO inbox (flow, event_id, topic, scheme, headers, body, "
                    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (flow, event_id) "
                    "DO UPDATE SET deliveries = deliveries + 1 RETURNING id, deliveries",
                    (
                        flow,
                        e.event_id,
                        e.topic,
                        e.scheme,
                        dumps(e.headers),
                        e.body,
                        e.received_at or now,
                    ),
                )
                assert row is not None  # an upsert with RETURNING always returns its row
                added.append(InboxAdded(int(row[0]), row[1] == 1, int(row[1])))
        return added

    def claim_inbox(self, flow: str, holder: str, limit: int, ttl: float) -> list[InboxEntry]:
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE inbox SET claim_expires = ? WHERE flow = ? AND status = 'pending' "
                "AND claimed_by = ?",
                (now + ttl, flow, holder),
            )
            others = conn.fetchall(
                "SELECT DISTINCT claim_host, claim_pid FROM inbox WHERE flow = ? AND "
                "status = 'pending' AND claimed_by IS NOT NULL AND claimed_by != ? AND "
                "claim_expires >= ?",
                (flow, holder, now),
            )
            for host, pid in others:
                if process_gone(host, pid):
                    conn.execute(
                        "UPDATE inbox SET claimed_by = NULL, claim_expires = NULL WHERE "
                        "flow = ? AND status = 'pending' AND claim_host = ? AND claim_pid = ?",
                        (flow, host, pid),
                    )
            if limit <= 0:
                return []
            rows = conn.fetchall(
                f"UPDATE inbox SET claimed_by = ?, claim_pid = ?, claim_host = ?, "
                f"claim_expires = ? WHERE id IN (SELECT id FROM inbox WHERE flow = ? AND "
                f"status = 'pending' AND (claimed_by IS NULL OR claim_expires < ?) "
                f"ORDER BY id LIMIT ?) RETURNING {self._INBOX_COLUMNS}",
                (holder, os.getpid(), socket.gethostname(), now + ttl, flow, now, limit),
            )
        return sorted((self._inbox_entry(r) for r in rows), key=lambda e: e.id)

    def release_inbox(self, flow: str, holder: str) -> int:
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE inbox SET claimed_by = NULL, claim_expires = NULL WHERE flow = ? AND "
                "status = 'pending' AND claimed_by = ?",
                (flow, holder),
            ).rowcount

    def inbox_depth(self, flow: str | None = None) -> dict[str, int]:
        where, params = ("AND flow = ?", (flow,)) if flow else ("", ())
        with self._lock:
            rows = self._conn.fetchall(
                f"SELECT flow, COUNT(*) FROM inbox WHERE status = 'pending' {where} GROUP BY flow",
                params,
            )
        return {r[0]: int(r[1]) for r in rows}

    def inbox_events(
        self, flow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        clauses, params = ["1"], []
        if flow:
            clauses.append("flow = ?")
            params.append(flow)
        if status:
            clauses.append("status = ?")
            params.append(status)
        with self._lock:
            rows = self._conn.fetchall(
                f"SELECT {self._INBOX_COLUMNS} FROM inbox WHERE {' AND '.join(clauses)} "
                f"ORDER BY id LIMIT {int(limit)}",
                tuple(params),
            )
        return [self._inbox_entry(r) for r in rows]

    def prune_inbox(self, older_than_s: float, flow: str | None = None) -> int:
        cutoff = time.time() - older_than_s
        extra, params = ("AND flow = ?", (cutoff, flow)) if flow else ("", (cutoff,))
        with self.transaction() as conn:
            return conn.execute(
                f"DELETE FROM inbox WHERE status = 'done' AND received_at < ? {extra}", params
            ).rowcount

    # -- schedules -------------------------------------------------------------------------------
    def claim_schedule(self, flow: str, due: float, holder: str) -> bool:
        with self.transaction() as conn:
            return (
                conn.execute(
                    "INSERT INTO schedules (flow, last_due, holder, claimed_at) VALUES "
                    "(?, ?, ?, ?) ON CONFLICT (flow) DO UPDATE SET last_due = excluded.last_due, "
                    "holder = excluded.holder, claimed_at = excluded.claimed_at "
                    "WHERE schedules.last_due < excluded.last_due",
                    (flow, due, holder, time.time()),
                ).rowcount
                == 1
            )

    def schedule_state(self, flow: str) -> ScheduleState | None:
        with self._lock:
            row = self._conn.fetchone(
                "SELECT flow, last_due, holder, claimed_at FROM schedules WHERE flow = ?", (flow,)
            )
        return None if row is None else ScheduleState(*row)

    # -- monitoring ------------------------------------------------------------------------------
    def flow_health(self) -> list[FlowHealth]:
        found: dict[str, FlowHealth] = {}

        def of(flow: str) -> FlowHealth:
            return found.setdefault(flow, FlowHealth(flow))

        kind_queue = "kind, queue" if self._has_kinds else "'dead_letter', NULL"
        with self._lock:
            items = self._conn.fetchall(
                f"SELECT flow, {kind_queue}, COUNT(*) FROM dead_letters "
                "WHERE status = 'open' GROUP BY 1, 2, 3"
            )
            pending = self._conn.fetchall(
                "SELECT flow, COUNT(*) FROM inbox WHERE status = 'pending' GROUP BY flow"
            )
            last = self._conn.fetchall(
                "SELECT flow, started_at, status FROM runs r WHERE started_at = "
                "(SELECT MAX(started_at) FROM runs WHERE flow = r.flow)"
            )
            done = self._conn.fetchall(
                "SELECT flow, MAX(ended_at) FROM runs WHERE status IN ('ok', 'dead_lettered', "
                "'review') GROUP BY flow"
            )
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
