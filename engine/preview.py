"""What a mapping makes of one record, and everything wrong with it, at once.

``flowyard map MAPPING RECORD`` is the playground for writing a mapping: it maps one
record the way a flow's ``map`` step would, lists the result field by field, and reports
every problem in one go: each field the record cannot give (missing, empty, invalid, in
the record's own terms, as the mapping compiler reports them), then, for a record that
mapped, every rule of the canonical schema it breaks (all of them, with jsonschema, not
just the first as the per-record validator of a run stops at), each with its path in
the result and, where it can be told, the field of the record it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from engine import packaged
from engine.errors import FlowError, Problem
from engine.mapping import CompiledMapping, load_mapping
from engine.stubs import plain
from engine.templates import TemplateRenderError
from engine.validation import load_schema
from engine.yamlpos import format_path

# "<source>_<model>_to_canonical" names a mapping into the canonical <model>; a refund
# becomes the canonical return
_ALIASES = {"refund": "return"}


@dataclass
class MappingProblem:
    """One problem of the record: ``kind`` is ``mapping`` (the mapping could not fill a
    field) or ``schema`` (the result breaks a rule of the canonical schema). ``field`` is
    the path in the result, ``source`` the record's own field where it is known."""

    kind: str
    field: str
    source: str
    message: str

    def __str__(self) -> str:
        if self.kind == "mapping":  # "line_items[2].sku is missing (field lines[2].sku)"
            if self.source:
                return f"{self.source} {self.message}" + (
                    f" (field {self.field})" if self.field else ""
                )
            return self.message
        origin = f" (from the record's {self.source})" if self.source else ""
        return f"{self.field}: {self.message}{origin}"

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "field": self.field,
            "source": self.source,
            "message": self.message,
        }


@dataclass
class MappingPreview:
    """The result of mapping one record: ``record`` (None when the mapping failed), its
    ``fields`` as (path, value) leaves, the schema it was checked against and every
    problem."""

    mapping: str
    mapping_file: str
    schema: str | None
    schema_file: str | None
    record: Any = None
    problems: list[MappingProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def fields(self) -> list[tuple[str, Any]]:
        """Every leaf of the result, with its path (``lines[0].sku``), in order."""
        return leaves(self.record) if self.record is not None else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "mapping_file": self.mapping_file,
            "schema": self.schema,
            "schema_file": self.schema_file,
            "ok": self.ok,
            "record": plain(self.record),
            "problems": [p.to_dict() for p in self.problems],
        }


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """``(path, value)`` of every scalar inside ``value``; an empty list or object is a leaf."""
    if isinstance(value, dict) and value:
        return [
            leaf
            for key, item in value.items()
            for leaf in leaves(item, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(value, list) and value:
        return [leaf for i, item in enumerate(value) for leaf in leaves(item, f"{path}[{i}]")]
    return [(path, value)]


def find_mapping(name: str) -> Path | None:
    """A mapping by path (``mappings/x.yaml``) or by the name of a built-in one."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or "/" in name:
        return path if path.is_file() else None
    return packaged.find_mapping(name)


def schema_for(mapping: str, near: Path) -> tuple[str | None, Path | None]:
    """The canonical schema a mapping's name says it makes: ``X_to_<schema>``, or
    ``<source>_<model>_to_canonical`` for the model; looked for in ``canonical/`` beside
    the mapping, then among the built-in ones. (None, None) when the name says none."""
    head, sep, tail = mapping.rpartition("_to_")
    if not sep:
        return None, None
    if tail == "canonical":
        words = head.split("_")
        candidates = ["_".join(words[i:]) for i in range(len(words))]
        candidates = [_ALIASES.get(c, c) for c in candidates]
    else:
        candidates = [tail]
    for name in candidates:
        path = find_schema(name, near)
        if path is not None:
            return name, path
    return None, None


def find_schema(name: str, near: Path | None = None) -> Path | None:
    """A canonical schema by path or by name, beside ``near`` first, then built in."""
    path = Path(name)
    if path.suffix == ".json" or "/" in name:
        return path if path.is_file() else None
    if near is not None:
        local = near / "canonical" / f"{name}.schema.json"
        if local.is_file():
            return local
    return packaged.find_schema(name)


def preview(
    env: Any,
    mapping: str,
    record: Any,
    *,
    schema: str | None = None,
    check_schema: bool = True,
    vars: dict[str, Any] | None = None,
) -> MappingPreview:
    """Map ``record`` with ``mapping`` (a path or a built-in name) and check the result
    against ``schema`` (a path or a name; by default the one the mapping's name says).

    Raises :class:`FlowError` when the mapping or the schema cannot be used, listing every
    problem of their files.
    """
    path = find_mapping(mapping)
    if path is None:
        known = packaged.mapping_names()
        raise FlowError(
            [
                Problem(
                    mapping,
                    None,
                    None,
                    "",
                    "no such mapping file, and no built-in mapping "
                    f"of that name; the built-in ones: {', '.join(known) or 'none'}",
                )
            ]
        )
    compiled, problems = load_mapping(str(path), env)
    errors = [p for p in problems if p.severity == "error"]
    if compiled is None or errors:
        raise FlowError(errors or problems)
    schema_name, schema_path = None, None
    if check_schema:
        if schema is not None:
            schema_name, schema_path = schema, find_schema(schema, path.parent)
            if schema_path is None:
                raise FlowError(
                    [
                        Problem(
                            schema,
                            None,
                            None,
                            "",
                            "no such schema file, and no canonical "
                            f"schema of that name; the built-in ones: "
                            f"{', '.join(packaged.schema_names())}",
                        )
                    ]
                )
        else:
            schema_name, schema_path = schema_for(compiled.name, path.parent)
    result = MappingPreview(
        compiled.name, str(path), schema_name, str(schema_path) if schema_path else None
    )
    result.record, result.problems = _map(compiled, record, vars or {})
    if result.record is not None and schema_path is not None:
        loaded, schema_problems = load_schema(str(schema_path))
        if loaded is None:
            raise FlowError(schema_problems)
        result.problems += _schema_problems(loaded, result.record, record)
    return result


def _map(
    compiled: CompiledMapping, record: Any, vars: dict[str, Any]
) -> tuple[Any, list[MappingProblem]]:
    context = {"vars": vars, "meta": {"key": _key(record)}, "run": {"id": "map", "flow": "map"}}
    try:
        return compiled(record, context), []
    except TemplateRenderError as exc:
        return None, [
            MappingProblem("mapping", p.field, p.where, p.state if p.where else str(p))
            for p in exc.problems
        ]


def _key(record: Any) -> str:
    if isinstance(record, dict) and record.get("id") is not None:
        return str(record["id"])
    return "the record"


def _schema_problems(schema: dict[str, Any], result: Any, source: Any) -> list[MappingProblem]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(result), key=lambda e: list(map(str, e.absolute_path)))
    index = _Identities(source)
    out = []
    for err in errors:
        path = list(err.absolute_path)
        out.append(
            MappingProblem(
                "schema",
                format_path(path) or "(record)",
                index.path_of(err.instance) or "",
                f"{err.message} (rule: {err.validator})",
            )
        )
    return out


class _Identities:
    """Where a value of the result came from in the record, when it is that very object
    (a field passed through unchanged) and sits at one place only."""

    def __init__(self, record: Any):
        self.paths: dict[int, list[str]] = {}
        stack = [(record, "")]
        while stack:
            value, path = stack.pop()
            self.paths.setdefault(id(value), []).append(path)
            if isinstance(value, dict):
                stack += [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
            elif isinstance(value, list):
                stack += [(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def path_of(self, value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        if (isinstance(value, int) and -5 <= value <= 256) or (
            isinstance(value, str) and len(value) <= 1
        ):
            return None  # shared by Python: could be anywhere
        found = self.paths.get(id(value), [])
        return found[0] if len(found) == 1 and found[0] else None
