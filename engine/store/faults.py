"""Faults of the SQLite state file, told as one line a person can act on.

:func:`check_state_file` refuses, cheaply, a path that cannot be a state file before
SQLite opens it; :func:`state_error` turns an SQLite or OS error into a
:class:`~engine.errors.StateError` naming the file and the likely cause; :class:`Connection`
is the store's connection, through which no SQLite error of the file escapes untold.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import StateError

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


def translated(exc: sqlite3.Error, path: Path) -> BaseException:
    """The error to raise for ``exc``: a :class:`StateError`, except for a mistake in a
    statement, which is a bug, not a fault of the file (kept as it is)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return exc
    return state_error(exc, path)


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


class Connection:
    """The store's SQLite connection: a failure of the file becomes a :class:`StateError`
    naming it, and text no encoding can write (a lone surrogate) is stored escaped instead
    of failing the batch it is in."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._raw = conn
        self._path = path

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        """Run a statement (its rows are read with :meth:`fetchone` and :meth:`fetchall`)."""
        try:
            try:
                return self._raw.execute(sql, params)
            except UnicodeEncodeError:
                return self._raw.execute(sql, _storable(params))
        except sqlite3.Error as exc:
            raise translated(exc, self._path) from None

    def executemany(self, sql: str, rows: list[Any]) -> sqlite3.Cursor:
        try:
            try:
                return self._raw.executemany(sql, rows)
            except UnicodeEncodeError:
                return self._raw.executemany(sql, [_storable(r) for r in rows])
        except sqlite3.Error as exc:
            raise translated(exc, self._path) from None

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, or None (a damaged page met reading it is told too)."""
        try:
            return self.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise translated(exc, self._path) from None

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a query."""
        try:
            return self.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translated(exc, self._path) from None

    def dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Every row of a query, as a dict by column name."""
        try:
            cur = self.execute(sql, params)
            cols = [c[0] for c in cur.description or []]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        except sqlite3.Error as exc:
            raise translated(exc, self._path) from None

    def executescript(self, sql: str) -> None:
        try:
            self._raw.executescript(sql)
        except sqlite3.Error as exc:
            raise translated(exc, self._path) from None

    def close(self) -> None:
        self._raw.close()

    @property
    def raw(self) -> sqlite3.Connection:
        return self._raw

    @property
    def in_transaction(self) -> bool:
        return self._raw.in_transaction
