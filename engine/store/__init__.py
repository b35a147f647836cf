"""The state store: what a run must remember, behind one declared protocol.

Idempotency keys with request fingerprints and stored responses, source cursors, runs,
per-record traces, work items (dead letters, review items, approvals) and
compensations, the digest of each record that last went through cleanly
(engine/unchanged.py), per-flow leases, the inbox of events pushed to flowyard and the slot
each scheduled flow last ran for (engine/serve/). Everything the engine
persists goes through :class:`StateStore`:

- ``protocol.py``: :class:`StateStore`, the interface, with what every store promises;
- ``rows.py``: the typed rows it takes and returns;
- ``sqlite.py``: :class:`SqliteStore`, the embedded default, with its layout and upgrades
  in ``schema.py`` and the faults of its file in ``faults.py``;
- ``null.py``: :class:`NullStore`, what a dry run writes to (nothing);
- ``contract.py``: :class:`StoreContract`, the test suite every store passes.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.store.null import NullStore
from engine.store.protocol import StateStore
from engine.store.rows import (
    Cursor,
    DeadLetter,
    DigestWrite,
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
    SendState,
    Trace,
    holder_id,
)
from engine.store.schema import SCHEMA_VERSION
from engine.store.sqlite import SqliteStore
from engine.store.work_rows import Compensation, CompensationWrite, WorkItem

__all__ = [
    "SCHEMA_VERSION",
    "Compensation",
    "CompensationWrite",
    "Cursor",
    "DeadLetter",
    "DigestWrite",
    "FlowHealth",
    "InboxAdded",
    "InboxEntry",
    "InboxEvent",
    "KeyState",
    "KeyWrite",
    "Lease",
    "NullStore",
    "ParkedItem",
    "Progress",
    "Pruned",
    "RecordDigest",
    "ReviewItem",
    "Run",
    "ScheduleState",
    "SendState",
    "SqliteStore",
    "StateStore",
    "Trace",
    "WorkItem",
    "holder_id",
    "open_store",
]


def open_store(path: str | os.PathLike[str], *, dry_run: bool = False) -> StateStore:
    """The store of the state file at ``path``; for a dry run, a :class:`NullStore` that
    reads the file (read-only) when there is one and writes nothing."""
    if dry_run:
        return NullStore(SqliteStore(path, readonly=True) if Path(path).exists() else None)
    return SqliteStore(path)
