"""The SQLite state file's layout, and how a file written by an older flowyard is upgraded.

``meta.schema_version`` says which layout a file has. Version 2 added review items (a
``kind`` of row in ``dead_letters``, with a queue, figures and a person's decision) and
the record as the source delivered it; version 3 the vars a run was given (a replay reuses
them) and the source record each idempotency key belongs to (a record seen again keeps its
keys alive); version 4 work items (approvals; an owner, a reason category, a due time,
escalations and a decision history on every item), compensations, and the start and
labels of each trace (for stats); version 5 the inbox of events pushed to flowyard
(webhooks, engine/serve/), each kept once per event id and claimed by the process that
takes it through its flow, and the slot each scheduled flow last ran for. An older file
is brought up to date in place when it is opened for writing: columns, tables and indexes
are added, nothing is rewritten. Opened read-only (a dry run), it is read as it is.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import StateError
from engine.store.faults import Connection

SCHEMA_VERSION = 5

TABLES = """
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
# Columns added to ``dead_letters`` in schema version 4: every item is a work item with an
# owner, a reason category, an SLA and a history (engine/store/work_rows.py).
_WORK_COLUMNS = {
    "owner": "TEXT",
    "category": "TEXT",
    "created_at": "REAL",
    "due_at": "REAL",
    "escalated_at": "REAL",
    "escalate_to": "TEXT",
    "breached": "INTEGER NOT NULL DEFAULT 0",
    "history": "TEXT",
    "labels": "TEXT",
    "resumed_run": "TEXT",
    "flow_file": "TEXT",
}
# Columns added since version 1, per table, and the indexes over them.
ADDED_COLUMNS = {
    "dead_letters": {**_ITEM_COLUMNS, **_WORK_COLUMNS},
    "runs": {"vars": "TEXT"},
    "keys": {"source_key": "TEXT"},
    "traces": {"started_at": "REAL", "labels": "TEXT"},
}
ADDED_INDEXES = {
    "items_kind": "CREATE INDEX IF NOT EXISTS items_kind "
    "ON dead_letters (kind, status, flow, queue)",
    "keys_source": "CREATE INDEX IF NOT EXISTS keys_source ON keys (flow, source_key)",
    "items_due": "CREATE INDEX IF NOT EXISTS items_due ON dead_letters (status, due_at)",
    "items_record": "CREATE INDEX IF NOT EXISTS items_record "
    "ON dead_letters (flow, record_key, step)",
    "traces_flow_at": "CREATE INDEX IF NOT EXISTS traces_flow_at ON traces (flow, at)",
}
# Tables added since version 1 (a new file gets them through the upgrade too).
ADDED_TABLES = {
    "compensations": (
        "CREATE TABLE IF NOT EXISTS compensations ("
        "id INTEGER PRIMARY KEY, flow TEXT NOT NULL, source_key TEXT NOT NULL, "
        "record_key TEXT, step TEXT NOT NULL, key TEXT NOT NULL, run_id TEXT, record TEXT, "
        "meta TEXT, state TEXT NOT NULL DEFAULT 'pending', at REAL NOT NULL, done_run TEXT, "
        "error TEXT, response TEXT)",
        "CREATE INDEX IF NOT EXISTS compensations_record "
        "ON compensations (flow, source_key, state)",
    ),
    # version 5: events pushed to flowyard (engine/serve/inbox.py), and schedule slots
    "inbox": (
        "CREATE TABLE IF NOT EXISTS inbox ("
        "id INTEGER PRIMARY KEY, flow TEXT NOT NULL, event_id TEXT NOT NULL, topic TEXT, "
        "scheme TEXT, headers TEXT, body BLOB NOT NULL, received_at REAL NOT NULL, "
        "deliveries INTEGER NOT NULL DEFAULT 1, status TEXT NOT NULL DEFAULT 'pending', "
        "claimed_by TEXT, claim_pid INTEGER, claim_host TEXT, claim_expires REAL, "
        "done_at REAL, run_id TEXT, UNIQUE (flow, event_id))",
        # the pending events of a flow's inbox, oldest first
        "CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (flow, status, id)",
    ),
    "schedules": (
        "CREATE TABLE IF NOT EXISTS schedules ("
        "flow TEXT PRIMARY KEY, last_due REAL NOT NULL, holder TEXT, claimed_at REAL NOT NULL)",
    ),
}


def columns(conn: Connection, table: str) -> set[str]:
    return {row[1] for row in conn.fetchall(f"PRAGMA table_info({table})")}


def check(conn: Connection, path: Path) -> None:
    """A flowyard state (or an empty database), of a schema version this code knows."""
    tables = {r[0] for r in conn.fetchall("SELECT name FROM sqlite_master")}
    version = None
    if "meta" in tables:
        row = conn.fetchone("SELECT value FROM meta WHERE name = 'schema_version'")
        version = row[0] if row else None
    if tables and "meta" not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise StateError(
            f"state file {path}: an SQLite database, but not a flowyard state (it "
            f"holds {shown} and no meta table); pass the path of a flowyard state file, "
            "or of a new file in an existing folder",
            str(path),
        )
    if version is not None and str(version).isdigit() and int(version) > SCHEMA_VERSION:
        raise StateError(
            f"state file {path}: written by a newer flowyard (schema {version}; this "
            f"one knows {SCHEMA_VERSION}); upgrade flowyard to use it",
            str(path),
        )


def create(conn: Connection) -> None:
    """Create what is missing of this schema (a new file gets all of it)."""
    conn.executescript(TABLES)
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def up_to_date(conn: Connection) -> bool:
    """Whether the file has every column and index of this schema (no write lock taken)."""
    indexes = {r[0] for r in conn.fetchall("SELECT name FROM sqlite_master WHERE type = 'index'")}
    tables = {r[0] for r in conn.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return (
        set(ADDED_INDEXES) <= indexes
        and set(ADDED_TABLES) <= tables
        and all(set(added) <= columns(conn, table) for table, added in ADDED_COLUMNS.items())
    )


def upgrade(conn: Connection) -> None:
    """Bring a file written by an older flowyard up to this schema; call it inside a write
    transaction (one process upgrades; the others find it done)."""
    for table, added in ADDED_COLUMNS.items():
        have = columns(conn, table)
        for name, definition in added.items():
            if name in have:
                continue
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
            if (table, name) == ("keys", "source_key"):
                # keys written before: their record's key is the source record's
                # (a foreach item's is not, and is then only never kept alive)
                conn.execute("UPDATE keys SET source_key = record_key")
            if (table, name) == ("dead_letters", "created_at"):
                # items written before: first written when last refreshed, as far as is known
                conn.execute("UPDATE dead_letters SET created_at = at")
    for statements in ADDED_TABLES.values():  # one by one: a script would commit
        for statement in statements:
            conn.execute(statement)
    for create_index in ADDED_INDEXES.values():
        conn.execute(create_index)
    conn.execute(
        "UPDATE meta SET value = ? WHERE name = 'schema_version' AND CAST(value AS INTEGER) < ?",
        (str(SCHEMA_VERSION), SCHEMA_VERSION),
    )
