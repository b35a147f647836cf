"""The PostgreSQL state's layout, as numbered migrations recorded in a versions table.

Everything lives in the schema ``flowyard`` of the database given, so the database can be
shared with other applications. ``flowyard.schema_versions`` holds one row per migration
applied (its number, when, and what it did); the state's version is the highest. The
numbers are those of the SQLite layout (engine/store/schema.py) that holds the same facts:
version 3 is the layout of an SQLite state of version 3, plus what only a shared state
has (the work queue of ``flowyard worker``). A later version adds a migration here and the
same columns or tables to the SQLite layout.

:func:`migrate` applies the missing migrations in one transaction, under an advisory lock,
so that of several workers starting at once one migrates and the others find it done. A
state of a higher version than this flowyard knows is refused, never changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar, cast

SCHEMA = "flowyard"
# the database's clock, as epoch seconds: leases and claims expire by one clock, whatever
# the clocks of the machines that take them
NOW = "extract(epoch from clock_timestamp())"


_T = TypeVar("_T")
_UNWRITABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: _T) -> _T:
    """A parameter PostgreSQL can store: text holds no NUL and no lone surrogate, so those
    are written as ``\\uXXXX`` (the same character again once a JSON column is decoded)."""
    if isinstance(value, str):
        if _UNWRITABLE.search(value) is None:
            return value
        return cast(_T, _UNWRITABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value))
    if isinstance(value, tuple | list):
        return cast(_T, type(value)(storable(v) for v in value))
    return value


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


_V3 = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION, status TEXT NOT NULL, counts TEXT, exit_code INTEGER,
    kind TEXT, holder TEXT, message TEXT, vars TEXT);
CREATE INDEX runs_flow ON runs (flow, started_at);
CREATE INDEX runs_started ON runs (started_at);
CREATE TABLE keys (
    flow TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, fingerprint TEXT NOT NULL,
    sent_key TEXT NOT NULL, step TEXT, record_key TEXT, run_id TEXT, response TEXT,
    updated_at DOUBLE PRECISION NOT NULL, source_key TEXT, PRIMARY KEY (flow, key));
CREATE INDEX keys_source ON keys (flow, source_key);
CREATE INDEX keys_in_flight ON keys (flow, updated_at) WHERE state = 'in_flight';
CREATE TABLE cursors (flow TEXT PRIMARY KEY, position TEXT, updated_at DOUBLE PRECISION);
CREATE TABLE traces (
    id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, flow TEXT NOT NULL, record_key TEXT,
    outcome TEXT NOT NULL, steps TEXT, error TEXT, at DOUBLE PRECISION NOT NULL);
CREATE INDEX traces_key ON traces (record_key, at);
CREATE INDEX traces_run ON traces (run_id);
CREATE TABLE dead_letters (
    id BIGSERIAL PRIMARY KEY, flow TEXT NOT NULL, run_id TEXT NOT NULL, record_key TEXT,
    step TEXT, error_class TEXT, message TEXT, attempts INTEGER, record TEXT, context TEXT,
    raw TEXT, line INTEGER, at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL DEFAULT 'open',
    replay_run TEXT, kind TEXT NOT NULL DEFAULT 'dead_letter', queue TEXT, figures TEXT,
    source_record TEXT, decided_by TEXT, decided_at DOUBLE PRECISION, comment TEXT);
CREATE INDEX dead_letters_flow ON dead_letters (flow, status);
CREATE INDEX items_kind ON dead_letters (kind, status, flow, queue);
-- one open item per record, step and kind, whichever process writes it: a record that
-- fails the same way again refreshes its item (INSERT ... ON CONFLICT), never adds one
CREATE UNIQUE INDEX items_open ON dead_letters
    (flow, (coalesce(record_key, '')), (coalesce(step, '')), kind) WHERE status = 'open';
CREATE TABLE record_digests (
    flow TEXT NOT NULL, record_key TEXT NOT NULL, digest TEXT NOT NULL, outcome TEXT NOT NULL,
    run_id TEXT, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (flow, record_key));
CREATE TABLE leases (
    flow TEXT PRIMARY KEY, holder TEXT NOT NULL, pid INTEGER, host TEXT,
    acquired_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL);
-- the work queue of flowyard worker: records read from a flow's source, waiting for a
-- worker; only the oldest record of a key can be claimed, so one key's records go in order
CREATE TABLE work (
    id BIGSERIAL PRIMARY KEY, flow TEXT NOT NULL, record_key TEXT NOT NULL, item TEXT NOT NULL,
    enqueued_at DOUBLE PRECISION NOT NULL, claimed_by TEXT, claim_expires DOUBLE PRECISION);
CREATE INDEX work_flow ON work (flow, id);
CREATE INDEX work_key ON work (flow, record_key, id);
CREATE INDEX work_claims ON work (flow, claimed_by) WHERE claimed_by IS NOT NULL;
-- when a feeder last read the flow's source to its end (a worker with --until-empty that
-- started before then, and finds the queue empty, has nothing left to do)
CREATE TABLE sources (flow TEXT PRIMARY KEY, read_to_end_at DOUBLE PRECISION NOT NULL);
-- the workers of a flow and their heartbeats: a worker whose heartbeat stopped is gone,
-- its run is marked crashed and its claims are taken over
CREATE TABLE workers (
    flow TEXT NOT NULL, holder TEXT NOT NULL, run_id TEXT NOT NULL, host TEXT, pid INTEGER,
    started_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (flow, holder));
"""

# SQLite schema 4: every item a work item (an owner, a reason category, a due time,
# escalations and a decision history; approvals), compensations, and the start and labels
# of each trace (for stats)
_V4 = """
ALTER TABLE dead_letters
    ADD COLUMN owner TEXT, ADD COLUMN category TEXT, ADD COLUMN created_at DOUBLE PRECISION,
    ADD COLUMN due_at DOUBLE PRECISION, ADD COLUMN escalated_at DOUBLE PRECISION,
    ADD COLUMN escalate_to TEXT, ADD COLUMN breached BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN history TEXT, ADD COLUMN labels TEXT, ADD COLUMN resumed_run TEXT,
    ADD COLUMN flow_file TEXT;
-- items written before: first written when last refreshed, as far as is known
UPDATE dead_letters SET created_at = at;
CREATE INDEX items_due ON dead_letters (status, due_at);
CREATE INDEX items_record ON dead_letters (flow, record_key, step);
ALTER TABLE traces ADD COLUMN started_at DOUBLE PRECISION, ADD COLUMN labels TEXT;
CREATE INDEX traces_flow_at ON traces (flow, at);
CREATE TABLE compensations (
    id BIGSERIAL PRIMARY KEY, flow TEXT NOT NULL, source_key TEXT NOT NULL, record_key TEXT,
    step TEXT NOT NULL, key TEXT NOT NULL, run_id TEXT, record TEXT, meta TEXT,
    state TEXT NOT NULL DEFAULT 'pending', at DOUBLE PRECISION NOT NULL, done_run TEXT,
    error TEXT, response TEXT);
CREATE INDEX compensations_record ON compensations (flow, source_key, state);
-- one pending compensation per send, whichever process registers it
CREATE UNIQUE INDEX compensations_pending ON compensations (flow, key) WHERE state = 'pending';
"""

# SQLite schema 5: the inbox of events pushed to flowyard (webhooks, engine/serve/), kept
# once per flow and event id, claimed by the process that takes each through its flow; and
# the slot each scheduled flow last ran for (won by one process)
_V5 = """
CREATE TABLE inbox (
    id BIGSERIAL PRIMARY KEY, flow TEXT NOT NULL, event_id TEXT NOT NULL, topic TEXT,
    scheme TEXT, headers TEXT, body BYTEA NOT NULL, received_at DOUBLE PRECISION NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1, status TEXT NOT NULL DEFAULT 'pending',
    claimed_by TEXT, claim_pid INTEGER, claim_host TEXT, claim_expires DOUBLE PRECISION,
    done_at DOUBLE PRECISION, run_id TEXT, UNIQUE (flow, event_id));
CREATE INDEX inbox_pending ON inbox (flow, status, id);
CREATE TABLE schedules (
    flow TEXT PRIMARY KEY, last_due DOUBLE PRECISION NOT NULL, holder TEXT,
    claimed_at DOUBLE PRECISION NOT NULL);
"""

MIGRATIONS: list[Migration] = [
    Migration(3, "the state of flowyard 0.1 (SQLite schema 3) and the work queue", _V3),
    Migration(4, "work items (approvals, owners, SLAs, history), compensations, trace labels", _V4),
    Migration(5, "the inbox of pushed events (webhooks) and schedule slots", _V5),
]

LATEST = MIGRATIONS[-1].version

VERSIONS_TABLE = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_versions (
    version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    description TEXT NOT NULL);
"""

# one lock number for "the flowyard schema is being changed", whoever changes it
ADVISORY_LOCK = 0x666C6F77  # "flow"


def pending(current: int) -> list[Migration]:
    """The migrations a state of version ``current`` still needs, in order."""
    return [m for m in MIGRATIONS if m.version > current]
