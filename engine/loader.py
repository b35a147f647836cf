"""Load a flow file: parse, check against the flow schema, resolve names, compile.

Every problem of a file is collected and reported at once, each with file, line,
column, the path inside the flow and what was expected. A flow that loads is a
flow that can run: connectors, mappings, schemas and templates are all resolved
and compiled here, never mid-run.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import jsonschema

from connectors import Registry
from engine import flow_schema
from engine.errors import FlowError, Problem
from engine.mapping import load_mapping
from engine.model import (
    Branch,
    BreakerPolicy,
    CallStep,
    Connection,
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
from engine.templates import TemplateProblem, compile_condition, compile_value
from engine.validation import compile_validator, load_schema
from engine.yamlpos import format_path, key_position, load_yaml, position

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_FLOW_VALIDATOR = jsonschema.Draft7Validator(flow_schema.SCHEMA)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def did_you_mean(word: str, choices: list[str] | set[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else ``""``."""
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    if isinstance(value, str):
        return set(ENV_REF.findall(value))
    if isinstance(value, dict):
        return set().union(*(env_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_names(v) for v in value)) if value else set()
    return set()


class _Loader:
    """One load of one flow file; collects problems instead of stopping at the first."""

    def __init__(self, path: Path, registry: Registry, env: Any):
        self.path = path
        self.file = str(path)
        self.registry = registry
        self.env = env
        self.problems: list[Problem] = []
        self.data: Any = None
        self._mappings: dict[Path, Any] = {}
        self._step_names: dict[str, str] = {}
        self._counter = 0

    # -- reporting -------------------------------------------------------------------------
    def problem(
        self, path: list[Any], message: str, *, severity: str = "error", at_key: bool = False
    ) -> None:
        pos = (key_position if at_key else position)(self.data, path) or (None, None)
        self.problems.append(
            Problem(self.file, pos[0], pos[1], format_path(path), message, severity)
        )

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    # -- schema ------------------------------------------------------------------------------
    def check_schema(self) -> bool:
        before = len(self.problems)
        for err in sorted(_FLOW_VALIDATOR.iter_errors(self.data), key=lambda e: list(e.path)):
            path = list(err.absolute_path)
            if err.validator == "additionalProperties":
                allowed = set(err.schema.get("properties", {}))
                for extra in sorted(set(err.instance) - allowed):
                    hint = did_you_mean(extra, allowed)
                    what = (
                        "step kind or key"
                        if err.schema is flow_schema.SCHEMA["definitions"]["step"]
                        else "key"
                    )
                    self.problem(
                        path + [extra],
                        f"unknown {what} {extra!r}{hint}; expected one "
                        f"of: {', '.join(sorted(allowed))}",
                        at_key=True,
                    )
            elif err.validator == "required":
                self.problem(
                    path, err.message.replace("is a required property", "is required here")
                )
            elif err.validator == "type" and err.instance is None:
                self.problem(path, f"a value is missing here (expected {err.validator_value})")
            elif err.validator == "pattern":
                self.problem(
                    path,
                    f"{err.instance!r} does not have the expected form "
                    f"({err.schema.get('description') or err.validator_value})",
                )
            else:
                self.problem(path, err.message)
        return len(self.problems) == before

    # -- names and files -----------------------------------------------------------------
    def search_dirs(self) -> list[Path]:
        base = self.path.parent
        dirs = self.data.get("mappings") or ["mappings", "../mappings"]
        return [(base / d).resolve() for d in dirs]

    def find_file(self, name: str, kind: str, suffix: str, path: list[Any]) -> Path | None:
        if name.endswith((".yaml", ".yml", ".json")) or "/" in name:
            candidate = (self.path.parent / name).resolve()
            if candidate.is_file():
                return candidate
            self.problem(path, f"{kind} file not found: {candidate}")
            return None
        known: set[str] = set()
        for d in self.search_dirs():
            candidate = d / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
            if d.is_dir():
                known |= {p.name[: -len(suffix)] for p in d.glob(f"*{suffix}")}
        where = ", ".join(str(d) for d in self.search_dirs())
        self.problem(path, f"unknown {kind} {name!r}{did_you_mean(name, known)}; looked in {where}")
        return None

    def template(self, value: Any, path: list[Any]) -> Any:
        try:
            return compile_value(self.env, value)
        except TemplateProblem as exc:
            self.problem(path, exc.message)
            return None

    def condition(self, expr: str, path: list[Any]) -> Any:
        try:
            return compile_condition(self.env, expr)
        except TemplateProblem as exc:
            self.problem(path, exc.message)
            return None

    def check_options(
        self,
        options: dict,
        schema: dict | None,
        path: list[Any],
        what: str,
        *,
        templated: bool = False,
    ) -> None:
        """Check a connector's options against its schema (templates stand for any value)."""
        if schema is None:
            return
        for err in jsonschema.Draft7Validator(schema).iter_errors(options):
            if templated and isinstance(err.instance, str) and "{{" in err.instance:
                continue
            if isinstance(err.instance, str) and ENV_REF.search(err.instance):
                continue
            sub = list(err.absolute_path)
            if err.validator == "additionalProperties":
                allowed = set(err.schema.get("properties", {}))
                for extra in sorted(set(err.instance) - allowed):
                    self.problem(
                        path + sub + [extra],
                        f"{what} has no option {extra!r}"
                        f"{did_you_mean(extra, allowed)}; its options: "
                        f"{', '.join(sorted(allowed)) or 'none'}",
                        at_key=True,
                    )
            else:
                self.problem(path + sub, f"{what}: {err.message}")

    def connector_class(self, name: str, path: list[Any]) -> Any:
        cls = self.registry.get(name)
        if cls is None:
            broken = self.registry.broken().get(name)
            if broken:
                self.problem(path, f"connector {name!r} is installed but failed to load: {broken}")
            else:
                self.problem(
                    path,
                    f"unknown connector {name!r}"
                    f"{did_you_mean(name, self.registry.names())}; installed: "
                    f"{', '.join(self.registry.names())}",
                )
        return cls

    # -- the parts ---------------------------------------------------------------------------
    def connections(self) -> dict[str, Connection]:
        out: dict[str, Connection] = {}
        for name, spec in (self.data.get("connections") or {}).items():
            path = ["connections", name]
            cls = self.connector_class(spec["connector"], path + ["connector"])
            options = {k: v for k, v in spec.items() if k not in flow_schema.CONNECTION_KEYS}
            if cls is not None:
                self.check_options(
                    options,
                    cls.options_schema,
                    path,
                    f"connector {spec['connector']!r}",
                    templated=True,
                )
            for key, value in options.items():
                self.template(value, path + [key])
            breaker = spec.get("circuit_breaker")
            out[name] = Connection(
                name=name,
                connector=spec["connector"],
                options=options,
                retry=RetryPolicy(**spec.get("retry", {})),
                rate_limit=parse_rate(spec["rate_limit"]) if "rate_limit" in spec else None,
                breaker=BreakerPolicy(**breaker) if breaker is not None else None,
            )
        return out

    def connection_for(
        self, spec: dict, path: list[Any], role: str, connections: dict[str, Connection]
    ) -> tuple[str, Any]:
        """Resolve ``connection:`` (a name) or ``connector:`` (inline) to a connection name."""
        if ("connection" in spec) == ("connector" in spec):
            self.problem(
                path,
                "name either `connection:` (one of the flow's connections) or "
                "`connector:` (a connector used with its defaults), not both",
            )
            return "", None
        if "connection" in spec:
            name = spec["connection"]
            if name not in connections:
                self.problem(
                    path + ["connection"],
                    f"unknown connection {name!r}"
                    f"{did_you_mean(name, set(connections))}; defined: "
                    f"{', '.join(sorted(connections)) or 'none'}",
                )
                return "", None
            conn = connections[name]
        else:
            name = f"{spec['connector']}@{format_path(path)}"
            conn = Connection(name=name, connector=spec["connector"], options={})
            connections[name] = conn
        cls = self.registry.get(conn.connector) or (
            self.connector_class(conn.connector, path + ["connector"])
            if "connector" in spec
            else None
        )
        if cls is not None and role not in cls.roles():
            self.problem(
                path,
                f"connector {conn.connector!r} cannot be used as a {role}; it "
                f"offers: {', '.join(cls.roles()) or 'nothing'}",
            )
            return name, None
        return name, cls

    def source(self, connections: dict[str, Connection]) -> Source | None:
        spec = self.data["source"]
        name, cls = self.connection_for(spec, ["source"], "source", connections)
        options = {k: v for k, v in spec.items() if k not in flow_schema.SOURCE_KEYS}
        if cls is not None:
            self.check_options(
                options,
                cls.read_schema,
                ["source"],
                f"source connector {cls.name!r}",
                templated=True,
            )
        for key, value in options.items():
            self.template(value, ["source", key])
        key = self.template(spec["key"], ["source", "key"]) if "key" in spec else None
        return Source(connection=name, options=options, key=key)

    def step_name(self, spec: dict, kind: str, path: list[Any]) -> str:
        self._counter += 1
        name = spec.get("name") or f"{kind}_{self._counter}"
        if name in self._step_names:
            self.problem(
                path + ["name"],
                f"step name {name!r} is already used at "
                f"{self._step_names[name]}; step names must be unique in a flow",
            )
        self._step_names[name] = format_path(path)
        return name

    def steps(self, specs: list, path: list[Any], connections: dict[str, Connection]) -> list[Step]:
        out: list[Step] = []
        for i, spec in enumerate(specs):
            step = self.step(spec, path + [i], connections)
            if step is not None:
                out.append(step)
        return out

    def step(self, spec: dict, path: list[Any], connections: dict[str, Connection]) -> Step | None:
        kinds = [k for k in flow_schema.STEP_KINDS if k in spec]
        if len(kinds) != 1:
            found = f"found {', '.join(kinds)}" if kinds else "found none"
            self.problem(
                path, f"a step has exactly one kind ({', '.join(flow_schema.STEP_KINDS)}); {found}"
            )
            return None
        kind = kinds[0]
        value = spec[kind]
        at = path + [kind]
        line = (position(self.data, at) or (None, None))[0]
        base = {
            "name": self.step_name(spec, kind, path),
            "kind": kind,
            "path": format_path(path),
            "line": line,
        }
        if kind == "map":
            found = self.find_file(value, "mapping", ".yaml", at)
            if found is None:
                return None
            if found not in self._mappings:
                compiled, problems = load_mapping(str(found), self.env)
                self.problems.extend(problems)
                self._mappings[found] = compiled
            return MapStep(**base, mapping=self._mappings[found], mapping_name=value)
        if kind == "validate":
            found = self.find_file(
                f"canonical/{value}" if "/" not in value and not value.endswith(".json") else value,
                "schema",
                ".schema.json",
                at,
            )
            if found is None:
                return None
            schema, problems = load_schema(str(found))
            self.problems.extend(problems)
            return ValidateStep(
                **base, validator=compile_validator(schema) if schema else None, schema_name=value
            )
        if kind == "filter":
            return FilterStep(**base, condition=self.condition(value, at))
        if kind == "set":
            return SetStep(**base, fields={k: self.template(v, at + [k]) for k, v in value.items()})
        if kind == "route":
            return RouteStep(**base, branches=self.branches(value, at, connections))
        if kind == "foreach":
            return ForeachStep(
                **base,
                items=self.template(value["items"], at + ["items"]),
                as_name=value.get("as", "item"),
                key=self.template(value["key"], at + ["key"]) if "key" in value else None,
                steps=self.steps(value["steps"], at + ["steps"], connections),
            )
        return self.call(kind, value, base, at, connections)

    def branches(self, specs: list, path: list[Any], connections: dict) -> list[Branch]:
        out: list[Branch] = []
        for i, spec in enumerate(specs):
            at = path + [i]
            if "otherwise" in spec:
                if set(spec) != {"otherwise"}:
                    self.problem(
                        at, "an `otherwise` branch holds only its steps: `- otherwise: [...]`"
                    )
                if i != len(specs) - 1:
                    self.problem(
                        at, "`otherwise` must be the last branch; branches after it could never run"
                    )
                out.append(
                    Branch(None, self.steps(spec["otherwise"], at + ["otherwise"], connections))
                )
            elif "when" in spec and "steps" in spec:
                out.append(
                    Branch(
                        self.condition(spec["when"], at + ["when"]),
                        self.steps(spec["steps"], at + ["steps"], connections),
                    )
                )
            else:
                self.problem(
                    at,
                    "a branch is `- when: <expression>` with `steps: [...]`, "
                    "or `- otherwise: [...]`",
                )
        return out

    def call(
        self, kind: str, spec: dict, base: dict, path: list[Any], connections: dict[str, Connection]
    ) -> Step | None:
        name, cls = self.connection_for(spec, path, "action", connections)
        options = {k: v for k, v in spec.items() if k not in flow_schema.CALL_KEYS}
        if cls is not None:
            self.check_options(
                options,
                cls.call_schema,
                path,
                f"{kind} through connector {cls.name!r}",
                templated=True,
            )
        if kind == "enrich" and "save_as" not in spec:
            self.problem(
                path, "an enrich step needs `save_as:` (the record field that receives the answer)"
            )
        for key in ("idempotency_key", "on_change"):
            if kind == "enrich" and key in spec:
                self.problem(
                    path + [key],
                    f"`{key}` applies to send steps only; an enrich "
                    "step is a lookup and is never deduplicated",
                    at_key=True,
                )
        return CallStep(
            **base,
            connection=name,
            options=self.template(options, path),
            idempotency_key=self.template(spec["idempotency_key"], path + ["idempotency_key"])
            if "idempotency_key" in spec
            else None,
            on_change=spec.get("on_change", "conflict"),
            save_as=spec.get("save_as"),
            retry=RetryPolicy(**spec["retry"]) if "retry" in spec else None,
        )

    def env_refs(self) -> set[str]:
        names = env_names(self.data.get("connections")) | env_names(self.data.get("source"))
        for name in sorted(names):
            if name not in os.environ:
                self.problem(
                    self._env_path(name),
                    f"environment variable {name} is not set; "
                    "the run will refuse to start without it",
                    severity="warning",
                )
        return names

    def _env_path(self, name: str) -> list[Any]:
        ref = "${env:" + name + "}"

        def find(value: Any, path: list[Any]) -> list[Any] | None:
            if isinstance(value, str) and ref in value:
                return path
            items = (
                value.items()
                if isinstance(value, dict)
                else (enumerate(value) if isinstance(value, list) else [])
            )
            for k, v in items:
                hit = find(v, path + [k])
                if hit is not None:
                    return hit
            return None

        return find(self.data, []) or []

    def run(self) -> Flow | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(Problem(self.file, None, None, "", f"cannot read: {exc}"))
            return None
        self.data, problems = load_yaml(text, self.file)
        self.problems.extend(problems)
        if self.data is None:
            return None
        if not isinstance(self.data, dict):
            self.problems.append(
                Problem(
                    self.file,
                    1,
                    1,
                    "",
                    "a flow file is a mapping with `flow:`, `source:` and `steps:`",
                )
            )
            return None
        if not self.check_schema():
            return None
        connections = self.connections()
        source = self.source(connections)
        steps = self.steps(self.data["steps"], ["steps"], connections)
        names = self.env_refs()
        retention = self.data.get("retention")
        flow = Flow(
            name=self.data["flow"],
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
            retention_s=parse_duration(retention) if retention else None,
            warnings=[p for p in self.problems if p.severity == "warning"],
            env_names=names,
        )
        return flow if self.ok else None


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
