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

This module holds the entry points and the load itself: reading the file, reporting
problems at their place, the schema pass, finding mapping and schema files, and the
checks of the whole flow (``${env:NAME}`` references, unused connections, vars without
a default). The parts are built by collaborators that report through the loader:
:mod:`engine.flow_connections` (connections and the source), :mod:`engine.flow_steps`
(the steps) and :mod:`engine.flow_templates` (every template and condition).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import jsonschema

from connectors import Registry
from engine import envrefs, flow_schema, packaged
from engine._sandbox import FlowyardEnvironment
from engine.errors import FlowError, Problem
from engine.flow_connections import ENV_REF, ConnectionBuilder, parse_rate
from engine.flow_governance import build_labels, build_queues
from engine.flow_schema import did_you_mean
from engine.flow_steps import StepBuilder
from engine.flow_templates import STEP_NAMES, FlowTemplates
from engine.model import Flow
from engine.yamlpos import (
    NotUtf8,
    format_path,
    key_position,
    load_yaml,
    position,
    read_definition,
    replaced_by_null,
)

__all__ = ["ENV_REF", "check_flow", "did_you_mean", "load_flow", "parse_duration", "parse_rate"]

_ANY_DOLLAR_REF = re.compile(r"\$\{[^}]*\}?")
_FLOW_VALIDATOR = jsonschema.Draft7Validator(flow_schema.SCHEMA)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``30d`` / ``12h`` / ``15m`` / ``10s`` -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30d, 12h, 15m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _strings(value: Any, path: list[Any]) -> list[tuple[list[Any], str]]:
    """Every string inside ``value`` with its path, depth first."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _strings(v, [*path, k])]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in _strings(v, [*path, i])]
    return []


_NEAR_ENV_REF = re.compile(r"\$\{\s*env\s*:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}", re.IGNORECASE)


def _not_an_env_ref(ref: str) -> str:
    """What is wrong with a ``${...}`` that is not ``${env:NAME}``, and how to write it."""
    near = _NEAR_ENV_REF.fullmatch(ref)
    if near:
        return (
            f"{ref!r} is not an environment reference; write ${{env:{near.group(1)}}} "
            "(`env` in lower case, no spaces)"
        )
    return (
        f"{ref!r} is not an environment reference; write ${{env:NAME}} "
        "(NAME of letters, digits and _) or ${file:PATH}"
    )


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


class _Loader:
    """One load of one flow file; collects problems instead of stopping at the first."""

    def __init__(self, path: Path, registry: Registry, env: FlowyardEnvironment):
        self.path = path
        self.file = str(path)
        self.registry = registry
        self.env = env
        self.problems: list[Problem] = []
        self.data: Any = None
        self.lines: list[str] = []
        self._reported: list[str] = []  # paths whose value the YAML or the schema refused
        self.env_ok: list[str] = ["connections", "source"]  # where ${env:NAME} is resolved
        self.digests: dict[str, str] = {}  # SHA-256 of the flow file and each file it uses
        self.templates = FlowTemplates(env, self.problem)
        self.connection_builder = ConnectionBuilder(self)
        self.step_builder = StepBuilder(self)

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
        at = (key_position if at_key else position)(self.data, path)
        line, column = at or (None, None)
        if at is not None and lineno and lineno > 1:
            text = self.lines[at[0] - 1][at[1] - 1 :] if at[0] <= len(self.lines) else ""
            # a block scalar (| or >) starts on the line below its indicator
            line = at[0] + lineno - 1 + (1 if text[:1] in "|>" else 0)
            column = None
        self.problems.append(Problem(self.file, line, column, where, message, severity))

    def refused(self, path: list[Any], message: str, *, at_key: bool = False) -> None:
        """Report a schema problem and keep later checks quiet about the same value."""
        self.problem(path, message, at_key=at_key)
        self._reported.append(format_path(path))

    def refused_under(self, path: list[Any]) -> bool:
        """Whether a value at or below ``path`` was refused already."""
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
                continue  # StepBuilder.call() says it better: a send needs a named connection
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
        found = [(base / d).resolve() for d in dirs if "\0" not in d]
        # the built-in set (engine/packaged.py) last: a flow's own files win over it
        return found + [d for d in packaged.mapping_dirs() if d not in found]

    def check_search_dirs(self) -> None:
        dirs = self.data.get("mappings")
        if not isinstance(dirs, list):
            return
        for i, d in enumerate(dirs):
            if isinstance(d, str) and "\0" in d:
                self.problem(["mappings", i], "a folder name cannot hold a NUL character (\\0)")
            elif isinstance(d, str) and not (self.path.parent / d).is_dir():
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

    def find_file(
        self, name: str, kind: str, subdir: str, suffix: str, path: list[Any]
    ) -> Path | None:
        """A mapping or schema by name (searched in the mapping folders) or by path."""
        if "\0" in name:  # the operating system refuses such a path (Python: ValueError)
            self.problem(path, f"a {kind} name cannot hold a NUL character (\\0)")
            return None
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
                resolved = any(_under(where, ok) for ok in self.env_ok)
                for ref in _ANY_DOLLAR_REF.findall(text):
                    env_ref = ENV_REF.fullmatch(ref)
                    if not env_ref:
                        self.problem(path, _not_an_env_ref(ref))
                    elif not resolved:
                        self.problem(
                            path,
                            f"{ref} is resolved only in the options of connections, of the "
                            "source and of send/enrich steps; it would stay literal text here",
                        )
                    elif env_ref.group(1) not in names:
                        name = env_ref.group(1)
                        names.add(name)
                        why = envrefs.missing(name, self.path.parent)  # .env and files too
                        if why:
                            self.problem(
                                path,
                                f"{why}; `flowyard run` will refuse to start without it",
                                severity="warning",
                            )
        return names

    def check_vars(self) -> None:
        defaults = self.data.get("vars")
        defaults = defaults if isinstance(defaults, dict) else {}
        for name, path in self.templates.vars_used.items():
            if name not in defaults:
                self.problem(
                    path,
                    f"vars.{name} has no default under `vars:`; a run without "
                    f"--var {name}=... fails{did_you_mean(name, defaults)}",
                    severity="warning",
                )

    def run(self) -> Flow | None:
        try:
            text = read_definition(self.path)
        except NotUtf8 as exc:
            self.problems.append(
                Problem(self.file, exc.line, exc.column, "", exc.strerror or str(exc))
            )
            return None
        except OSError as exc:
            self.problems.append(
                Problem(self.file, None, None, "", f"cannot read: {exc.strerror or exc}")
            )
            return None
        self.lines = text.splitlines()
        self.digests[self.file] = hashlib.sha256(text.encode()).hexdigest()
        self.data, problems = load_yaml(text, self.file)
        self.problems.extend(problems)
        # a template left unquoted became null: later checks of that value would only echo it
        self._reported += [p.path for p in problems if p.path and replaced_by_null(p)]
        if self.data is None:
            return None
        if not isinstance(self.data, dict):
            line, column = getattr(self.data, "pos", None) or (1, 1)
            self.problems.append(
                Problem(
                    self.file,
                    line,
                    column,
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
        connections = self.connection_builder.connections()
        source = self.connection_builder.source(connections)
        self.step_builder.collect_names(self.data.get("steps"))
        steps = self.step_builder.steps(self.data.get("steps"), ["steps"], connections, STEP_NAMES)
        names = self.env_refs()
        queues, labels = build_queues(self), build_labels(self)
        if self.ok:  # with errors, these would mostly echo them
            self.connection_builder.check_unused(connections)
            self.check_vars()
        if not self.ok or source is None:
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
            queues=queues,
            labels=labels,
            definition_digest=hashlib.sha256(
                "\n".join(digest for _, digest in sorted(self.digests.items())).encode()
            ).hexdigest(),
        )


def check_flow(
    path: str | os.PathLike[str], registry: Registry, env: FlowyardEnvironment
) -> tuple[Flow | None, list[Problem]]:
    """Load a flow and return it (None when invalid) with every problem found, warnings included."""
    loader = _Loader(Path(path), registry, env)
    flow = loader.run()
    return flow, loader.problems


def load_flow(path: str | os.PathLike[str], registry: Registry, env: FlowyardEnvironment) -> Flow:
    """Load a flow or raise :class:`FlowError` listing every problem."""
    flow, problems = check_flow(path, registry, env)
    if flow is None:
        raise FlowError(problems)
    return flow
