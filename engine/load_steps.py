"""Load time: the steps of a flow file, each named, checked and built into its step of the
model.

A step has exactly one kind (map, validate, filter, set, route, foreach, send, enrich,
fail, review, reconcile); route branches and a foreach hold steps of their own, built the
same way. A step without a name gets ``kind_N``, avoiding every name given explicitly
anywhere in the flow. Mappings and canonical schemas are found by name in the mapping
folders and compiled once per Jinja environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypedDict

from jinja2 import nodes

from connectors import Registry
from engine import flow_schema, packaged
from engine._sandbox import FlowyardEnvironment
from engine.envrefs import ENV_CONTEXT, env_references, references_in_expressions
from engine.errors import Problem, RecordError
from engine.flow_schema import parse_duration
from engine.load_connections import ConnectionBuilder, policy
from engine.load_findings import Built, FlowText, Reporter
from engine.load_templates import STEP_NAMES, Compiled, cached
from engine.mapping import CompiledMapping, load_mapping
from engine.model import (
    Amount,
    ApproveStep,
    Branch,
    CallStep,
    Connection,
    FailStep,
    FilterStep,
    ForeachStep,
    MapStep,
    ReconcileStep,
    Rendered,
    RetryPolicy,
    ReviewStep,
    RouteStep,
    SetStep,
    Step,
    ValidateStep,
)
from engine.reconcile import tolerance
from engine.suggest import did_you_mean
from engine.templates import CONTEXT_NAMES, TemplateProblem, is_template, parse_template
from engine.validation import compile_validator, load_schema
from engine.yamlpos import format_path, position


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""  # the reader reports it


class _Base(TypedDict):
    """What every step has (engine.model.Step): its name, kind, path and line."""

    name: str
    kind: str
    path: str
    line: int | None


class _WorkItem(TypedDict):
    """What a review or approve step says of its work item (engine.model.ReviewStep)."""

    queue: str
    reason: Rendered
    figures: dict[str, Rendered]
    owner: str | None
    category: str | None
    due_s: float | None
    escalate_to: dict[str, str] | None


class _Undo(TypedDict, total=False):
    """How a send is undone (engine.model.CallStep's compensate fields)."""

    compensate: Rendered
    compensate_connection: str | None
    compensate_key: Rendered | None


Connections = dict[str, Connection]


def _queue(spec: dict[str, Any], default: str = "review") -> str:
    queue = spec.get("queue")
    return queue if isinstance(queue, str) and queue else default


def _due(spec: dict[str, Any]) -> float | None:
    due = spec.get("due")
    try:
        return parse_duration(due) if isinstance(due, str) else None
    except ValueError:
        return None  # the schema said so


def _schema(found: Path) -> tuple[Callable[[Any], None] | None, list[Problem]]:
    schema, problems = load_schema(str(found))
    return (compile_validator(schema) if schema else None), problems


def build_steps(
    text: FlowText,
    registry: Registry,
    env: FlowyardEnvironment,
    refused: Iterable[str],
    connections: Connections,
) -> Built[list[Step]]:
    """The flow's ``steps:`` that could be built; the findings name the mapping and schema
    files read (with their digests) and the connections the steps go through."""
    reporter = Reporter(text, env, refused)
    builder = StepBuilder(registry, env, reporter)
    specs = text.data.get("steps")
    builder.collect_names(specs)
    return reporter.built(builder.steps(specs, ["steps"], connections, STEP_NAMES))


class StepBuilder:
    """Builds the steps of one flow file, reporting into ``reporter``."""

    def __init__(self, registry: Registry, env: FlowyardEnvironment, reporter: Reporter):
        self.env = env
        self.reporter = reporter
        self.text = reporter.text
        self.problem = reporter.problem
        self.templates = reporter.templates
        self.connection_builder = ConnectionBuilder(registry, reporter)
        self._mappings: dict[tuple[Path, tuple[str, ...]], CompiledMapping | None] = {}
        self._step_names: dict[str, str] = {}
        self._explicit_names: set[str] = set()
        self._counter = 0

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

    # -- mapping and schema files -----------------------------------------------------------
    def search_dirs(self) -> list[Path]:
        """The folders mappings and schemas are looked for in, the flow's own first."""
        base = self.text.path.parent
        dirs = self.text.data.get("mappings")
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            dirs = ["mappings", "../mappings"]
        found = [(base / d).resolve() for d in dirs if "\0" not in d]
        # the built-in set (engine/packaged.py) last: a flow's own files win over it
        return found + [d for d in packaged.mapping_dirs() if d not in found]

    def shown(self, path: Path) -> Path:
        """``path`` as problems show it: relative to the working directory when the flow's
        own path was given relative (and it lies below), else absolute."""
        if not self.text.path.is_absolute():
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
            candidate = (self.text.path.parent / name).resolve()
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

    # -- steps -------------------------------------------------------------------------------
    def step_name(self, spec: dict[str, Any], kind: str, path: list[Any]) -> str:
        """The step's name, given or generated; a name used twice is reported."""
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
        self, specs: Any, path: list[Any], connections: Connections, names: tuple[str, ...]
    ) -> list[Step]:
        """The steps of a list (the flow's, a branch's or a foreach's) that could be built."""
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
        self,
        spec: dict[str, Any],
        path: list[Any],
        connections: Connections,
        names: tuple[str, ...],
    ) -> Step | None:
        """One step, or None when it has a problem that leaves nothing to build."""
        kinds = [k for k in flow_schema.STEP_KINDS if k in spec]
        if not kinds and self.reporter.refused_under(path):
            return None  # an unknown key was reported, most likely the misspelled kind
        if len(kinds) != 1:
            if kinds:
                seen = f"found {' and '.join(kinds)}; split it into {len(kinds)} steps"
            else:
                seen = "found none"
            self.problem(
                path, f"a step has exactly one kind ({', '.join(flow_schema.STEP_KINDS)}); {seen}"
            )
            return None
        kind = kinds[0]
        value = spec[kind]
        at = [*path, kind]
        if "into" in spec and kind != "map":
            self.problem(
                [*path, "into"], f"`into` belongs to map steps only, not to {kind}", at_key=True
            )
        line = (position(self.text.data, at) or (None, None))[0]
        base = _Base(
            name=self.step_name(spec, kind, path), kind=kind, path=format_path(path), line=line
        )
        env = self.env
        if kind == "map":
            if not isinstance(value, str) or not value:
                return None
            found = self.find_file(value, "mapping", "", ".yaml", at)
            if found is None:
                return None
            cache_key = (found, names)
            digest = self.reporter.findings.digests[str(found)] = _digest(found)
            if cache_key not in self._mappings:
                compiled, problems = cached(
                    env,
                    ("mapping", str(found), digest, names),
                    lambda: load_mapping(str(found), env, names=names),
                )
                self.reporter.findings.problems.extend(problems)
                self._mappings[cache_key] = compiled
            mapping = self._mappings[cache_key]
            if mapping is None:
                return None  # its problems are reported
            return MapStep(
                **base,
                mapping=mapping,
                mapping_name=value,
                into=spec.get("into"),
            )
        if kind == "validate":
            if not isinstance(value, str) or not value:
                return None
            found = self.find_file(value, "canonical schema", "canonical", ".schema.json", at)
            if found is None:
                return None
            digest = self.reporter.findings.digests[str(found)] = _digest(found)
            validator, problems = cached(
                env, ("schema", str(found), digest), lambda: _schema(found)
            )
            self.reporter.findings.problems.extend(problems)
            if validator is None:
                return None  # its problems are reported
            return ValidateStep(**base, validator=validator, schema_name=value)
        if kind == "filter":
            condition = self.templates.condition(value, at, names)
            return None if condition is None else FilterStep(**base, condition=condition)
        if kind == "set":
            if not isinstance(value, dict):
                return None
            fields = self.fields(value, at, names)
            return None if fields is None else SetStep(**base, fields=fields)
        if kind == "fail":
            message = self.templates.template(value, at, names)
            return None if message is None else FailStep(**base, message=message)
        if kind == "review":
            return self.review(value, base, at, names)
        if kind == "approve":
            return self.approve(value, base, at, connections, names)
        if kind == "reconcile":
            return self.reconcile(value, base, at, names)
        if kind == "route":
            return RouteStep(**base, branches=self.branches(value, at, connections, names))
        if kind == "foreach":
            return self.foreach(value, base, at, connections, names)
        if not isinstance(value, dict):
            return None
        return self.call(kind, value, base, at, connections, names)

    def fields(
        self, spec: dict[Any, Any], path: list[Any], names: tuple[str, ...]
    ) -> dict[str, Rendered] | None:
        """Named templates (``set:``, ``figures:``) compiled; None when one has a problem."""
        fields: dict[str, Rendered] = {}
        ok = True
        for key, item in spec.items():
            if not self.templates.check_field_name(key, [*path, key]):
                ok = False
                continue
            compiled = self.templates.template(item, [*path, key], names)
            if compiled is None:
                ok = False
            else:
                fields[key] = compiled
        return fields if ok else None

    def foreach(
        self,
        spec: Any,
        base: _Base,
        path: list[Any],
        connections: Connections,
        names: tuple[str, ...],
    ) -> Step | None:
        """A foreach step: its items template, the item's name, its key and its steps."""
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
            items = self.lone_expression(
                value,
                [*path, "items"],
                names,
                "items is one template expression giving a list",
                "{{ record.lines }}",
            )
        key = None
        if "key" in spec:
            key = self.templates.key_template(spec["key"], [*path, "key"], inner, "foreach.key")
        steps = self.steps(spec.get("steps"), [*path, "steps"], connections, inner)
        if items is None:
            return None  # reported (or refused by the schema)
        return ForeachStep(**base, items=items, as_name=as_name, key=key, steps=steps)

    def review(
        self, spec: Any, base: _Base, path: list[Any], names: tuple[str, ...]
    ) -> Step | None:
        """A review step: the reason alone, or {queue, reason, figures}."""
        if isinstance(spec, str):
            reason = self.templates.template(spec, path, names)
            return None if reason is None else ReviewStep(**base, reason=reason)
        if not isinstance(spec, dict) or not isinstance(spec.get("reason"), str):
            return None  # the schema said so
        item = self.work_item(spec, path, names, "review")
        return None if item is None else ReviewStep(**base, **item)

    def work_item(
        self, spec: dict[str, Any], path: list[Any], names: tuple[str, ...], default_queue: str
    ) -> _WorkItem | None:
        """What a review or approve step says of its item: queue, reason, figures, owner,
        category, due time and escalation; None when a template has a problem (reported)."""
        given = spec.get("figures")
        figures = self.fields(given if isinstance(given, dict) else {}, [*path, "figures"], names)
        reason = self.templates.template(spec["reason"], [*path, "reason"], names)
        if reason is None or figures is None:
            return None
        owner, category, escalate_to = (
            spec.get("owner"),
            spec.get("category"),
            spec.get("escalate_to"),
        )
        return {
            "queue": _queue(spec, default_queue),
            "reason": reason,
            "figures": figures,
            "owner": owner if isinstance(owner, str) else None,
            "category": category if isinstance(category, str) else None,
            "due_s": _due(spec),
            "escalate_to": dict(escalate_to) if isinstance(escalate_to, dict) else None,
        }

    def approve(
        self,
        spec: Any,
        base: _Base,
        path: list[Any],
        connections: Connections,
        names: tuple[str, ...],
    ) -> Step | None:
        """An approve step: its item (as a review's) and the steps of a rejected record."""
        if not isinstance(spec, dict) or not isinstance(spec.get("reason"), str):
            return None  # the schema said so
        if "parent" in names:
            self.problem(
                path,
                "approve cannot stand inside a foreach: an approval stops a whole record, "
                "and a record resumes where it stopped; approve the record before or after "
                "the foreach",
                at_key=True,
            )
        on_reject: list[Step] = []
        if "on_reject" in spec:
            on_reject = self.steps(spec["on_reject"], [*path, "on_reject"], connections, names)
        item = self.work_item(spec, path, names, "approvals")
        return None if item is None else ApproveStep(**base, **item, on_reject=on_reject)

    def reconcile(
        self, spec: Any, base: _Base, path: list[Any], names: tuple[str, ...]
    ) -> Step | None:
        """A reconcile step: its amounts (written out, or one template), tolerance, queue."""
        if not isinstance(spec, dict):
            return None
        given = spec.get("amounts")
        at = [*path, "amounts"]
        amounts: list[Amount] | Compiled | None = []
        if isinstance(given, str):
            amounts = self.lone_expression(
                given,
                at,
                names,
                "amounts, as one template, is one expression giving the amounts",
                "{{ record.checks }}",
            )
        elif isinstance(given, dict):
            amounts = self.amounts(given, at, names)
        reason = None
        if isinstance(spec.get("reason"), str):
            reason = self.templates.template(spec["reason"], [*path, "reason"], names)
        tolerance = self.tolerance(spec, path, names)
        if amounts is None:
            return None  # reported
        return ReconcileStep(
            **base, queue=_queue(spec), tolerance=tolerance, amounts=amounts, reason=reason
        )

    def amounts(
        self, given: dict[Any, Any], path: list[Any], names: tuple[str, ...]
    ) -> list[Amount] | None:
        """The amounts of a reconcile step written out; None when one has a problem."""
        amounts: list[Amount] = []
        ok = True
        for name, item in given.items():
            if not self.templates.check_field_name(name, [*path, name]):
                ok = False
                continue
            if not isinstance(item, dict) or "expected" not in item or "actual" not in item:
                continue  # the schema said so
            expected = self.templates.template(item["expected"], [*path, name, "expected"], names)
            actual = self.templates.template(item["actual"], [*path, name, "actual"], names)
            tolerance = self.tolerance(item, [*path, name], names)
            if expected is None or actual is None:
                ok = False
                continue
            amounts.append(Amount(name, expected, actual, tolerance))
        return amounts if ok else None

    def tolerance(
        self, spec: dict[str, Any], path: list[Any], names: tuple[str, ...]
    ) -> Compiled | None:
        """A ``tolerance:`` compiled; a constant is checked now (a decimal of 0 or more)."""
        value = spec.get("tolerance")
        if value is None or isinstance(value, bool) or not isinstance(value, str | int):
            return None  # none given, or the schema said so
        if not (isinstance(value, str) and is_template(value)):
            try:
                tolerance(value, "the step")
            except RecordError:
                self.problem(
                    [*path, "tolerance"],
                    f'a tolerance is a decimal of 0 or more, such as "0.01"; got {value!r}',
                )
                return None
        return self.templates.template(value, [*path, "tolerance"], names)

    def lone_expression(
        self, value: str, path: list[Any], names: tuple[str, ...], what: str, example: str
    ) -> Compiled | None:
        """One template expression without text around it (so it keeps its type), compiled;
        ``what`` and ``example`` word the problem when it is not one."""
        try:
            node = self.templates.parsed(value, parse_template) if is_template(value) else None
        except TemplateProblem:
            node = None  # reported by template() below
        if not is_template(value) or isinstance(node, nodes.Concat | nodes.Const):
            self.problem(path, f'{what}, e.g. "{example}", without text around it')
            return None
        return self.templates.template(value, path, names)

    def branches(
        self, specs: Any, path: list[Any], connections: Connections, names: tuple[str, ...]
    ) -> list[Branch]:
        """The branches of a route: each `when` with its steps, then at most one `otherwise`."""
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
                condition = self.templates.condition(spec["when"], [*at, "when"], names)
                steps = self.steps(spec["steps"], [*at, "steps"], connections, names)
                if condition is not None:  # else reported
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

    def call_options(
        self, options: dict[str, Any], path: list[Any], names: tuple[str, ...]
    ) -> Compiled | None:
        """A call's options compiled once, each ``${env:NAME}`` a reference to the run's value.

        The flow's own text is checked first, so a template cannot name the engine's
        environment entry itself (engine/envrefs.py).
        """
        for ref in references_in_expressions(options):
            self.problem(
                path,
                f"{ref} inside {{{{ ... }}}} is part of the expression and stays literal "
                "text; write it outside the braces",
            )
        if not self.templates.check(options, path, names):
            return None
        return self.templates.template(env_references(options), path, (*names, ENV_CONTEXT))

    def call(
        self,
        kind: str,
        spec: dict[str, Any],
        base: _Base,
        path: list[Any],
        connections: Connections,
        names: tuple[str, ...],
    ) -> Step | None:
        """A send or enrich step: its connection, its call options and its keys."""
        if "connector" in spec and "connection" not in spec:
            self.reporter.refuse(
                [*path, "connector"],
                f"a {kind} goes through a named connection: define it under `connections:` "
                "and write `connection: NAME`",
                at_key=True,
            )
        name, cls = self.connection_builder.connection_for(spec, path, "action", connections)
        options = {k: v for k, v in spec.items() if k not in flow_schema.CALL_KEYS}
        self.reporter.findings.env_ok += [format_path([*path, key]) for key in options]
        if cls is not None:
            self.connection_builder.check_options(
                options,
                cls.call_schema,
                path,
                f"{kind} through {cls.name!r}",
                of_connection=set(cls.options_schema.get("properties", {})),
            )
            self.connection_builder.lint(cls, "action", options, path, connections[name].options)
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
            idempotency_key = self.templates.key_template(
                spec["idempotency_key"], [*path, "idempotency_key"], names, "idempotency_key"
            )
        retry = spec.get("retry")
        compiled = self.call_options(options, path, names)
        undo = self.compensation(kind, spec, path, connections, names)
        if compiled is None or undo is None:
            return None  # reported
        return CallStep(
            **base,
            connection=name,
            options=compiled,
            idempotency_key=idempotency_key,
            on_change=spec.get("on_change", "conflict"),
            save_as=spec.get("save_as"),
            retry=policy(RetryPolicy, retry) if retry is not None else None,
            **undo,
        )

    def compensation(
        self,
        kind: str,
        spec: dict[str, Any],
        path: list[Any],
        connections: Connections,
        names: tuple[str, ...],
    ) -> _Undo | None:
        """A send's ``compensate:``: the call options that undo it, on its connection (or
        the one it names), checked against that connector's call schema; None when they
        have a problem (reported)."""
        given = spec.get("compensate")
        if given is None:
            return {}
        at = [*path, "compensate"]
        if kind != "send":
            self.problem(at, "`compensate` undoes a send; an enrich changes nothing", at_key=True)
            return {}
        if not isinstance(given, dict):
            return {}  # the schema said so
        undo = dict(given)
        undo.setdefault("connection", spec.get("connection"))
        name, cls = self.connection_builder.connection_for(undo, at, "action", connections)
        key = undo.pop("idempotency_key", None)
        options = {k: v for k, v in undo.items() if k != "connection"}
        self.reporter.findings.env_ok += [format_path([*at, k]) for k in options]
        if cls is not None:
            self.connection_builder.check_options(
                options,
                cls.call_schema,
                at,
                f"compensate through {cls.name!r}",
                of_connection=set(cls.options_schema.get("properties", {})),
            )
        compiled = self.call_options(options, at, names)
        if compiled is None:
            return None
        return {
            "compensate": compiled,
            "compensate_connection": name,
            "compensate_key": (
                self.templates.key_template(key, [*at, "idempotency_key"], names, "idempotency_key")
                if key is not None
                else None
            ),
        }
