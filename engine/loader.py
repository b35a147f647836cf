"""Load a flow file: parse, check against the flow schema, resolve names, compile.

Every problem of a file is collected and reported at once, each with file, line,
column, the path inside the flow and what was expected. A flow that loads is a
flow that can run: connectors, mappings, schemas and templates are all resolved
and compiled here, never mid-run.

The checks run in two passes over the same data: the flow schema (types, keys,
forms), then the semantic pass (names, connector options, files, templates). The
semantic pass runs even when the schema found problems, so one validation shows
everything; it skips what the schema already reported, and it never assumes that
a value has the type the schema asks for.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import jsonschema
from jinja2 import nodes

from connectors import Registry
from engine import flow_schema
from engine.errors import FlowError, Problem
from engine.flow_schema import did_you_mean
from engine.mapping import load_mapping
from engine.model import (
    Branch,
    BreakerPolicy,
    CallStep,
    Connection,
    FailStep,
    FilterStep,
    Flow,
    ForeachStep,
    MapStep,
    RetryPolicy,
    RouteStep,
    SetStep,
    Source,
    Step,
    ValidateStep,
)
from engine.templates import (
    CONDITION_HINT,
    CONTEXT_NAMES,
    TemplateProblem,
    check_free_names,
    compile_condition,
    compile_value,
    constant_spec,
    is_template,
    parse_condition,
    parse_template,
)
from engine.validation import compile_validator, load_schema
from engine.yamlpos import format_path, key_position, load_yaml, position, replaced_by_null

__all__ = ["ENV_REF", "check_flow", "did_you_mean", "load_flow", "parse_duration", "parse_rate"]

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_ANY_DOLLAR_REF = re.compile(r"\$\{[^}]*\}?")
_FLOW_VALIDATOR = jsonschema.Draft7Validator(flow_schema.SCHEMA)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# What templates see, where (see engine/steps.py and engine/runner.py).
OPTION_NAMES = ("vars", "run")  # connection and source options, rendered once per run
SOURCE_KEY_NAMES = ("record", "vars")
STEP_NAMES = ("record", "vars", "meta", "run")  # plus parent and the item's name in a foreach


def parse_duration(text: str) -> float:
    """``30d`` / ``12h`` / ``15m`` / ``10s`` -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30d, 12h, 15m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_rate(text: str) -> float:
    """``20/s`` -> 20.0 requests per second."""
    amount, _, unit = text.partition("/")
    return float(amount) / {"s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def env_names(value: Any) -> set[str]:
    """Every ``${env:NAME}`` named anywhere inside ``value``."""
    return {name for _, text in _strings(value, []) for name in ENV_REF.findall(text)}


def _strings(value: Any, path: list[Any]) -> list[tuple[list[Any], str]]:
    """Every string inside ``value`` with its path, depth first."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _strings(v, [*path, k])]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in _strings(v, [*path, i])]
    return []


def _policy(cls: type, value: Any) -> Any:
    """``cls(**value)`` when ``value`` has only ``cls``'s fields, else ``cls()``."""
    names = {f.name for f in dataclass_fields(cls)}
    if isinstance(value, dict) and set(value) <= names:
        return cls(**value)
    return cls()


# Compiled templates, conditions and mappings, per Jinja environment: validating a folder of
# flows that share a mapping, or loading the same flow again, compiles each once. Keys hold
# the source text (a mapping's SHA-256), so an edited file is compiled afresh. The cache
# lives on the environment (whose renderers refer back to it), so it goes when the engine
# that made the environment goes.
_CACHE_ATTRIBUTE = "_flowyard_loader_cache"
_CACHE_SIZE = 1024


def _cached(env: Any, key: tuple, make: Any) -> Any:
    cache = getattr(env, _CACHE_ATTRIBUTE, None)
    if cache is None:
        cache = {}
        setattr(env, _CACHE_ATTRIBUTE, cache)
    if key not in cache:
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    return cache[key]


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""  # the reader reports it


def _try(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except TemplateProblem as exc:
        return exc


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


class _Loader:
    """One load of one flow file; collects problems instead of stopping at the first."""

    def __init__(self, path: Path, registry: Registry, env: Any):
        self.path = path
        self.file = str(path)
        self.registry = registry
        self.env = env
        self.problems: list[Problem] = []
        self.data: Any = None
        self.lines: list[str] = []
        self._reported: list[str] = []  # paths whose value the YAML or the schema refused
        self._mappings: dict[tuple[Path, tuple[str, ...]], Any] = {}
        self._step_names: dict[str, str] = {}
        self._explicit_names: set[str] = set()
        self._counter = 0
        self._used_connections: set[str] = set()
        self._env_ok: list[str] = ["connections", "source"]  # where ${env:NAME} is resolved
        self._vars_used: dict[str, list[Any]] = {}  # vars.NAME read by templates: first use

    # -- reporting -------------------------------------------------------------------------
    def problem(
        self,
        path: list[Any],
        message: str,
        *,
        severity: str = "error",
        at_key: bool = False,
        lineno: int | None = None,
    ) -> None:
        """Report a problem at ``path``; ``lineno`` is a line inside a multi-line template."""
        where = format_path(path)
        if any(_under(where, done) for done in self._reported):
            return  # the value itself was refused already; one message is enough
        line, column = (key_position if at_key else position)(self.data, path) or (None, None)
        if line is not None and lineno and lineno > 1:
            text = self.lines[line - 1][column - 1 :] if line <= len(self.lines) else ""
            # a block scalar (| or >) starts on the line below its indicator
            line += lineno - 1 + (1 if text[:1] in "|>" else 0)
            column = None
        self.problems.append(Problem(self.file, line, column, where, message, severity))

    def refused(self, path: list[Any], message: str, *, at_key: bool = False) -> None:
        """Report a schema problem and keep later checks quiet about the same value."""
        self.problem(path, message, at_key=at_key)
        self._reported.append(format_path(path))

    def _refused_under(self, path: list[Any]) -> bool:
        where = format_path(path)
        return any(_under(done, where) for done in self._reported)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    # -- schema ------------------------------------------------------------------------------
    def check_schema(self) -> None:
        step_schema = flow_schema.SCHEMA["definitions"]["step"]
        errors = sorted(
            _FLOW_VALIDATOR.iter_errors(self.data), key=lambda e: list(map(str, e.path))
        )
        for err in errors:
            path = list(err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                allowed = set(err.schema.get("properties", {}))
                what = "step kind or key" if err.schema is step_schema else "key"
                for extra in sorted(set(err.instance) - allowed, key=str):
                    self.refused(
                        [*path, extra],
                        f"unknown {what} {extra!r}{did_you_mean(extra, allowed)}; expected one "
                        f"of: {', '.join(sorted(allowed))}",
                        at_key=True,
                    )
                continue
            if (
                err.validator == "required"
                and path[-1:] in (["send"], ["enrich"])
                and isinstance(err.instance, dict)
                and "connector" in err.instance
            ):
                continue  # said better by call(): a send goes through a named connection
            where, message, at_key = flow_schema.explain(err)
            if err.validator == "required":
                self.problem(where, message, at_key=at_key)  # the value is there, only short
            else:
                self.refused(where, message, at_key=at_key)

    # -- names and files -----------------------------------------------------------------
    def search_dirs(self) -> list[Path]:
        base = self.path.parent
        dirs = self.data.get("mappings")
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            dirs = ["mappings", "../mappings"]
        return [(base / d).resolve() for d in dirs]

    def check_search_dirs(self) -> None:
        dirs = self.data.get("mappings")
        if not isinstance(dirs, list):
            return
        for i, d in enumerate(dirs):
            if isinstance(d, str) and not (self.path.parent / d).is_dir():
                self.problem(
                    ["mappings", i],
                    f"no folder {(self.path.parent / d).resolve()} (paths are relative to the "
                    "flow file)",
                    severity="warning",
                )

    def shown(self, path: Path) -> Path:
        """``path`` as problems show it: relative to the working directory when the flow's
        own path was given relative (and it lies below), else absolute."""
        if not self.path.is_absolute():
            try:
                return path.relative_to(Path.cwd())
            except ValueError:
                pass
        return path

    def find_file(self, name: str, kind: str, subdir: str, suffix: str, path: list[Any]):
        """A mapping or schema by name (searched in the mapping folders) or by path."""
        if name.endswith((".yaml", ".yml", ".json")) or "/" in name:
            candidate = (self.path.parent / name).resolve()
            if candidate.is_file():
                return self.shown(candidate)
            self.problem(
                path, f"{kind} file not found: {self.shown(candidate)} (relative to the flow file)"
            )
            return None
        known: set[str] = set()
        dirs = [d / subdir if subdir else d for d in self.search_dirs()]
        for d in dirs:
            candidate = d / f"{name}{suffix}"
            if candidate.is_file():
                return self.shown(candidate)
            if d.is_dir():
                known |= {p.name[: -len(suffix)] for p in d.glob(f"*{suffix}")}
        where = ", ".join(str(self.shown(d)) for d in dirs)
        have = f"; found: {', '.join(sorted(known))}" if known else ""
        self.problem(
            path,
            f"unknown {kind} {name!r}{did_you_mean(name, known)}; looked for {name}{suffix} in "
            f"{where}{have}",
        )
        return None

    # -- templates ---------------------------------------------------------------------------
    def check_templates(self, value: Any, path: list[Any], names: tuple[str, ...]) -> bool:
        """Check every template and constant inside ``value``, each at its own position."""
        ok = True
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    self.problem(
                        [*path, key],
                        f"field names are text; YAML read {key!r} as a {type(key).__name__}: "
                        "quote it",
                        at_key=True,
                    )
                    ok = False
                ok = self.check_templates(item, [*path, key], names) and ok
            return ok
        if isinstance(value, list):
            for i, item in enumerate(value):
                ok = self.check_templates(item, [*path, i], names) and ok
            return ok
        if isinstance(value, str) and is_template(value):
            try:
                node = self.parsed(value, parse_template)
            except TemplateProblem as exc:
                self.problem(path, exc.message, lineno=exc.lineno)
                return False
            return self.check_expression(node, path, names, value)
        try:
            constant_spec(value, format_path(path))
        except TemplateProblem as exc:
            self.problem(path, exc.message)
            return False
        return True

    def check_expression(
        self, node: nodes.Node, path: list[Any], names: tuple[str, ...], source: str
    ) -> bool:
        internal = _python_internals(node, source)
        if internal:
            self.problem(
                path,
                f"templates cannot reach Python internals ({internal!r}); the sandbox would "
                "refuse it on every record",
                lineno=node.lineno,
            )
            return False
        message = check_free_names(self.env, node, names)
        if message:
            self.problem(path, message, lineno=node.lineno)
            return False
        for name in _vars_read(node):
            self._vars_used.setdefault(name, path)
        return True

    def parsed(self, source: str, parse: Any) -> nodes.Node:
        """The parsed template or condition (raises TemplateProblem), parsed once."""
        result = _cached(self.env, (parse.__name__, source), lambda: _try(parse, self.env, source))
        if isinstance(result, TemplateProblem):
            raise result
        return result

    def schema(self, found: Path) -> tuple[Any, list[Problem]]:
        schema, problems = load_schema(str(found))
        return (compile_validator(schema) if schema else None), problems

    def template(self, value: Any, path: list[Any], names: tuple[str, ...]) -> Any:
        """``value`` compiled once (a constant, a template, or dicts and lists of them)."""
        if not self.check_templates(value, path, names):
            return None
        try:
            return _cached(
                self.env,
                ("value", repr(value), names),
                lambda: compile_value(self.env, value, names=names),
            )
        except TemplateProblem as exc:  # checked above; a refusal of the compiler itself
            self.problem(path, exc.message)
            return None

    def key_template(self, value: Any, path: list[Any], names: tuple[str, ...], what: str):
        """A key template: a constant would give every record the same key."""
        if not isinstance(value, str):
            return None  # the schema said so
        if not is_template(value):
            self.problem(
                path,
                f'{what} is a template, e.g. "{{{{ record.id }}}}"; the constant {value!r} '
                "would give every record the same key",
            )
            return None
        return self.template(value, path, names)

    def condition(self, expr: Any, path: list[Any], names: tuple[str, ...]) -> Any:
        if not isinstance(expr, str):
            return None  # the schema said so
        if is_template(expr):
            self.problem(path, CONDITION_HINT)
            return None
        try:
            node = self.parsed(expr, parse_condition)
        except TemplateProblem as exc:
            self.problem(path, exc.message, lineno=exc.lineno)
            return None
        if not self.check_expression(node, path, names, expr):
            return None
        try:
            return _cached(
                self.env,
                ("condition", expr, names),
                lambda: compile_condition(self.env, expr, names=names),
            )
        except TemplateProblem as exc:
            self.problem(path, exc.message, lineno=exc.lineno)
            return None

    # -- connectors --------------------------------------------------------------------------
    def check_options(
        self,
        options: dict,
        schema: dict | None,
        path: list[Any],
        what: str,
        *,
        of_connection: set[str] | None = None,
    ) -> None:
        """Check a connector's options against its schema (templates stand for any value).

        ``of_connection``: the connection's own option names, for a read or call option
        that belongs on the connection instead.
        """
        if schema is None:
            return
        for err in jsonschema.Draft7Validator(schema).iter_errors(options):
            if isinstance(err.instance, str) and (
                is_template(err.instance) or ENV_REF.search(err.instance)
            ):
                continue  # rendered later; its type is known only then
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                allowed = set(err.schema.get("properties", {}))
                for extra in sorted(set(err.instance) - allowed, key=str):
                    if of_connection and extra in of_connection and not err.absolute_path:
                        hint = f"; {extra!r} is an option of the connection: put it there"
                    else:
                        hint = did_you_mean(extra, allowed)
                    self.refused(
                        [*path, *err.absolute_path, extra],
                        f"{what} has no option {extra!r}{hint}; its options: "
                        f"{', '.join(sorted(allowed)) or 'none'}",
                        at_key=True,
                    )
                continue
            if err.validator == "required" and isinstance(err.instance, dict):
                missing = [k for k in err.validator_value if k not in err.instance]
                where = list(err.absolute_path)
                key = missing[0] if missing else "?"
                message = (
                    f"{what}: `{format_path(where)}` needs `{key}`"
                    if where
                    else f"{what} needs the option `{key}`"
                )
                condition = flow_schema.schema_condition(schema, err.schema_path)
                self.problem(
                    [*path, *where],
                    message + (f" {condition}" if condition else ""),
                    at_key=bool([*path, *where]),
                )
                continue
            where, message, at_key = flow_schema.explain(err, schema)
            self.refused([*path, *where], f"{what}: {message}", at_key=at_key)

    def connector_class(self, name: Any, path: list[Any]) -> Any:
        if not isinstance(name, str):
            return None  # the schema said so
        cls = self.registry.get(name)
        if cls is None:
            broken = self.registry.broken().get(name)
            if broken:
                self.problem(path, f"connector {name!r} is installed but failed to load: {broken}")
            else:
                names = self.registry.names()
                self.problem(
                    path,
                    f"unknown connector {name!r}{did_you_mean(name, names)}; installed: "
                    f"{', '.join(names)}",
                )
        return cls

    # -- the parts ---------------------------------------------------------------------------
    def connections(self) -> dict[str, Connection]:
        out: dict[str, Connection] = {}
        specs = self.data.get("connections")
        if not isinstance(specs, dict):
            return out
        for name, spec in specs.items():
            path = ["connections", name]
            if not isinstance(spec, dict):
                continue  # the schema said so
            connector = spec.get("connector")
            cls = self.connector_class(connector, [*path, "connector"])
            options = {k: v for k, v in spec.items() if k not in flow_schema.CONNECTION_KEYS}
            if cls is not None:
                self.check_options(options, cls.options_schema, path, f"connector {connector!r}")
            for key, value in options.items():
                self.template(value, [*path, key], OPTION_NAMES)
            rate = spec.get("rate_limit")
            rate_limit = None
            if isinstance(rate, str) and re.fullmatch(r"\d+(\.\d+)?/[smh]", rate):
                rate_limit = parse_rate(rate)
                if rate_limit <= 0:
                    self.problem([*path, "rate_limit"], "a rate limit must allow some requests")
            breaker = spec.get("circuit_breaker")
            out[str(name)] = Connection(
                name=str(name),
                connector=connector if isinstance(connector, str) else "",
                options=options,
                retry=_policy(RetryPolicy, spec.get("retry")),
                rate_limit=rate_limit,
                breaker=_policy(BreakerPolicy, breaker) if breaker is not None else None,
            )
        return out

    def connection_for(
        self, spec: dict, path: list[Any], role: str, connections: dict[str, Connection]
    ) -> tuple[str, Any]:
        """Resolve ``connection:`` (a name) or ``connector:`` (inline) to a connection name."""
        has_connection, has_connector = "connection" in spec, "connector" in spec
        if has_connection and has_connector and role == "source":
            self.problem(
                path,
                "name either `connection:` (one of the flow's connections) or `connector:` "
                "(a connector used with its defaults), not both",
            )
            return "", None
        if not has_connection and role == "source":
            if not has_connector:
                self.problem(
                    path,
                    "missing `connection:` (one of the flow's connections) or `connector:` "
                    "(a connector used with its defaults)",
                )
                return "", None
            connector = spec["connector"]
            cls = self.connector_class(connector, [*path, "connector"])
            if not isinstance(connector, str):
                return "", None
            name = f"{connector}@{format_path(path)}"
            connections[name] = Connection(name=name, connector=connector, options={})
            if cls is not None:
                needed = (cls.options_schema or {}).get("required") or []
                if needed:
                    self.problem(
                        [*path, "connector"],
                        f"connector {connector!r} needs connection options "
                        f"({', '.join(needed)}): define a connection under `connections:` and "
                        "write `connection: NAME` here",
                    )
                    return name, None
            return name, self._role(cls, connector, role, [*path, "connector"])
        name = spec.get("connection")
        if not isinstance(name, str):
            return "", None  # missing or not text: the schema said so
        if name not in connections:
            named = sorted(n for n in connections if "@" not in n)  # not the inline ones
            self.problem(
                [*path, "connection"],
                f"unknown connection {name!r}{did_you_mean(name, named)}; defined: "
                f"{', '.join(named) or 'none (add it under `connections:`)'}",
            )
            return "", None
        self._used_connections.add(name)
        connector = connections[name].connector
        cls = self.registry.get(connector) if connector else None
        return name, self._role(cls, connector, role, [*path, "connection"])

    def _role(self, cls: Any, connector: str, role: str, path: list[Any]) -> Any:
        if cls is not None and role not in cls.roles():
            use = "as a source" if role == "source" else "in a send or enrich step"
            self.problem(
                path,
                f"connector {connector!r} cannot be used {use}; it offers: "
                f"{', '.join(cls.roles()) or 'nothing'}",
            )
            return None
        return cls

    def source(self, connections: dict[str, Connection]) -> Source | None:
        spec = self.data.get("source")
        if not isinstance(spec, dict):
            return None  # the schema said so
        name, cls = self.connection_for(spec, ["source"], "source", connections)
        options = {k: v for k, v in spec.items() if k not in flow_schema.SOURCE_KEYS}
        if cls is not None:
            self.check_options(
                options,
                cls.read_schema,
                ["source"],
                f"source {cls.name!r}",
                of_connection=set(cls.options_schema.get("properties", {})),
            )
        for key, value in options.items():
            self.template(value, ["source", key], OPTION_NAMES)
        key = None
        if "key" in spec:
            key = self.key_template(spec["key"], ["source", "key"], SOURCE_KEY_NAMES, "source.key")
        return Source(connection=name, options=options, key=key)

    def collect_names(self, specs: Any) -> None:
        """Explicit step names, so generated ones (kind_N) can avoid them."""
        for spec in specs if isinstance(specs, list) else []:
            if not isinstance(spec, dict):
                continue
            if isinstance(spec.get("name"), str):
                self._explicit_names.add(spec["name"])
            route = spec.get("route")
            for branch in route if isinstance(route, list) else []:
                if isinstance(branch, dict):
                    self.collect_names(branch.get("steps"))
                    self.collect_names(branch.get("otherwise"))
            foreach = spec.get("foreach")
            if isinstance(foreach, dict):
                self.collect_names(foreach.get("steps"))

    def step_name(self, spec: dict, kind: str, path: list[Any]) -> str:
        self._counter += 1
        name = spec.get("name")
        if not isinstance(name, str):
            name = f"{kind}_{self._counter}"
            while name in self._explicit_names:
                name += "_"
        if name in self._step_names:
            self.problem(
                [*path, "name"],
                f"step name {name!r} is already used at {self._step_names[name]}; step names "
                "must be unique in a flow",
            )
        self._step_names[name] = format_path(path)
        return name

    def steps(
        self, specs: Any, path: list[Any], connections: dict, names: tuple[str, ...]
    ) -> list[Step]:
        out: list[Step] = []
        if not isinstance(specs, list):
            return out  # the schema said so
        if not specs:
            self.problem(path, "no steps here: records pass unchanged", severity="warning")
        for i, spec in enumerate(specs):
            if isinstance(spec, dict):
                step = self.step(spec, [*path, i], connections, names)
                if step is not None:
                    out.append(step)
        return out

    def step(
        self, spec: dict, path: list[Any], connections: dict, names: tuple[str, ...]
    ) -> Step | None:
        kinds = [k for k in flow_schema.STEP_KINDS if k in spec]
        if not kinds and self._refused_under(path):
            return None  # an unknown key was reported, most likely the misspelled kind
        if len(kinds) != 1:
            if kinds:
                found = f"found {' and '.join(kinds)}; split it into {len(kinds)} steps"
            else:
                found = "found none"
            self.problem(
                path, f"a step has exactly one kind ({', '.join(flow_schema.STEP_KINDS)}); {found}"
            )
            return None
        kind = kinds[0]
        value = spec[kind]
        at = [*path, kind]
        if "into" in spec and kind != "map":
            self.problem(
                [*path, "into"], f"`into` belongs to map steps only, not to {kind}", at_key=True
            )
        line = (position(self.data, at) or (None, None))[0]
        base = {
            "name": self.step_name(spec, kind, path),
            "kind": kind,
            "path": format_path(path),
            "line": line,
        }
        if kind == "map":
            if not isinstance(value, str) or not value:
                return None
            found = self.find_file(value, "mapping", "", ".yaml", at)
            if found is None:
                return None
            cache_key = (found, names)
            if cache_key not in self._mappings:
                compiled, problems = _cached(
                    self.env,
                    ("mapping", str(found), _digest(found), names),
                    lambda: load_mapping(str(found), self.env, names=names),
                )
                self.problems.extend(problems)
                self._mappings[cache_key] = compiled
            return MapStep(
                **base,
                mapping=self._mappings[cache_key],
                mapping_name=value,
                into=spec.get("into"),
            )
        if kind == "validate":
            if not isinstance(value, str) or not value:
                return None
            found = self.find_file(value, "canonical schema", "canonical", ".schema.json", at)
            if found is None:
                return None
            validator, problems = _cached(
                self.env, ("schema", str(found), _digest(found)), lambda: self.schema(found)
            )
            self.problems.extend(problems)
            return ValidateStep(**base, validator=validator, schema_name=value)
        if kind == "filter":
            return FilterStep(**base, condition=self.condition(value, at, names))
        if kind == "set":
            if not isinstance(value, dict):
                return None
            fields = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    self.problem(
                        [*at, key],
                        f"field names are text; YAML read {key!r} as a {type(key).__name__}: "
                        "quote it",
                        at_key=True,
                    )
                    continue
                fields[key] = self.template(item, [*at, key], names)
            return SetStep(**base, fields=fields)
        if kind == "fail":
            return FailStep(**base, message=self.template(value, at, names))
        if kind == "route":
            return RouteStep(**base, branches=self.branches(value, at, connections, names))
        if kind == "foreach":
            return self.foreach(value, base, at, connections, names)
        if not isinstance(value, dict):
            return None
        return self.call(kind, value, base, at, connections, names)

    def foreach(
        self, spec: Any, base: dict, path: list[Any], connections: dict, names: tuple[str, ...]
    ) -> Step | None:
        if not isinstance(spec, dict):
            return None
        as_name = spec.get("as", "item")
        if not isinstance(as_name, str):
            as_name = "item"
        elif as_name in (*CONTEXT_NAMES, "loop"):
            self.problem(
                [*path, "as"],
                f"as: {as_name} would hide `{as_name}` inside the foreach; choose another name",
            )
        inner = (*STEP_NAMES, "parent", as_name)
        items = None
        value = spec.get("items")
        if isinstance(value, str):
            try:
                node = self.parsed(value, parse_template) if is_template(value) else None
            except TemplateProblem:
                node = None  # reported by template() below
            if not is_template(value) or isinstance(node, nodes.Concat | nodes.Const):
                self.problem(
                    [*path, "items"],
                    'items is one template expression giving a list, e.g. "{{ record.lines }}", '
                    "without text around it",
                )
            else:
                items = self.template(value, [*path, "items"], names)
        key = None
        if "key" in spec:
            key = self.key_template(spec["key"], [*path, "key"], inner, "foreach.key")
        return ForeachStep(
            **base,
            items=items,
            as_name=as_name,
            key=key,
            steps=self.steps(spec.get("steps"), [*path, "steps"], connections, inner),
        )

    def branches(
        self, specs: Any, path: list[Any], connections: dict, names: tuple[str, ...]
    ) -> list[Branch]:
        out: list[Branch] = []
        if not isinstance(specs, list):
            return out
        for i, spec in enumerate(specs):
            at = [*path, i]
            if not isinstance(spec, dict):
                continue
            if "otherwise" in spec:
                if set(spec) != {"otherwise"}:
                    others = ", ".join(f"`{k}`" for k in spec if k != "otherwise")
                    self.problem(
                        at,
                        f"an `otherwise` branch holds only its steps (`- otherwise: [...]`); "
                        f"it also has {others}",
                    )
                if i != len(specs) - 1:
                    self.problem(
                        [*at, "otherwise"],
                        "`otherwise` must be the last branch; the branches after it could "
                        "never run",
                        at_key=True,
                    )
                steps = self.steps(spec["otherwise"], [*at, "otherwise"], connections, names)
                out.append(Branch(None, steps))
            elif "when" in spec and "steps" in spec:
                condition = self.condition(spec["when"], [*at, "when"], names)
                steps = self.steps(spec["steps"], [*at, "steps"], connections, names)
                out.append(Branch(condition, steps))
            elif "when" in spec:
                self.problem(
                    at, "this branch has `when:` but no `steps:`, the steps of its records"
                )
            elif "steps" in spec:
                self.problem(
                    at,
                    "this branch has `steps:` but no `when:`; write `- when: <expression>`, "
                    "or `- otherwise:` for the records no branch took",
                )
            else:
                self.problem(
                    at,
                    "a branch is `- when: <expression>` with `steps: [...]`, or "
                    "`- otherwise: [...]`",
                )
        return out

    def call(
        self,
        kind: str,
        spec: dict,
        base: dict,
        path: list[Any],
        connections: dict,
        names: tuple[str, ...],
    ) -> Step | None:
        if "connector" in spec and "connection" not in spec:
            self.problem(
                [*path, "connector"],
                f"a {kind} goes through a named connection: define it under `connections:` "
                "and write `connection: NAME`",
                at_key=True,
            )
            self._reported.append(format_path([*path, "connector"]))
        name, cls = self.connection_for(spec, path, "action", connections)
        options = {k: v for k, v in spec.items() if k not in flow_schema.CALL_KEYS}
        self._env_ok += [format_path([*path, key]) for key in options]
        if cls is not None:
            self.check_options(
                options,
                cls.call_schema,
                path,
                f"{kind} through {cls.name!r}",
                of_connection=set(cls.options_schema.get("properties", {})),
            )
        if kind == "enrich" and "save_as" not in spec:
            self.problem(
                path,
                "an enrich step needs `save_as:`, the record field that receives the answer",
                at_key=True,
            )
        for key in ("idempotency_key", "on_change"):
            if kind == "enrich" and key in spec:
                self.problem(
                    [*path, key],
                    f"`{key}` applies to send steps only; an enrich step is a lookup and is "
                    "never deduplicated",
                    at_key=True,
                )
        idempotency_key = None
        if kind == "send" and "idempotency_key" in spec:
            idempotency_key = self.key_template(
                spec["idempotency_key"], [*path, "idempotency_key"], names, "idempotency_key"
            )
        retry = spec.get("retry")
        return CallStep(
            **base,
            connection=name,
            options=self.template(options, path, names),
            idempotency_key=idempotency_key,
            on_change=spec.get("on_change", "conflict"),
            save_as=spec.get("save_as"),
            retry=_policy(RetryPolicy, retry) if retry is not None else None,
        )

    # -- whole-flow checks -------------------------------------------------------------------
    def check_flow_keys(self) -> None:
        schedule = self.data.get("schedule")
        if isinstance(schedule, str):
            message = flow_schema.cron_problem(schedule)
            if message:
                self.problem(["schedule"], message)

    def env_refs(self) -> set[str]:
        """``${env:NAME}`` is resolved in connection, source and call options only."""
        names: set[str] = set()
        for key, value in self.data.items():
            for path, text in _strings(value, [key]):
                if key == "description":
                    continue
                where = format_path(path)
                resolved = any(_under(where, ok) for ok in self._env_ok)
                for ref in _ANY_DOLLAR_REF.findall(text):
                    if not ENV_REF.fullmatch(ref):
                        self.problem(
                            path,
                            f"{ref!r} is not an environment reference; write ${{env:NAME}} "
                            "(NAME of letters, digits and _)",
                        )
                    elif not resolved:
                        self.problem(
                            path,
                            f"{ref} is resolved only in the options of connections, of the "
                            "source and of send/enrich steps; it would stay literal text here",
                        )
                    elif ENV_REF.fullmatch(ref).group(1) not in names:
                        name = ENV_REF.fullmatch(ref).group(1)
                        names.add(name)
                        if name not in os.environ:
                            self.problem(
                                path,
                                f"environment variable {name} is not set; `flowyard run` will "
                                "refuse to start without it",
                                severity="warning",
                            )
        return names

    def check_unused(self, connections: dict[str, Connection]) -> None:
        specs = self.data.get("connections")
        for name in specs if isinstance(specs, dict) else []:
            if str(name) not in self._used_connections and str(name) in connections:
                self.problem(
                    ["connections", name],
                    f"connection {name!r} is not used by the source or any step",
                    severity="warning",
                    at_key=True,
                )

    def check_vars(self) -> None:
        defaults = self.data.get("vars")
        defaults = defaults if isinstance(defaults, dict) else {}
        for name, path in self._vars_used.items():
            if name not in defaults:
                self.problem(
                    path,
                    f"vars.{name} has no default under `vars:`; a run without "
                    f"--var {name}=... fails{did_you_mean(name, defaults)}",
                    severity="warning",
                )

    def run(self) -> Flow | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            before = exc.object[: exc.start]
            line, column = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
            message = f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the file as UTF-8"
            self.problems.append(Problem(self.file, line, column, "", message))
            return None
        except OSError as exc:
            self.problems.append(
                Problem(self.file, None, None, "", f"cannot read: {exc.strerror or exc}")
            )
            return None
        self.lines = text.splitlines()
        self.data, problems = load_yaml(text, self.file)
        self.problems.extend(problems)
        # a template left unquoted became null: later checks of that value would only echo it
        self._reported += [p.path for p in problems if p.path and replaced_by_null(p)]
        if self.data is None:
            return None
        if not isinstance(self.data, dict):
            self.problems.append(
                Problem(
                    self.file,
                    *(getattr(self.data, "pos", None) or (1, 1)),
                    "",
                    f"a flow file is a mapping with `flow:`, `source:` and `steps:`; this one "
                    f"holds {flow_schema.describe_value(self.data)}",
                )
            )
            return None
        self.check_schema()
        schema_ok = self.ok
        try:
            flow = self.build()
        except Exception:
            if schema_ok:
                raise  # a loader bug: the flow passed the schema
            flow = None  # a check tripped over a value the schema already refused
        order = {self.file: 0}
        for p in self.problems:
            order.setdefault(p.file, len(order))
        self.problems.sort(key=lambda p: (order[p.file], p.line or 0, p.column or 0))
        if flow is not None:
            flow.warnings = [p for p in self.problems if p.severity == "warning"]
        return flow if self.ok else None

    def build(self) -> Flow | None:
        self.check_flow_keys()
        self.check_search_dirs()
        connections = self.connections()
        source = self.source(connections)
        self.collect_names(self.data.get("steps"))
        steps = self.steps(self.data.get("steps"), ["steps"], connections, STEP_NAMES)
        names = self.env_refs()
        if self.ok:  # with errors, these would mostly echo them
            self.check_unused(connections)
            self.check_vars()
        if not self.ok:
            return None  # the parts above were built to find problems, not to run
        retention = self.data.get("retention")
        retention_s = None
        if isinstance(retention, str) and re.fullmatch(r"\d+[dhm]", retention):
            retention_s = parse_duration(retention)
        return Flow(
            name=self.data.get("flow"),
            file=self.file,
            version=self.data.get("version", 1),
            description=self.data.get("description", ""),
            vars=dict(self.data.get("vars") or {}),
            connections=connections,
            source=source,
            steps=steps,
            concurrency=self.data.get("concurrency", 1),
            on_error=self.data.get("on_error", "dead_letter"),
            schedule=self.data.get("schedule"),
            retention_s=retention_s,
            env_names=names,
        )


def _self_and_all(node: nodes.Node, types: tuple) -> list[nodes.Node]:
    """``node`` itself (``find_all`` leaves it out) and every node below it of ``types``."""
    return [n for n in (node, *node.find_all(types)) if isinstance(n, types)]


def _vars_read(node: nodes.Node) -> list[str]:
    """The names read as ``vars.NAME`` or ``vars['NAME']`` in an expression."""
    found = []
    for item in _self_and_all(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(item.node, nodes.Name) and item.node.name == "vars":
            if isinstance(item, nodes.Getattr):
                found.append(item.attr)
            elif isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
                found.append(item.arg.value)
    return found


def _python_internals(node: nodes.Node, source: str) -> str | None:
    """The first dunder attribute an expression reaches for (``x.__class__``, ``x['__dict__']``)."""
    found = []
    for item in _self_and_all(node, (nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(item, nodes.Getattr):
            name = item.attr
        elif isinstance(item, nodes.Getitem) and isinstance(item.arg, nodes.Const):
            name = item.arg.value
        elif isinstance(item, nodes.Filter) and item.name == "attr" and item.args:
            arg = item.args[0]
            name = arg.value if isinstance(arg, nodes.Const) else None
        else:
            continue
        if isinstance(name, str) and name.startswith("__"):
            found.append(name)
    return min(found, key=source.find) if found else None


def check_flow(
    path: str | os.PathLike, registry: Registry, env: Any
) -> tuple[Flow | None, list[Problem]]:
    """Load a flow and return it (None when invalid) with every problem found, warnings included."""
    loader = _Loader(Path(path), registry, env)
    flow = loader.run()
    return flow, loader.problems


def load_flow(path: str | os.PathLike, registry: Registry, env: Any) -> Flow:
    """Load a flow or raise :class:`FlowError` listing every problem."""
    flow, problems = check_flow(path, registry, env)
    if flow is None:
        raise FlowError(problems)
    return flow
