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
- ``postgres.py``: :class:`~engine.store.postgres.PostgresStore`, a database several
  machines share, with its numbered migrations in ``pg_schema.py``, its work items in
  ``pg_work.py``, its inbox and schedule slots in ``pg_inbox.py`` and the work queue of
  ``flowyard worker`` (:class:`WorkQueue`); imported on use (it needs the ``postgres``
  extra);
- ``location.py``: :class:`StateLocation`, which of the two a ``--state`` names;
- ``null.py``: :class:`NullStore`, what a dry run writes to (nothing);
- ``contract.py``: :class:`StoreContract`, the test suite every store passes.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# StateLocation is what every command needs (which state a --state names); the rest is
# imported on first use (PEP 562): `flowyard validate` opens no state, and importing the
# rows, the protocol and the SQLite store cost it about 25 ms (docs/benchmarks.md, start-up).
from engine.store.location import StateLocation, is_dsn, mask_dsn

if TYPE_CHECKING:
    from engine.store.null import NullStore
    from engine.store.protocol import StateStore, WorkQueue
    from engine.store.rows import (
        ClaimedRecord,
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
        QueuedRecord,
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

_HOMES = {
    "engine.store.null": ("NullStore",),
    "engine.store.protocol": ("StateStore", "WorkQueue"),
    "engine.store.rows": (
        "ClaimedRecord",
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
        "ParkedItem",
        "Progress",
        "Pruned",
        "QueuedRecord",
        "RecordDigest",
        "ReviewItem",
        "Run",
        "ScheduleState",
        "SendState",
        "Trace",
        "holder_id",
    ),
    "engine.store.schema": ("SCHEMA_VERSION",),
    "engine.store.sqlite": ("SqliteStore",),
    "engine.store.work_rows": ("Compensation", "CompensationWrite", "WorkItem"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "SCHEMA_VERSION",
    "ClaimedRecord",
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
    "QueuedRecord",
    "RecordDigest",
    "ReviewItem",
    "Run",
    "ScheduleState",
    "SendState",
    "SqliteStore",
    "StateLocation",
    "StateStore",
    "Trace",
    "WorkItem",
    "WorkQueue",
    "holder_id",
    "is_dsn",
    "mask_dsn",
    "open_store",
]


def open_store(
    location: str | os.PathLike[str] | StateLocation, *, dry_run: bool = False
) -> StateStore:
    """The store at ``location`` (a state file, or a ``postgresql://`` URL); for a dry run,
    a :class:`NullStore` that reads the state (never changing it) when there is one and
    writes nothing."""
    from engine.store.null import NullStore
    from engine.store.sqlite import SqliteStore

    where = StateLocation.of(location)
    if where.dsn is not None:
        return _open_postgres(where.dsn, dry_run)
    assert where.path is not None
    if dry_run:
        return NullStore(SqliteStore(where.path, readonly=True) if where.path.exists() else None)
    return SqliteStore(where.path)


def _open_postgres(dsn: str, dry_run: bool) -> StateStore:
    from engine.store.null import NullStore

    try:
        from engine.store.postgres import PostgresStore
    except ImportError:
        from engine.errors import StateError

        shown = mask_dsn(dsn)
        raise StateError(
            f"state database {shown}: the PostgreSQL driver is not installed; install "
            "flowyard with the postgres extra: pip install 'flowyard[postgres]'",
            shown,
        ) from None
    if not dry_run:
        return PostgresStore(dsn)
    store = PostgresStore(dsn, readonly=True, max_connections=2)
    if store.schema_version() == 0:  # flowyard has not written to this database yet
        store.close()
        return NullStore()
    return NullStore(store)


def __getattr__(name: str) -> Any:
    """A name of the store's API, imported from its module the first time it is asked for."""
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked once: later look-ups find it directly
    return value
