"""The state store: one SQLite file holding what a run must remember.

Idempotency keys with request fingerprints and stored responses, source cursors,
runs, per-record traces, dead letters and review items (records that need a person: one
table, told apart by ``kind``), the digest of each record that last went through
cleanly (engine/unchanged.py) and per-flow leases. Everything the engine
persists goes through :class:`Store`, so a PostgreSQL store for workers on several
machines can be written against the same small interface.

Durability: the file runs in WAL mode with ``synchronous=NORMAL``; every commit
survives the process being killed (not a power cut between checkpoints). Key
state changes are committed one by one around each request, so a ``kill -9``
loses at most the requests in flight; traces, dead letters and the cursor are
committed together in batches, so the cursor never passes a record whose final
state was not written.

Upgrades: a state file written by an older flowyard is brought up to date in place when
it is opened for writing (columns are added, nothing is rewritten; ``meta.schema_version``
says which version a file has). Opened read-only (a dry run), an older file is read as
it is.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import LockHeld, StateError

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 3

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
    status TEXT NOT NULL, counts TEXT, exit_code INTEGER, kind TEXT, holder TEXT, message TEXT,
    vars TEXT);
CREATE INDEX IF NOT EXISTS runs_flow ON runs (flow, started_at);
CREATE TABLE IF NOT EXISTS keys (
    flow TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, fingerprint TEXT NOT NULL,
    sent_key TEXT NOT NULL, step TEXT, record_key TEXT, run_id TEXT, response TEXT,
    updated_at REAL NOT NULL, source_key TEXT, PRIMARY KEY (flow, key));
CREATE TABLE IF NOT EXISTS cursors (flow TEXT PRIMARY KEY, position TEXT, updated_at REAL);
CREATE TABLE IF NOT EXISTS traces (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, flow TEXT NOT NULL, record_key TEXT,
    outcome TEXT NOT NULL, steps TEXT, error TEXT, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS traces_key ON traces (record_key, at);
CREATE INDEX IF NOT EXISTS traces_run ON traces (run_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, flow TEXT NOT NULL, run_id TEXT NOT NULL, record_key TEXT,
    step TEXT, error_class TEXT, message TEXT, attempts INTEGER, record TEXT, context TEXT,
    raw TEXT, line INTEGER, at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'open',
    replay_run TEXT, kind TEXT NOT NULL DEFAULT 'dead_letter', queue TEXT, figures TEXT,
    source_record TEXT, decided_by TEXT, decided_at REAL, comment TEXT);
CREATE INDEX IF NOT EXISTS dead_letters_flow ON dead_letters (flow, status);
CREATE TABLE IF NOT EXISTS record_digests (
    flow TEXT NOT NULL, record_key TEXT NOT NULL, digest TEXT NOT NULL, outcome TEXT NOT NULL,
    run_id TEXT, at REAL NOT NULL, PRIMARY KEY (flow, record_key));
CREATE TABLE IF NOT EXISTS leases (
    flow TEXT PRIMARY KEY, holder TEXT NOT NULL, pid INTEGER, host TEXT,
    acquired_at REAL NOT NULL, expires_at REAL NOT NULL);
"""


# Columns added to ``dead_letters`` in schema version 2 (an older file gets them in place):
# what kind of item a row is, the review queue and figures, the record as the source
# delivered it (for a replay from the start) and a person's decision.
_ITEM_COLUMNS = {
    "kind": "TEXT NOT NULL DEFAULT 'dead_letter'",  # dead_letter | review
    "queue": "TEXT",
    "figures": "TEXT",
    "source_record": "TEXT",
    "decided_by": "TEXT",
    "decided_at": "REAL",
    "comment": "TEXT",
}
# Columns added since version 1, per table, and the indexes over them: an older file gets
# them in place. Version 3: the vars a run was given (a replay reuses them) and the source
# record each idempotency key belongs to (a record seen again keeps its keys alive).
_ADDED_COLUMNS = {
    "dead_letters": _ITEM_COLUMNS,
    "runs": {"vars": "TEXT"},
    "keys": {"source_key": "TEXT"},
}
_ADDED_INDEXES = {
    "items_kind": "CREATE INDEX IF NOT EXISTS items_kind "
    "ON dead_letters (kind, status, flow, queue)",
    "keys_source": "CREATE INDEX IF NOT EXISTS keys_source ON keys (flow, source_key)",
}


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dumps(value: Any) -> str:
    """JSON for the store: Decimals as exact strings, never floats."""
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text, parse_float=Decimal)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_state_file(path: Path) -> None:
    """Refuse, cheaply, a path that cannot be a state file: a folder, a file that is not an
    SQLite database, or one shorter than its own header says (truncated).

    An empty file is a new state. Reading the first 100 bytes costs nothing; a full
    ``PRAGMA quick_check`` reads every page (docs/semantics.md has the figures), so damaged
    pages further in are found when they are read, and reported the same way.
    """
    if path.is_dir():
        raise StateError(
            f"state file {path}: is a folder; pass a file path such as {path / 'state.db'}",
            str(path),
        )
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        return  # a new state
    except OSError as exc:
        raise StateError(
            f"state file {path}: cannot read it: {exc.strerror or exc}", str(path)
        ) from None
    if not header:
        return
    if not header.startswith(_SQLITE_MAGIC):
        raise StateError(
            f"state file {path}: not an SQLite database, so not a flowyard state file (or "
            "its header is damaged); pass the path of a flowyard state file, or restore "
            "this one from a backup",
            str(path),
        )
    if len(header) < 100:
        raise StateError(f"state file {path}: truncated inside its header", str(path))
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the page count is valid only then (SQLite)
    # a write-ahead log beside it may hold the pages a checkpoint did not write (a disk
    # that filled up during one): SQLite reads them from there
    wal = Path(f"{path}-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    if valid and pages and pages * page_size > size and not pending:
        raise StateError(
            f"state file {path}: truncated ({size} bytes, its header says "
            f"{pages * page_size}); restore it from a backup",
            str(path),
        )


def state_error(exc: BaseException, path: Path | str) -> StateError:
    """A one-line :class:`StateError` naming the file, for an SQLite or OS error on it."""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "readonly" in low or "read-only" in low or _read_only(Path(path)):
        hint = (
            "the file or its folder is read-only: flowyard writes the state file and "
            "creates its -wal and -shm files beside it"
        )
    elif "full" in low or "no space" in low:
        hint = "the disk is full: free space and run again (nothing after the last commit is kept)"
    elif "malformed" in low or "not a database" in low or "corrupt" in low:
        hint = (
            "the file is damaged: restore it from a backup, or move it aside to start a new "
            "state (every record is then taken through the flow again)"
        )
    elif "locked" in low or "busy" in low:
        hint = "another process held a write lock on it for more than 30 s"
    elif "unable to open" in low:
        hint = "cannot open it: check that its folder exists and is writable"
    elif "i/o" in low:
        hint = "a disk I/O error: the disk may be full, read-only or failing"
    else:
        hint = "the state file cannot be used"
    return StateError(f"state file {path}: {text}; {hint}", str(path))


def _read_only(path: Path) -> bool:
    """Whether the state file or its folder cannot be written (a read-only mount, or
    permissions; root ignores the latter, never the former)."""
    for item in (path, path.parent):
        try:
            if os.statvfs(item).f_flag & os.ST_RDONLY:
                return True
        except OSError:
            continue
        if item.exists() and not os.access(item, os.W_OK):
            return True
    return False


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: Any) -> Any:
    """``value`` (a statement's parameters) with lone surrogates written as ``\\uXXXX``.

    No encoding can write a lone surrogate, and SQLite stores UTF-8. Escaped, it is still
    the same character once a JSON column is decoded, and readable text in a plain one.
    """
    if isinstance(value, str):
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, tuple | list):
        return type(value)(_storable(v) for v in value)
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    return value


class _Connection:
    """The store's SQLite connection: a failure of the file becomes a :class:`StateError`
    naming it, and text no encoding can write (a lone surrogate) is stored escaped instead
    of failing the batch it is in."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._raw = conn
        self._path = path

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            try:
                return self._raw.execute(sql, params)
            except UnicodeEncodeError:
                return self._raw.execute(sql, _storable(params))
        except sqlite3.Error as exc:
            raise _translated(exc, self._path) from None

    def executemany(self, sql: str, rows: list) -> sqlite3.Cursor:
        try:
            try:
                return self._raw.executemany(sql, rows)
            except UnicodeEncodeError:
                return self._raw.executemany(sql, [_storable(r) for r in rows])
        except sqlite3.Error as exc:
            raise _translated(exc, self._path) from None

    def executescript(self, sql: str) -> sqlite3.Cursor:
        try:
            return self._raw.executescript(sql)
        except sqlite3.Error as exc:
            raise _translated(exc, self._path) from None

    def close(self) -> None:
        self._raw.close()

    @property
    def raw(self) -> sqlite3.Connection:
        return self._raw


def _translated(exc: sqlite3.Error, path: Path) -> BaseException:
    # a mistake in a statement is a bug, not a fault of the file: keep it as it is
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return exc
    return state_error(exc, path)


@dataclass
class KeyState:
    """What the store remembers of one idempotency key."""

    key: str
    state: str  # in_flight | done | failed
    fingerprint: str
    sent_key: str
    response_json: str | None  # decoded on use: most skipped sends never read it
    run_id: str | None
    updated_at: float = 0.0  # when it was last written or seen again (retention counts from it)

    @property
    def response(self) -> Any:
        """The stored response of the key's last request, decoded."""
        return loads(self.response_json)


@dataclass
class DeadLetter:
    """A parked record with the step that failed and why.

    ``source_record`` is the record as the source delivered it (None for dead letters
    written before flowyard kept it, and for lines the source could not read).
    """

    id: int
    flow: str
    run_id: str
    record_key: str | None
    step: str | None
    error_class: str
    message: str
    attempts: int
    record: Any
    context: Any
    raw: str | None
    line: int | None
    at: float
    status: str  # open | replayed | superseded | resolved
    replay_run: str | None
    source_record: Any = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ReviewItem:
    """A record held for a person: the queue it waits in, why, and the figures to judge.

    ``status`` is ``open``, ``resolved`` (the record went through on a later run; ``run_id``
    of that run in ``resolved_run``) or ``closed`` (by a person: ``decided_by``,
    ``decided_at``, ``comment``).
    """

    id: int
    flow: str
    queue: str
    reason: str
    figures: Any
    record_key: str | None
    step: str | None
    record: Any
    run_id: str
    at: float
    status: str
    resolved_run: str | None
    decided_by: str | None
    decided_at: float | None
    comment: str | None
    context: Any = None
    source_record: Any = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Store:
    """The SQLite state store. Thread-safe: one connection guarded by a lock.

    Opening checks what is cheap to check: that the file is an SQLite database no shorter
    than its header says, and that it is a flowyard state (its ``meta`` table) of a schema
    this flowyard knows. Anything wrong with the file, then or later (damaged pages, a
    read-only file or folder, a full disk), raises :class:`StateError` naming the file.
    The folder must exist: the store never creates one (see :func:`engine.api.Engine`).
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        check_state_file(self.path)
        try:
            if readonly:
                raw = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                )
            else:
                raw = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise state_error(exc, self.path) from None
        raw.isolation_level = None  # explicit transactions only
        self._conn = conn = _Connection(raw, self.path)
        try:
            self._check_schema()
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                with self._lock:
                    conn.executescript(_TABLES)
                    conn.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                self._upgrade()
            # a file opened read-only keeps the columns it has: an older one has no kinds
            self._has_kinds = "kind" in self._columns("dead_letters")
        except BaseException:
            raw.close()
            raise

    def _check_schema(self) -> None:
        """A flowyard state (or an empty database), of a schema version this code knows."""
        try:
            with self._lock:
                tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
                version = None
                if "meta" in tables:
                    row = self._conn.execute(
                        "SELECT value FROM meta WHERE name = 'schema_version'"
                    ).fetchone()
                    version = row[0] if row else None
        except sqlite3.Error as exc:
            raise state_error(exc, self.path) from None
        if tables and "meta" not in tables:
            shown = ", ".join(sorted(tables)[:5])
            raise StateError(
                f"state file {self.path}: an SQLite database, but not a flowyard state (it "
                f"holds {shown} and no meta table); pass the path of a flowyard state file, "
                "or of a new file in an existing folder",
                str(self.path),
            )
        if version is not None and str(version).isdigit() and int(version) > SCHEMA_VERSION:
            raise StateError(
                f"state file {self.path}: written by a newer flowyard (schema {version}; this "
                f"one knows {SCHEMA_VERSION}); upgrade flowyard to use it",
                str(self.path),
            )

    def _columns(self, table: str) -> set[str]:
        with self._lock:
            return {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}

    def _upgrade(self) -> None:
        """Bring a state file written by an older flowyard up to this schema, in place."""
        with self._lock:
            indexes = {
                row[0]
                for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
        if set(_ADDED_INDEXES) <= indexes and all(
            set(columns) <= self._columns(table) for table, columns in _ADDED_COLUMNS.items()
        ):
            return  # up to date: no write lock taken
        with self.transaction() as conn:  # one process upgrades; the others find it done
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for name, definition in columns.items():
                    if name in have:
                        continue
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
                    if (table, name) == ("keys", "source_key"):
                        # keys written before: their record's key is the source record's
                        # (a foreach item's is not, and is then only never kept alive)
                        conn.execute("UPDATE keys SET source_key = record_key")
            for create in _ADDED_INDEXES.values():
                conn.execute(create)
            conn.execute(
                "UPDATE meta SET value = ? WHERE name = 'schema_version' AND CAST(value AS "
                "INTEGER) < ?",
                (str(SCHEMA_VERSION), SCHEMA_VERSION),
            )

    def schema_version(self) -> int:
        """The state file's schema version (1: a file from before review items)."""
        rows = self._query("SELECT value FROM meta WHERE name = 'schema_version'")
        return int(rows[0]["value"]) if rows else 1

    def _kind(self, kind: str) -> str:
        """The SQL condition that keeps rows of ``kind``; an older file holds dead letters only."""
        if self._has_kinds:
            return f"kind = '{kind}'"
        return "1" if kind == "dead_letter" else "0"

    @property
    def db(self) -> sqlite_utils.Database:
        """The same connection as a sqlite-utils ``Database``, for ad-hoc queries and tools."""
        import sqlite_utils  # on use: importing it costs ~0.15 s, a third of a CLI start

        return sqlite_utils.Database(self._conn.raw)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.raw.in_transaction:  # SQLite may have rolled back already
                    try:
                        self._conn.execute("ROLLBACK")
                    except StateError:
                        pass  # the error that brought us here is the one to report
                raise

    def _query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._conn.execute(sql, params)
            cols = [c[0] for c in cur.description or []]
            try:
                rows = cur.fetchall()
            except sqlite3.Error as exc:  # a damaged page met while reading
                raise _translated(exc, self.path) from None
            return [dict(zip(cols, row, strict=True)) for row in rows]

    # -- idempotency keys ------------------------------------------------------------------
    def get_key(self, flow: str, key: str) -> KeyState | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT key, state, fingerprint, sent_key, response, run_id, updated_at "
                "FROM keys WHERE flow = ? AND key = ?",
                (flow, key),
            ).fetchone()
        return None if row is None else KeyState(*row)

    def set_key(
        self,
        flow: str,
        key: str,
        *,
        state: str,
        fingerprint: str,
        sent_key: str,
        step: str,
        record_key: str | None,
        run_id: str,
        response: Any = None,
        source_key: str | None = None,
    ) -> None:
        """Record a key's state; committed at once (it must survive a kill).

        ``source_key`` is the key of the source record the send belongs to (a record split
        by a foreach sends under its items' keys): when that record comes again, unchanged,
        its keys are kept alive with it (:meth:`commit_progress`, ``seen``).
        """
        # One statement outside BEGIN/COMMIT is its own transaction, committed when it
        # returns: the same durability for a third of the statements (the hot path: every
        # send writes its key twice).
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO keys (flow, key, state, fingerprint, sent_key, step, "
                "record_key, run_id, response, updated_at, source_key) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    flow,
                    key,
                    state,
                    fingerprint,
                    sent_key,
                    step,
                    record_key,
                    run_id,
                    dumps(response) if response is not None else None,
                    time.time(),
                    source_key,
                ),
            )

    def keys_in_flight(self, flow: str) -> list[dict]:
        return self._query(
            "SELECT key, sent_key, record_key, run_id, step FROM keys "
            "WHERE flow = ? AND state = 'in_flight'",
            (flow,),
        )

    # -- records that went through cleanly ----------------------------------------------------
    def record_digest(
        self, flow: str, record_key: str
    ) -> tuple[str, str, str | None, float] | None:
        """``(digest, outcome, run_id, at)`` of the record's last clean pass (``at``: when it
        went through, or was last seen again unchanged), or None."""
        with self._lock:
            return self._conn.execute(
                "SELECT digest, outcome, run_id, at FROM record_digests "
                "WHERE flow = ? AND record_key = ?",
                (flow, record_key),
            ).fetchone()

    def forget_record_digests(self, flow: str) -> None:
        """Forget every record's digest: a run that does not keep them may change keys."""
        with self._lock:
            self._conn.execute("DELETE FROM record_digests WHERE flow = ?", (flow,))

    # -- cursors -----------------------------------------------------------------------------
    def get_cursor(self, flow: str) -> Any:
        rows = self._query("SELECT position FROM cursors WHERE flow = ?", (flow,))
        return loads(rows[0]["position"]) if rows else None

    # -- progress: traces, dead letters and the cursor, in one transaction -----------------------
    def commit_progress(
        self,
        flow: str,
        traces: list[dict],
        dead_letters: list[dict],
        cursor: Any = None,
        *,
        move_cursor: bool = False,
        resolved: tuple[str, list[str]] | None = None,
        digests: list[tuple[str, str | None, str, str, float]] = (),
        seen: tuple[list[str], list[str]] = ([], []),
    ) -> list[int]:
        """Write a batch of final record states and move the cursor with them, atomically.

        ``dead_letters`` holds dead letters and review items (``kind: review``, with
        ``queue`` and ``figures``); the ids of their rows are returned in the same order.
        ``resolved`` is ``(run_id, record keys)``: records with open dead letters or review
        items that this run took through the flow after all; those are closed as
        ``resolved``.
        ``digests`` are ``(record_key, digest, outcome, run_id, at)`` of records that went
        through cleanly; a digest of None forgets the record's (it did not go through).
        ``seen`` is ``(record keys, idempotency keys)`` the source delivered again: records
        skipped as unchanged, whose digests and keys are kept alive, and sends skipped as
        duplicates. Their time is set to now, so that retention forgets only what the
        source stopped delivering.
        """
        ids: list[int] = []
        now = time.time()
        with self.transaction() as conn:
            records, keys = seen
            if records:
                conn.executemany(
                    "UPDATE record_digests SET at = ? WHERE flow = ? AND record_key = ?",
                    [(now, flow, key) for key in records],
                )
                conn.executemany(
                    "UPDATE keys SET updated_at = ? WHERE flow = ? AND source_key = ? "
                    "AND state = 'done'",
                    [(now, flow, key) for key in records],
                )
            if keys:
                conn.executemany(
                    "UPDATE keys SET updated_at = ? WHERE flow = ? AND key = ? AND state = 'done'",
                    [(now, flow, key) for key in keys],
                )
            if digests:
                conn.executemany(
                    "INSERT OR REPLACE INTO record_digests VALUES (?, ?, ?, ?, ?, ?)",
                    [(flow, *d) for d in digests if d[1] is not None],
                )
                conn.executemany(
                    "DELETE FROM record_digests WHERE flow = ? AND record_key = ?",
                    [(flow, d[0]) for d in digests if d[1] is None],
                )
            if resolved and resolved[1]:
                conn.executemany(
                    "UPDATE dead_letters SET status = 'resolved', replay_run = ? "
                    "WHERE flow = ? AND status = 'open' AND record_key = ?",
                    [(resolved[0], flow, key) for key in resolved[1]],
                )
            if traces:
                conn.executemany(
                    "INSERT INTO traces (run_id, flow, record_key, outcome, steps, error, at) "
                    "VALUES (:run_id, :flow, :record_key, :outcome, :steps, :error, :at)",
                    [
                        {**t, "steps": dumps(t.get("steps")), "error": t.get("error")}
                        for t in traces
                    ],
                )
            for d in dead_letters:
                # a record that fails the same way on every run (a file source is re-read
                # each time) keeps one open dead letter (or review item), refreshed, not one
                # per run
                kind = d.get("kind", "dead_letter")
                same = conn.execute(
                    "SELECT id FROM dead_letters WHERE flow = ? AND record_key IS ? AND "
                    "step IS ? AND kind = ? AND status = 'open' ORDER BY id DESC LIMIT 1",
                    (flow, d.get("record_key"), d.get("step"), kind),
                ).fetchone()
                facts = (
                    d["run_id"],
                    d.get("error_class"),
                    d["message"],
                    d.get("attempts", 1),
                    dumps(d.get("record")),
                    dumps(d.get("context")),
                    d.get("raw"),
                    d.get("line"),
                    time.time(),
                    d.get("queue"),
                    dumps(d["figures"]) if d.get("figures") is not None else None,
                    dumps(d["source_record"]) if d.get("source_record") is not None else None,
                )
                if same is not None:
                    conn.execute(
                        "UPDATE dead_letters SET run_id = ?, error_class = ?, message = ?, "
                        "attempts = ?, record = ?, context = ?, raw = ?, line = ?, at = ?, "
                        "queue = ?, figures = ?, source_record = ? WHERE id = ?",
                        (*facts, same[0]),
                    )
                    ids.append(same[0])
                    continue
                cur = conn.execute(
                    "INSERT INTO dead_letters (flow, record_key, step, kind, run_id, "
                    "error_class, message, attempts, record, context, raw, line, at, queue, "
                    "figures, source_record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (flow, d.get("record_key"), d.get("step"), kind, *facts),
                )
                ids.append(cur.lastrowid)
            if move_cursor:
                conn.execute(
                    "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)",
                    (flow, dumps(cursor), time.time()),
                )
        return ids

    # -- runs --------------------------------------------------------------------------------
    def start_run(
        self, run_id: str, flow: str, kind: str = "run", vars: dict | None = None
    ) -> None:
        """Record a run as ``running``, with the vars it was given (never a secret: the
        values of ``${env:NAME}`` are not vars)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, flow, started_at, status, kind, holder, vars) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (run_id, flow, time.time(), kind, holder_id(), dumps(vars or {})),
            )

    def finish_run(
        self, run_id: str, status: str, counts: dict, exit_code: int, message: str | None = None
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET ended_at = ?, status = ?, counts = ?, exit_code = ?, "
                "message = ? WHERE run_id = ?",
                (time.time(), status, dumps(counts), exit_code, message, run_id),
            )

    def run_vars(self, run_ids: list[str]) -> dict[str, dict]:
        """The vars each of ``run_ids`` was given (runs from before they were kept: absent)."""
        if not run_ids or "vars" not in self._columns("runs"):
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = self._query(
            f"SELECT run_id, vars FROM runs WHERE run_id IN ({marks}) AND vars IS NOT NULL",
            tuple(run_ids),
        )
        return {r["run_id"]: loads(r["vars"]) for r in rows}

    def mark_abandoned_runs(self, flow: str) -> int:
        """Runs still 'running' when their flow's lease is free were killed; say so."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE runs SET status = 'crashed' WHERE flow = ? AND status = 'running'", (flow,)
            ).rowcount

    def oldest_run(self, flow: str) -> float | None:
        """When the flow's oldest finished run started (an index look-up), or None."""
        rows = self._query(
            "SELECT started_at FROM runs WHERE flow = ? AND status != 'running' "
            "ORDER BY started_at LIMIT 1",
            (flow,),
        )
        return rows[0]["started_at"] if rows else None

    def list_runs(self, flow: str | None = None, limit: int = 20) -> list[dict]:
        where, params = ("WHERE flow = ?", (flow, limit)) if flow else ("", (limit,))
        rows = self._query(f"SELECT * FROM runs {where} ORDER BY started_at DESC LIMIT ?", params)
        for r in rows:
            r["counts"] = loads(r["counts"])
            r["vars"] = loads(r.get("vars"))
        return rows

    def get_run(self, run_id: str) -> dict | None:
        rows = self._query(
            "SELECT * FROM runs WHERE run_id = ? OR run_id LIKE ? ORDER BY started_at DESC LIMIT 2",
            (run_id, run_id + "%"),
        )
        if len(rows) != 1 and not (rows and rows[0]["run_id"] == run_id):
            return None
        run = rows[0]
        run["counts"] = loads(run["counts"])
        run["vars"] = loads(run.get("vars"))
        return run

    def run_records(self, run_id: str, limit: int = 1000) -> list[dict]:
        rows = self._query(
            "SELECT record_key, outcome, steps, error, at FROM traces "
            "WHERE run_id = ? ORDER BY id LIMIT ?",
            (run_id, limit),
        )
        for r in rows:
            r["steps"] = loads(r["steps"])
        return rows

    def trace(self, record_key: str, flow: str | None = None) -> list[dict]:
        sql = (
            "SELECT t.run_id, t.flow, t.record_key, t.outcome, t.steps, t.error, t.at, "
            "r.kind FROM traces t LEFT JOIN runs r ON r.run_id = t.run_id "
            "WHERE t.record_key = ?"
        )
        params: tuple = (record_key,)
        if flow:
            sql += " AND t.flow = ?"
            params += (flow,)
        rows = self._query(sql + " ORDER BY t.at, t.id", params)
        for r in rows:
            r["steps"] = loads(r["steps"])
        return rows

    # -- dead letters ------------------------------------------------------------------------
    def _dead_letter(self, row: dict) -> DeadLetter:
        return DeadLetter(
            **{name: row[name] for name in _LETTER_COLUMNS},
            record=loads(row["record"]),
            context=loads(row["context"]),
            source_record=loads(row.get("source_record")),
        )

    def dead_letters(
        self, flow: str | None = None, status: str | None = "open", limit: int | None = None
    ) -> list[DeadLetter]:
        """A flow's (or every flow's) dead letters with ``status`` (None: any), oldest first."""
        clauses, params = [self._kind("dead_letter")], []
        if flow:
            clauses.append("flow = ?")
            params.append(flow)
        if status:
            clauses.append("status = ?")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit else ""
        rows = self._query(f"SELECT * FROM dead_letters {where} ORDER BY id{tail}", tuple(params))
        return [self._dead_letter(r) for r in rows]

    def open_item_keys(self, flow: str) -> set[str]:
        """The record keys of a flow's open dead letters and review items."""
        rows = self._query(
            "SELECT DISTINCT record_key FROM dead_letters WHERE flow = ? AND status = 'open'",
            (flow,),
        )
        return {r["record_key"] for r in rows}

    def dead_letter(self, id: int) -> DeadLetter | None:
        """Dead letter ``id``, or None (a review item is not a dead letter)."""
        rows = self._query(
            f"SELECT * FROM dead_letters WHERE id = ? AND {self._kind('dead_letter')}", (id,)
        )
        return self._dead_letter(rows[0]) if rows else None

    def close_dead_letter(self, id: int, status: str, replay_run: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE dead_letters SET status = ?, replay_run = ? WHERE id = ?",
                (status, replay_run, id),
            )

    def purge_dead_letters(self, ids: list[int] | None = None, flow: str | None = None) -> int:
        """Delete dead letters (by id, by flow, or all) for good; review items stay."""
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
    def _review(self, row: dict) -> ReviewItem:
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
        )

    def reviews(
        self,
        flow: str | None = None,
        queue: str | None = None,
        status: str | None = "open",
        limit: int | None = None,
    ) -> list[ReviewItem]:
        """Review items of a flow and queue (None: all) with ``status`` (None: any), oldest
        first."""
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
        """Review item ``id``, or None (a dead letter is not a review item)."""
        if not self._has_kinds:
            return None
        rows = self._query("SELECT * FROM dead_letters WHERE id = ? AND kind = 'review'", (id,))
        return self._review(rows[0]) if rows else None

    def close_review(self, id: int, by: str, comment: str | None = None) -> ReviewItem:
        """Close open review item ``id`` as decided by ``by``, now, with ``comment``.

        Raises :class:`LookupError` when there is no such item and :class:`ValueError` when
        it is no longer open.
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT status FROM dead_letters WHERE id = ? AND kind = 'review'", (id,)
            ).fetchone()
            if row is None:
                raise LookupError(f"no review item {id}")
            if row[0] != "open":
                raise ValueError(f"review item {id} is {row[0]}, not open")
            conn.execute(
                "UPDATE dead_letters SET status = 'closed', decided_by = ?, decided_at = ?, "
                "comment = ? WHERE id = ?",
                (by, time.time(), comment, id),
            )
        return self.review(id)

    # -- leases ------------------------------------------------------------------------------
    def acquire_lease(self, flow: str, holder: str, ttl: float) -> str | None:
        """Take the flow's lease or raise :class:`LockHeld` naming the live holder.

        A lease still running whose holder was a process on this host that is gone (killed,
        crashed) is taken at once rather than after it expires; the dead holder is returned.
        """
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT holder, pid, host, expires_at FROM leases WHERE flow = ?", (flow,)
            ).fetchone()
            dead = None
            if row and row[0] != holder and row[3] > now:
                if not _gone(row[1], row[2]):
                    raise LockHeld(
                        f"flow {flow!r} is being run by {row[0]} (pid {row[1]} on "
                        f"{row[2]}); its lease expires in {row[3] - now:.0f} s"
                    )
                dead = row[0]
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

    # -- retention ---------------------------------------------------------------------------
    def prune(self, older_than_s: float, flow: str | None = None) -> dict[str, int]:
        """Delete finished runs with their run logs, traces and closed dead letters older
        than the limit.

        Open dead letters and idempotency keys of records that are still wanted are kept:
        keys are dropped only when older than the limit too (a source that re-sends a
        record older than the retention will send it again, as documented), and never
        while in flight.
        """
        cutoff = time.time() - older_than_s
        extra, params = ("AND flow = ?", (cutoff, flow)) if flow else ("", (cutoff,))
        with self.transaction() as conn:
            old_runs = conn.execute(
                f"SELECT run_id FROM runs WHERE started_at < ? AND status != 'running' {extra}",
                params,
            ).fetchall()
            counts = {
                "traces": conn.execute(f"DELETE FROM traces WHERE at < ? {extra}", params).rowcount,
                "runs": conn.execute(
                    f"DELETE FROM runs WHERE started_at < ? AND status != 'running' {extra}", params
                ).rowcount,
                "dead_letters": conn.execute(
                    f"DELETE FROM dead_letters WHERE at < ? AND status != 'open' {extra}", params
                ).rowcount,
            }
            # a record whose keys go must be evaluated again, not skipped as unchanged
            conn.execute(
                "DELETE FROM record_digests WHERE (at < ? OR (flow, record_key) IN (SELECT "
                "flow, record_key FROM keys WHERE updated_at < ? AND state != 'in_flight')) "
                + extra,
                (cutoff, *params),
            )
            counts["keys"] = conn.execute(
                f"DELETE FROM keys WHERE updated_at < ? AND state != 'in_flight' {extra}", params
            ).rowcount
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        logs = self.path.parent / "runs"  # where the runner writes each run's log
        for (run_id,) in old_runs:
            (logs / f"{Path(run_id).name}.jsonl").unlink(missing_ok=True)
        return counts


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


def _gone(pid: int | None, host: str | None) -> bool:
    """Whether ``pid`` was a process on this host that no longer exists."""
    if host != socket.gethostname() or not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists (as another user's process)
        return False
    return False


def holder_id() -> str:
    """Who holds a lease: host and pid, enough for a person to find the process."""
    return f"{socket.gethostname()}:{os.getpid()}"
