"""Files as sources and sinks: NDJSON, CSV and JSON arrays.

Reading streams NDJSON and CSV line by line, so a file of any size is read in bounded
memory; a JSON array file is loaded whole and is meant for small inputs. An input line
that cannot be parsed becomes an error :class:`~connectors.base.Item` with its line
number and raw text, and reading goes on with the next line.

Writing is durable on return: NDJSON and CSV append one complete line per call in a
single ``write`` to a file opened for appending, so a process killed right after a call
never leaves a lost or half-written record. A JSON array file is rewritten atomically
(temporary file in the same directory, then ``os.replace``) on every call, which costs
the whole file per record: use it for small outputs only.

Where a send may write: with ``base_dir`` on the connection, nowhere outside it (a path
rendered from a record cannot leave it with ``..``, ``~`` or an absolute path). Without
it, anywhere the process may write, so a send whose path is rendered from record data
and whose connection has no ``base_dir`` is warned about when the flow loads.

A call with ``match`` instead of ``record`` is a lookup (for ``enrich``): the rows of a
small file (an item map, a location map) whose columns hold the given values. The file is
read and indexed once, and again only when it changes on disk.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
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
    depends_on_record,
)
from connectors.errors import PermanentError

FORMATS = ("ndjson", "json", "csv")
_EXTENSIONS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv"}
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\udc80-\udcff]")
_MISSING = object()
# a lookup file's rows by the values of the matched columns
_Index = dict[tuple[str, ...], list[dict[str, Any]]]

_FORMAT_SCHEMA = {
    "type": "string",
    "enum": list(FORMATS),
    "description": "File format; by default taken from the extension "
    "(.ndjson/.jsonl: ndjson, .json: json, .csv: csv).",
}
_PATH_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "description": "The file; a relative path is resolved against the connection's base_dir "
    "(or the flow file's folder).",
}


class FileConnector(Connector):
    """Read records from, and append records to, local files."""

    name: ClassVar[str] = "file"
    description: ClassVar[str] = "Local files: NDJSON, CSV and JSON arrays (source and sink)."
    lanes: ClassVar[LaneKind] = "none"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "base_dir": {
                "type": "string",
                "description": "Directory that paths are resolved against (a relative one "
                "from the flow file's folder). When set, no path may point outside it: a path "
                "rendered from a record cannot escape with '..', '~' or an absolute path.",
            },
        },
    }
    read_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": _PATH_SCHEMA,
            "format": _FORMAT_SCHEMA,
            "encoding": {
                "type": "string",
                "default": "utf-8",
                "description": "Text encoding of the file (ASCII-compatible for ndjson and csv, "
                "e.g. utf-8, latin-1, cp1252).",
            },
            "delimiter": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1,
                "default": ",",
                "description": "CSV field delimiter.",
            },
            "group_by": {
                "type": "string",
                "minLength": 1,
                "description": "CSV only: consecutive rows with the same value in this column "
                'become one record {"<column>": value, "rows": [row, ...]}, e.g. the lines '
                "of one invoice. A group next to an unreadable row is not read without it: "
                "it becomes an error item naming that row.",
            },
        },
    }
    call_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        # a write (record) or a lookup (match), never both; if/then per key rather than
        # oneOf, so the flow validator names the key that does not belong
        "allOf": [
            {
                "if": {"required": ["match"]},
                "then": {"not": {"required": ["record"]}},
                "else": {"required": ["record"]},
            },
            *(
                {"if": {"required": ["match"]}, "else": {"not": {"required": [name]}}}
                for name in ("not_found", "encoding")
            ),
        ],
        "properties": {
            "path": _PATH_SCHEMA,
            "format": _FORMAT_SCHEMA,
            "record": {
                "description": "The value to write: any JSON value for ndjson and json, "
                "an object (column -> value) for csv.",
            },
            "match": {
                "type": "object",
                "minProperties": 1,
                "description": "A lookup instead of a write: column -> value; the response "
                "body is the list of the file's rows holding all these values, compared as "
                "text (12 matches '12'). The file is indexed once, again when it changes.",
            },
            "not_found": {
                "type": "string",
                "minLength": 1,
                "description": "With match: when no row matches, fail the call as permanent "
                "with this message (the record is dead-lettered with it).",
            },
            "encoding": {
                "type": "string",
                "description": "With match: text encoding of the file (default utf-8).",
            },
            "delimiter": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1,
                "default": ",",
                "description": "CSV field delimiter.",
            },
        },
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self._base_dir: tuple[Any, Path | None] = (object(), None)  # (root, base_dir)
        # One lock for all writes: the CSV header check and the JSON rewrite are
        # read-modify-write, and appends stay ordered per connector.
        self._lock = threading.Lock()
        self._csv_headers: dict[Path, list[str]] = {}
        self._lookups = _LookupCache()

    @classmethod
    def lint(
        cls, role: str, options: Mapping[str, Any], connection: Mapping[str, Any]
    ) -> list[Lint]:
        """Warn about a send whose path is rendered from a record, with no base_dir."""
        if (
            role != "action"
            or connection.get("base_dir")
            or not depends_on_record(options.get("path"))
        ):
            return []
        return [
            Lint(
                ("path",),
                "this path is rendered from record data and the connection has no base_dir: "
                "a record can make the send write anywhere this process may ('~/...', "
                "'../...', an absolute path). Set base_dir on the connection (e.g. "
                "base_dir: out); paths then stay inside it",
            )
        ]

    # -- paths ---------------------------------------------------------------

    @property
    def base_dir(self) -> Path | None:
        """``base_dir`` as an absolute path (a relative one from :attr:`root`), or None."""
        root, resolved = self._base_dir
        if root is not self.root:  # the engine sets root after construction
            base_dir = self.options.get("base_dir")
            resolved = self.resolve_path(str(base_dir)).resolve() if base_dir else None
            self._base_dir = (self.root, resolved)
        return resolved

    def _resolve(self, path: str) -> Path:
        base_dir = self.base_dir
        base = base_dir or self.root or Path.cwd()
        resolved = (base / Path(path).expanduser()).resolve()
        if base_dir is not None and not resolved.is_relative_to(base_dir):
            raise PermanentError(f"path {path!r} is outside base_dir")
        return resolved

    @staticmethod
    def _format(path: Path, declared: str | None) -> str:
        fmt = declared or _EXTENSIONS.get(path.suffix.lower())
        if fmt not in FORMATS:
            raise PermanentError(
                f"cannot tell the format of {path.name!r}: set format to one of {FORMATS}"
            )
        return fmt

    # -- source --------------------------------------------------------------

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        """Yield every record of the file; the cursor is ignored (files are not incremental)."""
        path = self._resolve(options["path"])
        fmt = self._format(path, options.get("format"))
        encoding = options.get("encoding", "utf-8")
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise PermanentError(f"cannot open {path}: {exc.strerror}") from None
        with handle:
            if fmt == "ndjson":
                yield from _read_ndjson(handle, encoding)
            elif fmt == "csv":
                rows = _read_csv(handle, encoding, options.get("delimiter", ","))
                group_by = options.get("group_by")
                yield from _grouped(rows, group_by) if group_by else rows
            else:
                data = handle.read()
                try:
                    text = data.decode(encoding)
                except UnicodeDecodeError as exc:
                    raw = data.decode(encoding, "replace")
                    yield Item(error=f"file is not valid {encoding}: {exc.reason}", raw=raw)
                    return
                yield from _read_json_array(text)

    # -- sink ----------------------------------------------------------------

    def check(self, source: Mapping[str, Any] | None = None) -> list[Check]:
        """The source file is there and readable; for a connection sends go through, the
        folder they write in is there and writable (nothing is written)."""
        if source is not None:
            if not isinstance(source.get("path"), str):
                return []
            try:
                path = self._resolve(source["path"])
            except PermanentError as exc:
                return [Check(f"read {source['path']}", False, str(exc))]
            if not path.is_file():
                return [Check(f"read {path}", False, "no such file")]
            if not os.access(path, os.R_OK):
                return [Check(f"read {path}", False, "not readable by this user")]
            return [Check(f"read {path}", True, f"{path.stat().st_size} bytes")]
        checks = []
        folder = self.base_dir or self.root or Path.cwd()
        what = f"write in {folder}" + ("" if self.base_dir else " (paths from the flow's folder)")
        if not folder.is_dir():
            parent = _existing_parent(folder)
            can = parent.is_dir() and os.access(parent, os.W_OK)
            detail = (
                "not there yet: made on the first write"
                if can
                else (f"not there, and it cannot be made ({parent} is not a writable folder)")
            )
            checks.append(Check(what, can, detail))
        elif not os.access(folder, os.W_OK):
            checks.append(Check(what, False, "not writable by this user"))
        else:
            checks.append(Check(what, True, "writable"))
        return checks

    def call(self, request: Request) -> Response:
        """Append (ndjson, csv) or add (json) one record; the write is durable on return.

        With ``match``, look rows up instead (see :class:`_LookupCache`).
        """
        options = request.options
        path = self._resolve(str(options["path"]))
        fmt = self._format(path, options.get("format"))
        if "match" in options:
            return self._lookups.find(self, path, fmt, options)
        record = options["record"]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                if fmt == "ndjson":
                    _append(path, _json.dumps(record) + "\n")
                elif fmt == "csv":
                    self._append_csv(path, record, options.get("delimiter", ","))
                else:
                    _add_to_json_array(path, record)
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"cannot write the record as {fmt}: {exc}") from None
        except OSError as exc:
            raise PermanentError(f"cannot write {path}: {exc.strerror or exc}") from None
        return Response(body={"path": str(path)})

    def _append_csv(self, path: Path, record: Any, delimiter: str) -> None:
        if not isinstance(record, dict):
            raise PermanentError(f"a csv record must be an object, not {type(record).__name__}")
        new_file = not path.exists() or path.stat().st_size == 0
        if new_file:
            header = [str(key) for key in record]
        else:
            header = self._csv_headers.get(path) or _existing_csv_header(path, delimiter)
        extra = [key for key in record if key not in header]
        if extra:
            raise PermanentError(f"record has fields that are not columns of {path.name}: {extra}")
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
        if new_file:
            writer.writerow(header)
        writer.writerow([_csv_cell(record.get(column)) for column in header])
        _append(path, buffer.getvalue())  # header and first row in one write
        self._csv_headers[path] = header


def _append(path: Path, text: str) -> None:
    """One ``write`` on an O_APPEND descriptor: the line lands whole or not at all."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # only a full disk or a signal makes a short write
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
    finally:
        os.close(fd)


def _add_to_json_array(path: Path, record: Any) -> None:
    items: list[Any] = []
    if path.exists() and path.stat().st_size:
        existing = _json.loads(path.read_bytes())
        if not isinstance(existing, list):
            raise PermanentError(f"{path.name} does not hold a JSON array")
        items = existing
    items.append(record)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(_json.dumps(items))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _existing_csv_header(path: Path, delimiter: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle, delimiter=delimiter), [])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return _json.dumps(value)
    return str(value)  # a Decimal keeps its digits


# -- lookups -----------------------------------------------------------------


class _LookupCache:
    """Indexes of files looked up with ``match``, rebuilt when a file changes on disk.

    A map file is small and read on every record of a run, so it is read once and kept
    as a dict from the matched columns' values to the rows holding them. A file that
    cannot be read whole (an unparsable line, a missing column) answers every lookup
    with that problem: the row a record needs might be the broken one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (path, format, encoding, delimiter, columns) -> (file stamp, index or problem)
        self._indexes: dict[tuple[Any, ...], tuple[tuple[int, int, int], _Index | str]] = {}

    def find(
        self, connector: FileConnector, path: Path, fmt: str, options: Mapping[str, Any]
    ) -> Response:
        match = options["match"]
        columns = tuple(match)
        encoding = options.get("encoding", "utf-8")
        delimiter = options.get("delimiter", ",")
        try:
            stat = path.stat()
        except OSError as exc:
            raise PermanentError(f"cannot open {path}: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        key = (path, fmt, encoding, delimiter, columns)
        with self._lock:
            cached = self._indexes.get(key)
            if cached is None or cached[0] != stamp:
                cached = (stamp, _index(path, fmt, encoding, delimiter, columns))
                self._indexes[key] = cached
        index = cached[1]
        if isinstance(index, str):
            raise PermanentError(index)
        rows = index.get(tuple(_csv_cell(match[column]) for column in columns), [])
        if not rows and options.get("not_found"):
            raise PermanentError(str(options["not_found"]))
        return Response(body=[dict(row) for row in rows])


def _index(
    path: Path, fmt: str, encoding: str, delimiter: str, columns: tuple[str, ...]
) -> _Index | str:
    """The rows of ``path`` by their values in ``columns``, or why the file cannot be used."""
    index: _Index = {}
    seen: set[str] = set()
    try:
        with open(path, "rb") as handle:
            if fmt == "ndjson":
                items: Iterator[Item] = _read_ndjson(handle, encoding)
            elif fmt == "csv":
                items = _read_csv(handle, encoding, delimiter)
            else:
                try:
                    items = _read_json_array(handle.read().decode(encoding))
                except UnicodeDecodeError as exc:
                    return f"{path} is not valid {encoding}: {exc.reason}"
            for item in items:
                where = f"{path}, line {item.line}" if item.line else str(path)
                if item.error is not None:
                    return f"{where} cannot be read ({item.error}): fix it to look rows up in it"
                if not isinstance(item.data, dict):
                    return f"{where} is not an object (column -> value)"
                seen.update(item.data)
                value = tuple(_csv_cell(item.data.get(column)) for column in columns)
                index.setdefault(value, []).append(item.data)
    except OSError as exc:
        return f"cannot open {path}: {exc.strerror}"
    missing = [column for column in columns if column not in seen]
    if index and missing:
        has = ", ".join(sorted(seen))
        return f"{path} has no column {', '.join(map(repr, missing))} (it has: {has})"
    return index


# -- readers -----------------------------------------------------------------


def _decoded_lines(handle: io.BufferedReader, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; undecodable bytes survive as surrogates."""
    for number, raw in enumerate(handle, start=1):
        text = raw.decode(encoding, "surrogateescape")
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text


def _printable(text: str) -> str:
    """Raw text for a dead letter: undecodable bytes shown as U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _read_ndjson(handle: io.BufferedReader, encoding: str) -> Iterator[Item]:
    for number, raw in enumerate(handle, start=1):
        try:
            line = raw.decode(encoding).rstrip("\r\n")
        except UnicodeDecodeError:
            text = raw.decode(encoding, "replace").rstrip("\r\n")
            yield Item(error=f"line is not valid {encoding}", raw=text, line=number)
            continue
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line or line.isspace():
            continue
        try:
            data = _json.loads(line)
        except json.JSONDecodeError as exc:
            yield Item(
                error=f"invalid JSON: {exc.msg} at column {exc.colno}", raw=line, line=number
            )
            continue
        yield Item(data=data, line=number, text=line)


def _read_csv(handle: io.BufferedReader, encoding: str, delimiter: str) -> Iterator[Item]:
    # csv pulls exactly the lines of one row (more than one when a quoted field holds a
    # newline), so the lines it consumed since the last row are that row's raw text.
    consumed: list[tuple[int, str]] = []

    def lines() -> Iterator[str]:
        for number, text in _decoded_lines(handle, encoding):
            consumed.append((number, text))
            yield text

    # _MISSING marks a short or long row: a sentinel no cell can equal (the stubs want a str)
    reader = csv.DictReader(
        lines(),
        delimiter=delimiter,
        restkey=_MISSING,  # type: ignore[call-overload]
        restval=_MISSING,
    )
    fields: list[str] | None = None
    while True:
        consumed.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _csv_error(f"malformed CSV: {exc}", consumed)
            continue
        if fields is None:  # the header was consumed together with the first row
            fields = reader.fieldnames or []
            while consumed and not consumed[0][1].strip():
                del consumed[0]
            del consumed[:1]
        while consumed and not consumed[0][1].strip():  # blank lines csv skipped
            del consumed[0]
        raw = "".join(text for _, text in consumed)
        if _SURROGATE.search(raw):
            yield _csv_error(f"row is not valid {encoding}", consumed)
        elif _MISSING in row or _MISSING in row.values():
            count = len(fields) + len(row.get(_MISSING, ())) - list(row.values()).count(_MISSING)
            yield _csv_error(f"row has {count} fields, the header has {len(fields)}", consumed)
        else:
            yield Item(data=row, line=consumed[0][0])


def _grouped(rows: Iterator[Item], column: str) -> Iterator[Item]:
    """Consecutive rows with the same ``column`` value as one item ``{column, rows}``.

    An unreadable row might belong to the group before it or the one after it (its
    column cannot be read), so unless both are the same group, both become error items:
    a group is never passed on with a row missing.
    """
    group: Item | None = None
    broken: list[Item] = []  # unreadable rows since the last good row
    spoiled: list[Item] = []  # unreadable rows that spoil the group being built

    def finish(group: Item) -> Item:
        if not spoiled:
            return group
        lines = ", ".join(str(bad.line) for bad in spoiled)
        raw = "\n".join(bad.raw or "" for bad in spoiled)
        reasons = "; ".join(bad.error or "" for bad in spoiled)
        value = group.data[column]
        return Item(
            error=f"{column} {value!r} (rows from line {group.line}) is not read: "
            f"it borders the unreadable row(s) at line {lines} ({reasons})",
            raw=raw,
            line=group.line,
        )

    for item in rows:
        if item.error is not None:
            broken.append(item)
            continue
        if column not in item.data:
            raise PermanentError(f"the CSV file has no column {column!r} to group by")
        value = item.data[column]
        if group is not None and group.data[column] == value:
            spoiled.extend(broken)
            group.data["rows"].append(item.data)
        else:
            if group is not None:
                spoiled.extend(broken)
                yield finish(group)
            group, spoiled = Item(data={column: value, "rows": [item.data]}, line=item.line), []
            spoiled.extend(broken)
        broken = []
    if group is not None:
        spoiled.extend(broken)
        yield finish(group)
    elif broken:  # no readable row at all
        yield from broken


def _csv_error(message: str, consumed: list[tuple[int, str]]) -> Item:
    raw = "".join(text for _, text in consumed).rstrip("\r\n")
    return Item(error=message, raw=_printable(raw), line=consumed[0][0] if consumed else None)


def _after_space(text: str, pos: int) -> int:
    """Where the whitespace from ``pos`` on ends."""
    match = _WHITESPACE.match(text, pos)  # matches, if only the empty string
    return match.end() if match else pos


def _read_json_array(text: str) -> Iterator[Item]:
    """Elements of a top-level array one by one, with the line each starts on."""
    decoder = json.JSONDecoder(parse_float=Decimal)
    text = text.removeprefix("\ufeff")
    pos = _after_space(text, 0)
    line, counted = 1, 0

    def line_at(index: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, index)
        counted = index
        return line

    if not text[pos : pos + 1] == "[":
        try:
            value, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield Item(error=f"invalid JSON: {exc.msg}", raw=text, line=exc.lineno)
            return
        yield Item(data=value, line=line_at(pos))
        return
    pos = _after_space(text, pos + 1)
    if text[pos : pos + 1] == "]":
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield Item(error=f"invalid JSON: {exc.msg}", raw=text[pos:], line=exc.lineno)
            return
        yield Item(data=value, line=line_at(pos))
        pos = _after_space(text, end)
        if text[pos : pos + 1] == ",":
            pos = _after_space(text, pos + 1)
        elif text[pos : pos + 1] == "]":
            return
        else:
            yield Item(error="invalid JSON: expected ',' or ']'", raw=text[pos:], line=line_at(pos))
            return


def _existing_parent(path: Path) -> Path:
    """``path`` or its nearest folder that exists."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
