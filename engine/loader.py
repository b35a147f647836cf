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

This module holds the entry points and the load itself: reading the file, the schema
pass, and the checks of the whole flow (``${env:NAME}`` references, unused connections,
vars without a default). The parts are built by builders that are given what they read
(the flow's text, the registry, the connections) and return what they built with what
they found (:class:`engine.load_findings.Built`): :mod:`engine.load_connections`
(connections and the source), :mod:`engine.load_steps` (the steps, their mapping and
schema files) and :mod:`engine.load_governance` (queues and labels), each checking its
templates through :mod:`engine.load_templates`. The loader collects the findings in the
order the builders ran; none of them imports this module.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import jsonschema

from connectors import Registry
from engine import envrefs, flow_schema
from engine._sandbox import FlowyardEnvironment
from engine.errors import FlowError, Problem
from engine.flow_schema import parse_duration
from engine.load_connections import ENV_REF, build_connections, build_source, parse_rate
from engine.load_findings import Built, Findings, FlowText, Reporter, under
from engine.load_governance import build_labels, build_queues
from engine.load_steps import build_steps
from engine.model import Connection, Flow, Schedule
from engine.suggest import did_you_mean
from engine.yamlpos import (
    NotUtf8,
    format_path,
    load_yaml,
    read_definition,
    replaced_by_null,
)

__all__ = ["ENV_REF", "check_flow", "load_flow", "parse_duration", "parse_rate"]

_ANY_DOLLAR_REF = re.compile(r"\$\{[^}]*\}?")
_FLOW_VALIDATOR = jsonschema.Draft7Validator(flow_schema.SCHEMA)
T = TypeVar("T")


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


class _Loader:
    """One load of one flow file; collects problems instead of stopping at the first.

    The loader reports its own checks into ``reporter`` and collects there what each
    builder returns (:class:`engine.load_findings.Findings`), in the order they ran.
    """

    def __init__(self, path: Path, registry: Registry, env: FlowyardEnvironment):
        self.path = path
        self.file = str(path)
        self.registry = registry
        self.env = env
        self.problems: list[Problem] = []  # until the file is read: then the reporter's
        self.data: Any = None
        self.reporter = Reporter(FlowText(path, None, []), env)

    def problem(
        self,
        path: list[Any],
        message: str,
        *,
        severity: str = "error",
        at_key: bool = False,
    ) -> None:
        """Report a problem of the flow's own checks at ``path``."""
        self.reporter.problem(path, message, severity=severity, at_key=at_key)

    def refused(self, path: list[Any], message: str, *, at_key: bool = False) -> None:
        """Report a schema problem and keep later checks quiet about the same value."""
        self.reporter.refuse(path, message, at_key=at_key)

    def take(self, built: Built[T]) -> T:
        """What a builder built; what it found goes with the flow's findings."""
        self.reporter.take(built.findings)
        return built.value

    @property
    def env_ok(self) -> list[str]:
        """Where ``${env:NAME}`` is resolved: connection and source options, and the
        options of the calls the steps make."""
        return ["connections", "source", *self.reporter.findings.env_ok]

    @property
    def digests(self) -> dict[str, str]:
        """SHA-256 of the flow file and of each file it uses."""
        return self.reporter.findings.digests

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

    # -- whole-flow checks -------------------------------------------------------------------
    def check_flow_keys(self) -> None:
        schedule = self.data.get("schedule")
        cron, path = schedule, ["schedule"]
        if isinstance(schedule, dict):
            cron, path = schedule.get("cron"), ["schedule", "cron"]
            zone = schedule.get("timezone")
            message = flow_schema.timezone_problem(zone) if isinstance(zone, str) else None
            if message:
                self.problem(["schedule", "timezone"], message)
        if isinstance(cron, str):
            message = flow_schema.cron_problem(cron)
            if message:
                self.problem(path, message)

    def schedule(self) -> Schedule | None:
        """The flow's ``schedule:`` (checked by :meth:`check_flow_keys`), or None."""
        spec = self.data.get("schedule")
        if isinstance(spec, str):
            return Schedule(cron=" ".join(spec.split()))
        if isinstance(spec, dict) and isinstance(spec.get("cron"), str):
            return Schedule(
                cron=" ".join(spec["cron"].split()),
                timezone=spec.get("timezone", "UTC"),
                missed=spec.get("missed", "run_once"),
            )
        return None

    def env_refs(self) -> set[str]:
        """``${env:NAME}`` is resolved in connection, source and call options only."""
        names: set[str] = set()
        for key, value in self.data.items():
            for path, text in _strings(value, [key]):
                if key == "description":
                    continue
                where = format_path(path)
                resolved = any(under(where, ok) for ok in self.env_ok)
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

    def check_unused(self, connections: dict[str, Connection]) -> None:
        """Warn about each connection that neither the source nor any step goes through."""
        used = self.reporter.findings.connections_used
        specs = self.data.get("connections")
        for name in specs if isinstance(specs, dict) else []:
            if str(name) not in used and str(name) in connections:
                self.problem(
                    ["connections", name],
                    f"connection {name!r} is not used by the source or any step",
                    severity="warning",
                    at_key=True,
                )

    def check_vars(self) -> None:
        defaults = self.data.get("vars")
        defaults = defaults if isinstance(defaults, dict) else {}
        for name, path in self.reporter.findings.vars_used.items():
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
        self.data, problems = load_yaml(text, self.file)
        # a template left unquoted became null: later checks of that value would only echo it
        refused = [p.path for p in problems if p.path and replaced_by_null(p)]
        self.reporter = Reporter(FlowText(self.path, self.data, text.splitlines()), self.env)
        self.reporter.take(Findings(problems=problems, refused=refused))
        self.problems = self.reporter.findings.problems
        self.digests[self.file] = hashlib.sha256(text.encode()).hexdigest()
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
        text, registry, env, reporter = self.reporter.text, self.registry, self.env, self.reporter
        connections = self.take(build_connections(text, registry, env, reporter.quiet))
        built = self.take(build_source(text, registry, env, reporter.quiet, connections))
        source, connections = built.source, built.connections
        steps = self.take(build_steps(text, registry, env, reporter.quiet, connections))
        names = self.env_refs()
        queues = build_queues(self.data)
        labels = self.take(build_labels(text, env, reporter.quiet))
        if self.ok:  # with errors, these would mostly echo them
            self.check_unused(connections)
            self.check_vars()
        if not self.ok or source is None:
            return None  # the parts above were built to find problems, not to run
        retention = self.data.get("retention")
        retention_s = None
        if isinstance(retention, str) and re.fullmatch(r"\d+[dhm]", retention):
            retention_s = parse_duration(retention)
        expect = self.data.get("expect_success_within")
        expect_s = None
        if isinstance(expect, str) and re.fullmatch(r"\d+[smhd]", expect):
            expect_s = parse_duration(expect)
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
            group_records=(self.data.get("group") or {}).get("records"),
            group_seconds=(self.data.get("group") or {}).get("seconds"),
            on_error=self.data.get("on_error", "dead_letter"),
            schedule=self.schedule(),
            retention_s=retention_s,
            expect_success_within_s=expect_s,
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
