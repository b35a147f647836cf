"""A SQLite database file as a source (queries, incremental by a column) and a sink.

Values always travel as bound parameters; table and column names are checked against
``^[A-Za-z_][A-Za-z0-9_]*$`` and quoted, so no record can change a statement. The SQL
text of a query is never a template: a flow that writes ``{{ ... }}`` into it is refused
when it loads (:meth:`SqliteConnector.lint`), with the same query written with a named
parameter instead. Each call commits before it returns (WAL journal), so a written row
survives the process being killed right after; in a run, the engine groups calls
(:meth:`SqliteConnector.begin_group`): a group's writes go in one transaction, taken at
its first write and committed once, with one sync of the file instead of one per row.
One connection serves every thread, behind a lock; each read uses its own read-only
connection, and the file is switched to WAL on first use, so a long read never holds up
writers (a lookup made while a group is open reads through the group's transaction, so it
sees the group's own writes).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from connectors import _json
from connectors.base import (
    Check,
    Connector,
    Item,
    LaneKind,
    Lint,
    Request,
    Response,
    is_template,
)
from connectors.errors import PermanentError, TransientError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FETCH = 500
_STATEMENTS = 256  # cached statements per connector, a bound for rows of ever-new shapes
_MAX_LOOKUP_ROWS = 10_000  # a lookup answers one record: more rows is a query mistake
# a template in SQL text, with the quotes around it: '{{ record.name }}'
_PASTED = re.compile(r"""(['"]?)\{\{\s*(.*?)\s*\}\}\1""", re.DOTALL)


def quote(name: str) -> str:
    """``name`` quoted as an identifier, after checking it is a plain one."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise PermanentError(f"{name!r} is not a valid table or column name")
    return f'"{name}"'


_IDENTIFIER_SCHEMA = {"type": "string", "pattern": IDENTIFIER.pattern}


class SqliteConnector(Connector):
    """Rows of a SQLite file: read by query or table, written by insert or upsert."""

    name: ClassVar[str] = "sqlite"
    description: ClassVar[str] = "A SQLite database file: queries (source), inserts and upserts."
    lanes: ClassVar[LaneKind] = "none"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "description": "The database file; created (with its directory) when missing.",
            },
            "timeout": {
                "type": "number",
                "minimum": 0,
                "default": 5,
                "description": "Seconds to wait for another writer's lock before the call "
                "fails as transient ('database is locked').",
            },
        },
    }
    read_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        # query or table, not both: if/then rather than oneOf, for a precise message.
        "if": {"required": ["query"]},
        "then": {"not": {"required": ["table"]}},
        "else": {"required": ["table"], "not": {"required": ["params"]}},
        "properties": {
            "query": {
                "type": "string",
                "description": "A SELECT. It may use the named parameter :cursor, which is "
                "NULL on the first run: write 'WHERE :cursor IS NULL OR col > :cursor'; "
                "other values come from params. Never a template.",
            },
            "params": {
                "type": "object",
                "description": "Values of the query's other named parameters (:name), bound, "
                "never pasted into the SQL; e.g. {since: '{{ vars.since }}'}.",
            },
            "table": {
                **_IDENTIFIER_SCHEMA,
                "description": "Read every row of this table (instead of a query).",
            },
            "cursor": {
                "type": "string",
                "description": "Column whose value is each row's position. With table, rows "
                "are read in its order, after the last committed value.",
            },
        },
    }
    call_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        # a write (table and row) or a lookup (query), never both; if/then per key
        # rather than oneOf, so the flow validator names the key that does not belong
        "allOf": [
            *(
                {
                    "if": {"required": ["query"]},
                    "then": {"not": {"required": [name]}},
                    **({"else": {"required": [name]}} if name in ("table", "row") else {}),
                }
                for name in ("table", "row", "mode", "key")
            ),
            *(
                {"if": {"required": ["query"]}, "else": {"not": {"required": [name]}}}
                for name in ("params", "not_found")
            ),
            {
                "if": {"properties": {"mode": {"const": "upsert"}}, "required": ["mode"]},
                "then": {"required": ["key"]},
            },
        ],
        "properties": {
            "query": {
                "type": "string",
                "minLength": 1,
                "description": "A lookup instead of a write: a SELECT whose named parameters "
                "(:name) come from params; the response body is the list of rows. It runs "
                "on a read-only connection. Never a template: record values go in params.",
            },
            "params": {
                "type": "object",
                "description": "Values of the query's named parameters, bound (never pasted "
                "into the SQL); lists and objects are bound as JSON text (for json_each).",
            },
            "not_found": {
                "type": "string",
                "minLength": 1,
                "description": "When the query returns no row, fail the call as permanent "
                "with this message (the record is dead-lettered with it).",
            },
            "table": {
                **_IDENTIFIER_SCHEMA,
                "description": "Table to write; created from the row's columns when missing.",
            },
            "mode": {
                "type": "string",
                "enum": ["insert", "upsert"],
                "default": "insert",
                "description": "insert adds a row; upsert replaces the row with the same key.",
            },
            "key": {
                "type": "array",
                "minItems": 1,
                "items": _IDENTIFIER_SCHEMA,
                "description": "Columns that identify a row for upsert (its conflict target).",
            },
            "row": {
                "type": "object",
                "minProperties": 1,
                "description": "Column -> value. Objects and lists are stored as JSON text, "
                "decimals as text with their exact digits.",
            },
        },
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self._path = Path(str(self.options.get("path", "")))
        self._timeout = float(self.options.get("timeout", 5))
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._columns: dict[str, set[str]] = {}  # tables this connector has seen
        self._keyed: set[tuple[str, tuple[str, ...]]] = set()
        # shapes of rows whose table, columns and key index this connection has made sure of
        self._ready: set[tuple[Any, ...]] = set()
        # built statements by (table, columns, upsert key): rows of one table share them
        self._statements: dict[tuple[Any, ...], str] = {}
        # lookups (query calls) share one read-only connection, opened on first use
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        # begin_group was called: writes go into one transaction until commit_group
        self._grouped = False
        self._group_lost: str | None = None  # why the group's transaction ended early

    @classmethod
    def lint(
        cls, role: str, options: Mapping[str, Any], connection: Mapping[str, Any]
    ) -> list[Lint]:
        """Refuse a template in the SQL text of a query: values go in as parameters."""
        query = options.get("query")
        if role not in ("source", "action") or not is_template(query):
            return []
        sql, params = _parameterised(query)
        example = f"query: {sql!r}"
        if params:
            example += f" with params: {{{', '.join(f'{k}: {v!r}' for k, v in params.items())}}}"
        return [
            Lint(
                ("query",),
                "the SQL text is a template: a value pasted into SQL can rewrite the query "
                "(a record holding x' UNION SELECT ... reads other tables). Write a named "
                f"parameter in the SQL and give its value in params: {example}",
                severity="error",
            )
        ]

    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        try:
            path = self.resolve_path(self._path)
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                # WAL lets a long read and the writes run side by side; it is a
                # property of the file, so the first connection to set it wins.
                db.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:
                if not read_only:  # a reader can still read another journal mode
                    raise
            if read_only:
                db.execute("PRAGMA query_only = ON")
        except (OSError, sqlite3.Error) as exc:
            raise _classify(exc, f"cannot open {self._path.name}") from None
        return db

    def check(self, source: Mapping[str, Any] | None = None) -> list[Check]:
        """Open the database read-only and count its tables; a database that is not there
        yet is fine when its folder is writable (the first write makes it)."""
        path = self.resolve_path(self._path)
        if not path.exists():
            folder = path.parent
            while not folder.exists() and folder.parent != folder:
                folder = folder.parent
            can = folder.is_dir() and os.access(folder, os.W_OK)
            detail = (
                "not there yet: the first write makes it"
                if can
                else (f"not there, and {folder} is not a writable folder to make it in")
            )
            return [Check(f"open {path}", can, detail)]
        try:
            db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=self._timeout)
            try:
                (tables,) = db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                ).fetchone()
            finally:
                db.close()
        except sqlite3.Error as exc:
            return [Check(f"open {path}", False, f"{type(exc).__name__}: {exc}")]
        return [Check(f"open {path}", True, f"{tables} table(s)")]

    # -- groups --------------------------------------------------------------

    def begin_group(self) -> bool:
        """Hold the next writes in one transaction, taken at the first of them (``BEGIN
        IMMEDIATE``: other writers of the file wait until the group commits)."""
        with self._lock:
            self._grouped, self._group_lost = True, None
        return True

    def commit_group(self) -> None:
        """Commit the group's transaction: every row of the group, or none."""
        with self._lock:
            db, lost = self._db, self._group_lost
            self._grouped, self._group_lost = False, None
            if lost is not None:
                if db is not None and db.in_transaction:
                    self._rollback(db)
                raise PermanentError(
                    f"the group's transaction on {self._path.name} ended early ({lost}): "
                    "none of its rows were kept"
                )
            if db is None or not db.in_transaction:
                return
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(db)
                raise _classify(exc, f"committing the group's rows to {self._path.name}") from None

    def rollback_group(self) -> None:
        """Discard the group's rows."""
        with self._lock:
            self._grouped, self._group_lost = False, None
            if self._db is not None and self._db.in_transaction:
                self._rollback(self._db)

    def _rollback(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolled it back already
        # tables, columns and indexes made in the transaction went with it
        self._forget_tables()

    def _forget_tables(self) -> None:
        """Forget what this connection knows of the tables: it makes sure of them again."""
        self._columns.clear()
        self._keyed.clear()
        self._ready.clear()

    def close(self) -> None:
        """Close the write and lookup connections; a later call opens them again (an
        open group's rows are discarded)."""
        with self._lock:
            self._grouped = False
            db, self._db = self._db, None
            self._forget_tables()
        with self._read_lock:
            reader, self._reader = self._reader, None
        for connection in (db, reader):
            if connection is not None:
                connection.close()

    # -- source --------------------------------------------------------------

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        """Yield rows as dicts, fetched a few hundred at a time; position = the cursor column."""
        column = options.get("cursor")
        if options.get("query"):
            extra = options.get("params") or {}
            if not isinstance(extra, Mapping):
                raise PermanentError("params must be an object of parameter name -> value")
            params = {name: _value(v) for name, v in extra.items()}
            params["cursor"] = cursor
            sql = options["query"]
        else:
            sql, params = f"SELECT * FROM {quote(options['table'])}", {}
            if column:
                if cursor is not None:
                    sql += f" WHERE {quote(column)} > :cursor"
                    params["cursor"] = cursor
                sql += f" ORDER BY {quote(column)}"
        if not self.resolve_path(self._path).exists():
            raise PermanentError(f"no database file {self._path.name}")
        db = self._connect(read_only=True)
        db.row_factory = sqlite3.Row
        try:
            try:
                rows = db.execute(sql, params)
            except sqlite3.Error as exc:
                raise _classify(exc, "the read query failed") from None
            while True:
                try:
                    batch = rows.fetchmany(_FETCH)
                except sqlite3.Error as exc:
                    raise _classify(exc, "reading rows failed") from None
                if not batch:
                    return
                for row in batch:
                    data = dict(row)
                    yield Item(data=data, position=data.get(column) if column else None)
        finally:
            db.close()

    # -- sink ----------------------------------------------------------------

    def call(self, request: Request) -> Response:
        """Insert or upsert one row and commit; body is ``{"rowid": ..., "changes": ...}``.

        With ``query``, look rows up instead: the body is the list of rows.
        """
        options = request.options
        if "query" in options:
            return Response(body=self._lookup(options))
        table = options["table"]
        row = options["row"]
        if not isinstance(row, Mapping) or not row:
            raise PermanentError("row must be a non-empty object of column -> value")
        upsert = options.get("mode", "insert") == "upsert"
        key: Sequence[str] = options.get("key") or ()
        if upsert and not key:
            raise PermanentError("upsert needs key: the columns that identify a row")
        shape = (table, tuple(row), tuple(key), upsert)
        known = True  # a shape that can be remembered
        try:
            sql = self._statements[shape]  # a row of a shape seen before: checked then
        except KeyError:
            sql = self._checked_statement(table, row, key, upsert)
            if len(self._statements) >= _STATEMENTS:
                self._statements.clear()
            self._statements[shape] = sql
        except TypeError:  # a name that is not a string: _statement says which
            known, sql = False, self._checked_statement(table, row, key, upsert)
        values = [_value(value) for value in row.values()]
        with self._lock:
            held = False
            try:
                db = self._db = self._db or self._connect()
                if self._grouped and not db.in_transaction:
                    db.execute("BEGIN IMMEDIATE")
                held = db.in_transaction
                if not known or shape not in self._ready:
                    self._prepare(db, table, list(row), tuple(key) if upsert else ())
                    if known:
                        if len(self._ready) >= _STATEMENTS:
                            self._ready.clear()  # bounded too: it is made sure of again
                        self._ready.add(shape)
                before = db.total_changes
                returned = db.execute(sql, values).fetchall()
                changes = db.total_changes - before
            except sqlite3.Error as exc:
                if held and not db.in_transaction:
                    # SQLite rolled the whole group back (a full disk, an I/O error): the
                    # rows written before this one are gone too, and the commit says so
                    self._group_lost = str(exc)
                    self._forget_tables()
                raise _classify(exc, f"writing to {table} failed") from None
        return Response(body={"rowid": returned[0][0] if returned else None, "changes": changes})

    @staticmethod
    def _checked_statement(
        table: str, row: Mapping[str, Any], key: Sequence[str], upsert: bool
    ) -> str:
        missing = [column for column in key if column not in row]
        if missing:
            raise PermanentError(f"row has no value for key column(s) {missing}")
        return _statement(table, list(row), key if upsert else None)

    def _lookup(self, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Rows of a read-only query with bound parameters, at most ``_MAX_LOOKUP_ROWS``."""
        params = options.get("params") or {}
        if not isinstance(params, Mapping):
            raise PermanentError("params must be an object of parameter name -> value")
        if self._grouped:
            with self._lock:
                db = self._db
                if db is not None and db.in_transaction:
                    return self._group_lookup(db, options, params)
        with self._read_lock:
            try:
                if self._reader is None:
                    if not self.resolve_path(self._path).exists():
                        raise PermanentError(f"no database file {self._path.name}")
                    self._reader = self._connect(read_only=True)
                    self._reader.row_factory = sqlite3.Row
                cursor = self._reader.execute(
                    options["query"], {name: _value(v) for name, v in params.items()}
                )
                rows = cursor.fetchmany(_MAX_LOOKUP_ROWS + 1)
                cursor.close()
            except sqlite3.Error as exc:
                raise _classify(exc, "the lookup query failed") from None
        if len(rows) > _MAX_LOOKUP_ROWS:
            raise PermanentError(
                f"the lookup query returned more than {_MAX_LOOKUP_ROWS} rows; narrow it"
            )
        if not rows and options.get("not_found"):
            raise PermanentError(str(options["not_found"]))
        return [dict(row) for row in rows]

    def _group_lookup(
        self, db: sqlite3.Connection, options: Mapping[str, Any], params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """A lookup through the open group's transaction (it sees the group's rows), as
        read-only as one through the reader: ``query_only`` while it runs."""
        try:
            db.execute("PRAGMA query_only = ON")
            try:
                cursor = db.execute(
                    options["query"], {name: _value(v) for name, v in params.items()}
                )
                rows = cursor.fetchmany(_MAX_LOOKUP_ROWS + 1)
                names = [column[0] for column in cursor.description or ()]
                cursor.close()
            finally:
                db.execute("PRAGMA query_only = OFF")
        except sqlite3.Error as exc:
            raise _classify(exc, "the lookup query failed") from None
        if len(rows) > _MAX_LOOKUP_ROWS:
            raise PermanentError(
                f"the lookup query returned more than {_MAX_LOOKUP_ROWS} rows; narrow it"
            )
        if not rows and options.get("not_found"):
            raise PermanentError(str(options["not_found"]))
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _prepare(
        self, db: sqlite3.Connection, table: str, names: list[str], key: tuple[Any, ...]
    ) -> None:
        """Create the table, add missing columns, ensure a unique index on the upsert key."""
        known = self._columns.get(table)
        if known is None or not known.issuperset(names):
            known = {info[1] for info in db.execute(f"PRAGMA table_info({quote(table)})")}
            if not known:
                columns = ", ".join(quote(name) for name in names)
                primary = f", PRIMARY KEY ({', '.join(quote(k) for k in key)})" if key else ""
                db.execute(f"CREATE TABLE IF NOT EXISTS {quote(table)} ({columns}{primary})")
                known = set(names)
                if key:
                    self._keyed.add((table, key))
            for name in names:
                if name not in known:
                    db.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)}")
                    known.add(name)
            self._columns[table] = known
        if key and (table, key) not in self._keyed:
            index = quote(f"{table}_{'_'.join(key)}_key")
            target = ", ".join(quote(k) for k in key)
            db.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {quote(table)} ({target})")
            self._keyed.add((table, key))


def _statement(table: str, columns: list[str], key: Sequence[str] | None) -> str:
    """The INSERT (or upsert, when ``key`` is given) of one row, names checked and quoted."""
    names = [quote(column) for column in columns]
    sql = f"INSERT INTO {quote(table)} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    if key is not None:
        target = ", ".join(quote(column) for column in key)
        updates = [f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in key]
        action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        sql += f" ON CONFLICT ({target}) {action}"
    return sql + " RETURNING rowid"


def _parameterised(query: str) -> tuple[str, dict[str, str]]:
    """``query`` with each ``{{ expression }}`` (and the quotes around it) replaced by a
    named parameter, and the parameters' templates: what a flow should write instead."""
    params: dict[str, str] = {}

    def parameter(match: re.Match[str]) -> str:
        # the last name before any filter: record.customer.email | lower -> email
        names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", match.group(2).split("|")[0])
        name = base = names[-1] if names else "value"
        n = 1
        while name in params and params[name] != "{{ " + match.group(2) + " }}":
            n += 1
            name = f"{base}_{n}"
        params[name] = "{{ " + match.group(2) + " }}"
        return f":{name}"

    return _PASTED.sub(parameter, query), params


_AS_IS = frozenset({str, int, float, bool, type(None), bytes})


def _value(value: Any) -> Any:
    """A Python value as SQLite stores it: JSON text for objects, exact text for decimals."""
    if type(value) in _AS_IS:  # most columns: one look-up instead of three isinstance
        return value
    if isinstance(value, dict | list | tuple):
        return _json.dumps(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def _classify(exc: Exception, what: str) -> Exception:
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in message or "busy" in message):
        return TransientError(f"{what}: {message}")
    return PermanentError(f"{what}: {message}")
