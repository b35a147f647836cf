"""Offline tests of a flow: ``<flow>.test.yaml`` beside it, run by ``flowyard test``.

A test file gives records (inline or from files), stubbed answers for the flow's
connections (``engine/stubs.py``) and, per case, what must come of the record: its
outcome, its path through the steps, the record after given steps, the requests each
connection received, and the reasons of its dead letters and review items. Each case runs
the real engine (mappings, schemas, templates, routes, idempotency keys, the state store)
on a copy of the flow whose connections answer from the stubs, against a state file in a
temporary folder that is deleted afterwards: nothing is sent, nothing is left behind.

The file's format is documented in docs/testing-flows.md; :data:`TEST_SCHEMA` checks it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from engine import packaged
from engine.envrefs import ENV_CONTEXT
from engine.errors import FlowError, Problem
from engine.flowtest_results import (
    ABSENT,
    CaseResult,
    Difference,
    FileResult,
    TestReport,
)
from engine.flowtest_update import EXPECT_KEYS, rewrite_expectations
from engine.model import (
    CallStep,
    FilterStep,
    Flow,
    ForeachStep,
    Rendered,
    RetryPolicy,
    RouteStep,
    Step,
)
from engine.stubs import Book, Stub, plain, stub_class
from engine.suggest import did_you_mean
from engine.yamlpos import format_path, key_position, load_yaml, position

if TYPE_CHECKING:
    from engine.api import Engine

OUTCOMES = ["done", "skipped", "filtered", "dead_lettered", "review", "parked"]
_PROBE = "fy_probe:"  # the names of the steps that catch the record after a step
_STUB_CONNECTOR = "flowyard-test:"

_STUBS = {
    "type": "object",
    "description": "Answers per connection name: a list of stubs, the first that fits answers.",
    "additionalProperties": {"type": "array", "items": {"$ref": "#/definitions/stub"}},
}
TEST_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "flowyard flow test file",
    "type": "object",
    "additionalProperties": False,
    "required": ["cases"],
    "properties": {
        "flow": {"type": "string", "description": "The flow file, relative to this file."},
        "description": {"type": "string", "description": "What these tests cover."},
        "vars": {"type": "object", "description": "Flow vars for every case."},
        "env": {
            "type": "object",
            "description": "Values of the flow's ${env:NAME} (default: test-NAME).",
            "additionalProperties": {"type": "string"},
        },
        "stubs": _STUBS,
        "cases": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/case"}},
    },
    "definitions": {
        "stub": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "match": {"type": "object", "description": "Options the request must have."},
                "answer": {"description": "The response body (default null)."},
                "status": {"type": "integer", "description": "The response status (200)."},
                "error": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["kind"],
                    "properties": {
                        "kind": {"enum": ["transient", "permanent"]},
                        "message": {"type": "string"},
                        "status": {"type": "integer"},
                    },
                },
                "times": {"type": "integer", "minimum": 1, "description": "Answer N requests."},
            },
        },
        "case": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "record": {"description": "The record the source delivers."},
                "record_file": {
                    "type": "string",
                    "description": "A JSON, YAML or NDJSON file, relative to the test file.",
                },
                "line": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "The record on this line of an NDJSON record_file.",
                },
                "vars": {"type": "object"},
                "stubs": _STUBS,
                "expect": {"$ref": "#/definitions/expect"},
            },
        },
        "expect": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "outcome": {"enum": OUTCOMES},
                "path": {
                    "type": "array",
                    "items": {"type": "object", "minProperties": 1, "maxProperties": 1},
                    "description": "Each step the record went through: {step: what it did}.",
                },
                "records": {"type": "object", "description": "Step name -> the record after it."},
                "requests": {
                    "type": "object",
                    "additionalProperties": {"type": "array"},
                    "description": "Connection -> the options of every request, in order.",
                },
                "dead_letters": {"type": "array", "items": {"type": "object"}},
                "reviews": {"type": "array", "items": {"type": "object"}},
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft7Validator(TEST_SCHEMA)


class _ExactLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML whose numbers with a fraction are Decimals of their own digits (19.90 stays
    19.90, not 19.9), as flowyard's connectors read JSON: the records and stubbed answers
    of a test keep their money as a real payload would."""


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        value = Decimal(str(loader.construct_scalar(node)).replace("_", ""))
    except InvalidOperation:  # .inf, .nan, 1:30.5 (sexagesimal)
        return loader.construct_yaml_float(node)
    return value if value.is_finite() else loader.construct_yaml_float(node)


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _decimal)


# -- finding test files ------------------------------------------------------------------------
def find_test_files(paths: list[Path]) -> tuple[list[Path], list[Problem]]:
    """Test files from what a user names: a test file, a flow (its test file beside it), a
    folder (every ``*.test.yaml`` below it), or a shipped flow's name."""
    found: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob(f"*{packaged.TEST_SUFFIX}")
                if not _skipped(p.relative_to(path))
            )
        elif path.name.endswith(packaged.TEST_SUFFIX) and path.is_file():
            found.append(path)
        elif path.is_file():
            tests = packaged.flow_tests_file(path)
            if tests.is_file():
                found.append(tests)
            else:
                problems.append(
                    Problem(str(path), None, None, "", f"no test file {tests} beside the flow")
                )
        elif not path.exists() and (shipped := packaged.flow_file(str(path))) is not None:
            tests = packaged.flow_tests_file(shipped)
            if tests.is_file():
                found.append(tests)
        else:
            problems.append(Problem(str(path), None, None, "", "no such file or folder"))
    return list(dict.fromkeys(found)), problems


def _skipped(relative: Path) -> bool:
    """A folder a search for test files stays out of: hidden ones (``.venv``, ``.git``)
    and installed packages (whose shipped flows have tests of their own)."""
    return any(
        part.startswith(".") or part in ("site-packages", "node_modules")
        for part in relative.parts[:-1]
    )


# -- one test file ---------------------------------------------------------------------------
class _TestFile:
    """One test file: read, checked, its flow loaded, its cases run (and rewritten)."""

    def __init__(self, path: Path, engine: Engine):
        self.path = path
        self.file = str(path)
        self.engine = engine
        self.data: Any = None
        self.exact: Any = None  # the same, read with _ExactLoader: what a case runs with
        self.text = ""
        self.problems: list[Problem] = []

    def problem(self, path: list[Any], message: str, *, at_key: bool = False) -> None:
        line, column = (key_position if at_key else position)(self.data, path) or (None, None)
        self.problems.append(Problem(self.file, line, column, format_path(path), message))

    def read(self) -> bool:
        try:
            self.text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(Problem(self.file, None, None, "", f"cannot read: {exc}"))
            return False
        self.data, problems = load_yaml(self.text, self.file)
        self.problems += problems
        if not isinstance(self.data, dict):
            if not problems:
                self.problems.append(
                    Problem(self.file, 1, 1, "", "a test file is a mapping with `cases:`")
                )
            return False
        for err in sorted(_VALIDATOR.iter_errors(self.data), key=lambda e: list(map(str, e.path))):
            if err.validator == "additionalProperties":
                allowed = set(err.schema.get("properties", {}))
                for extra in sorted(set(err.instance) - allowed, key=str):
                    self.problem(
                        [*err.absolute_path, extra],
                        f"unknown key {extra!r}{did_you_mean(extra, allowed)}; expected one "
                        f"of: {', '.join(sorted(allowed))}",
                        at_key=True,
                    )
            else:
                self.problem(list(err.absolute_path), err.message)
        if not self.problems:
            self.exact = yaml.load(self.text, Loader=_ExactLoader)
        return not self.problems

    def flow_path(self) -> Path:
        name = self.data.get("flow")
        if isinstance(name, str):
            return (self.path.parent / name).resolve()
        return self.path.with_name(self.path.name[: -len(packaged.TEST_SUFFIX)] + ".yaml")

    def load_flow(self) -> Flow | None:
        path = self.flow_path()
        if not path.is_file():
            self.problem(["flow"] if "flow" in self.data else [], f"no flow file {path}")
            return None
        try:
            return self.engine.load(path)
        except FlowError as exc:
            self.problems += exc.problems
            return None

    def check_names(self, flow: Flow) -> None:
        """Stubs of connections the flow has, records of steps it has."""
        places: list[tuple[list[Any], Any]] = [(["stubs"], self.data.get("stubs") or {})]
        for i, case in enumerate(self.data["cases"]):
            places.append((["cases", i, "stubs"], case.get("stubs") or {}))
            records = (case.get("expect") or {}).get("records") or {}
            for name in records:
                if flow.step(name) is None:
                    steps = [s.name for s, _, _ in flow.walk()]
                    self.problem(
                        ["cases", i, "expect", "records", name],
                        f"no step {name!r} in flow {flow.name}{did_you_mean(name, steps)}",
                        at_key=True,
                    )
            if ("record" in case) == ("record_file" in case):
                self.problem(["cases", i], "give the case's record: `record:` or `record_file:`")
        for path, stubs in places:
            for name in stubs:
                if name not in flow.connections:
                    self.problem(
                        [*path, name],
                        f"no connection {name!r} in flow {flow.name}"
                        f"{did_you_mean(name, flow.connections)}; its connections: "
                        f"{', '.join(sorted(flow.connections))}",
                        at_key=True,
                    )

    def record(self, case: dict[str, Any], i: int) -> tuple[Any, str | None]:
        from connectors._json import dumps, loads

        if "record" in case:
            return loads(dumps(self.exact["cases"][i]["record"])), None

        path = self.path.parent / case["record_file"]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"record_file {path}: cannot read it: {exc}"
        if path.suffix == ".ndjson" or "line" in case:
            lines = text.splitlines()
            number = case.get("line", 1)
            if "line" not in case and len([x for x in lines if x.strip()]) > 1:
                return None, f"record_file {path} holds several records: say which (line: N)"
            if number > len(lines) or not lines[number - 1].strip():
                return None, f"record_file {path}: no record on line {number}"
            try:
                return loads(lines[number - 1]), None
            except ValueError as exc:
                return None, f"record_file {path}:{number}: not JSON: {exc}"
        if path.suffix == ".json":
            try:
                return loads(text), None
            except ValueError as exc:
                return None, f"record_file {path}: not JSON: {exc}"
        try:
            return loads(dumps(yaml.load(text, Loader=_ExactLoader))), None
        except yaml.YAMLError as exc:
            return None, f"record_file {path}: not YAML: {exc}"

    # -- running --------------------------------------------------------------------------------
    def run(self, select: str | None, update: bool) -> FileResult:
        result = FileResult(self.file, None)
        flow = self.load_flow() if self.read() else None
        if flow is None:
            result.problems = self.problems
            return result
        self.check_names(flow)
        result.flow = flow.name
        if self.problems:
            result.problems = self.problems
            return result
        with tempfile.TemporaryDirectory(prefix="flowyard-test-") as tmp:
            for i, case in enumerate(self.data["cases"]):
                if select and select.lower() not in str(case["name"]).lower():
                    continue
                result.cases.append(self.run_case(flow, case, i, Path(tmp)))
        if update:
            result.updated = rewrite_expectations(self, result.cases)
        return result

    def run_case(self, flow: Flow, case: dict[str, Any], i: int, tmp: Path) -> CaseResult:
        started = time.perf_counter()
        line = position(self.data, ["cases", i])
        outcome = CaseResult(str(case["name"]), "error", 0.0, line[0] if line else None)
        record, why = self.record(case, i)
        if why:
            outcome.message = why
            return outcome
        expect = case.get("expect") or {}
        stubs = self.exact["cases"][i].get("stubs"), self.exact.get("stubs")
        books = {
            name: Book(name, _stubs(stubs[0], name) + _stubs(stubs[1], name))
            for name in flow.connections
        }
        captured: dict[str, list[Any]] = {name: [] for name in expect.get("records") or {}}
        env = {**_placeholders(flow), **(self.data.get("env") or {})}
        copy = _test_copy(flow, env, captured)
        from engine.api import Engine

        engine = Engine(state=tmp / f"case-{i}.db")
        for name, book in books.items():
            engine.register_connector(_STUB_CONNECTOR + name, stub_class(book))
        run_vars = {**(self.data.get("vars") or {}), **(case.get("vars") or {})}
        run = engine.run(copy, records=[record], vars=plain(run_vars))
        outcome.duration_s = round(time.perf_counter() - started, 3)
        if run.status == "failed":
            outcome.message = f"the run failed: {run.message}"
            return outcome
        outcome.got = _got(engine, run.run_id, flow.name, books, captured)
        outcome.differences = [
            Difference(
                "unanswered",
                ABSENT,
                f"connection {u.connection!r}: no stub matches the request {plain(u.options)}",
            )
            for book in books.values()
            for u in book.unanswered
        ]
        outcome.differences += _compare(expect, outcome.got)
        if not expect:
            outcome.differences.append(
                Difference(
                    "expect",
                    ABSENT,
                    "the case expects nothing: write `expect:`, or "
                    "run with --update to record what it does, then review that",
                )
            )
        outcome.status = "failed" if outcome.differences else "passed"
        return outcome


def run_tests(
    engine: Engine, paths: list[Path], *, select: str | None = None, update: bool = False
) -> TestReport:
    """Run the test files found at ``paths`` (see :func:`find_test_files`)."""
    started = time.perf_counter()
    files, problems = find_test_files(paths)
    report = TestReport([FileResult(p.file, None, problems=[p]) for p in problems])
    if not files and not problems:
        here = ", ".join(map(str, paths))
        report.files.append(
            FileResult(here, None, problems=[Problem(here, None, None, "", "no test files here")])
        )
    for path in files:
        report.files.append(_TestFile(path, engine).run(select, update))
    report.duration_s = round(time.perf_counter() - started, 3)
    return report


# -- the flow under test ----------------------------------------------------------------------
def _placeholders(flow: Flow) -> dict[str, str]:
    """A stand-in value for each ``${env:NAME}`` and ``${file:PATH}`` (no secret is read)."""
    return {name: f"test-{name.replace(':', '-').replace('/', '-')}" for name in flow.env_names}


def _stubs(given: dict[str, Any] | None, connection: str) -> list[Stub]:
    return [
        Stub(
            match=dict(s.get("match") or {}),
            answer=s.get("answer"),
            status=s.get("status"),
            error=s.get("error"),
            times=s.get("times"),
        )
        for s in (given or {}).get(connection) or []
    ]


def _fast(policy: RetryPolicy) -> RetryPolicy:
    """The same number of attempts, no waiting between them."""
    return replace(policy, backoff=0.0, max_backoff=0.0, jitter=False)


def _test_copy(flow: Flow, env: dict[str, str], captured: dict[str, list[Any]]) -> Flow:
    """``flow`` with every connection a stub, no waits between attempts, the test's values
    for secrets, and a probe after each step whose record the case expects."""
    connections = {
        name: replace(
            conn,
            connector=_STUB_CONNECTOR + name,
            options={},
            rate_limit=None,
            retry=_fast(conn.retry),
        )
        for name, conn in flow.connections.items()
    }

    def copy(steps: list[Step]) -> list[Step]:
        out: list[Step] = []
        for step in steps:
            if isinstance(step, RouteStep):
                branches = [replace(b, steps=copy(b.steps)) for b in step.branches]
                step = replace(step, branches=branches)
            elif isinstance(step, ForeachStep):
                step = replace(step, steps=copy(step.steps))
            elif isinstance(step, CallStep):
                retry = None if step.retry is None else _fast(step.retry)
                step = replace(step, retry=retry, options=_with_env(step.options, env))
            out.append(step)
            if step.name in captured:
                out.append(_probe(step, captured[step.name]))
        return out

    return replace(
        flow,
        connections=connections,
        steps=copy(flow.steps),
        env_names=set(),  # the stubs need no secret: none is read
        warnings=[],
    )


def _with_env(options: Rendered, env: dict[str, str]) -> Rendered:
    def render(ctx: dict[str, Any]) -> Any:
        return options({**ctx, ENV_CONTEXT: env})

    return render


def _probe(step: Step, into: list[Any]) -> FilterStep:
    """A step that keeps every record and notes it: the record after ``step``."""

    def keep(ctx: dict[str, Any]) -> bool:
        into.append(plain(ctx["record"]))
        return True

    return FilterStep(
        name=_PROBE + step.name, kind="filter", path=step.path, line=step.line, condition=keep
    )


# -- what happened, and whether it was expected -----------------------------------------------
def _got(
    engine: Engine,
    run_id: str,
    flow: str,
    books: dict[str, Book],
    captured: dict[str, list[Any]],
) -> dict[str, Any]:
    with engine.store() as store:
        rows = store.run_records(run_id)
        letters = store.dead_letters(flow=flow, status="open")
        # review items and approvals: both wait for a person (an approval says its kind)
        reviews = store.work_items(flow=flow, status="open")
    got: dict[str, Any] = {}
    if rows:
        got["outcome"] = rows[0].outcome.value
        got["path"] = [
            {str(step[0]): step[1]}
            for row in rows
            for step in row.steps or []
            if not str(step[0]).startswith(_PROBE)
        ]
    got["records"] = {
        name: (values[0] if len(values) == 1 else values) if values else None
        for name, values in captured.items()
    }
    got["requests"] = {name: b.requests for name, b in books.items() if b.requests}
    got["dead_letters"] = [
        {
            **({"record_key": d.record_key} if rows and d.record_key != rows[0].record_key else {}),
            "step": d.step,
            "error": d.error_class,
            "reason": d.message,
        }
        for d in letters
    ]
    got["reviews"] = [
        {
            "step": r.step,
            "queue": r.queue,
            "reason": r.reason,
            "figures": plain(r.figures),
            **({"kind": "approval"} if r.kind == "approval" else {}),
        }
        for r in reviews
        if r.kind in ("review", "approval")
    ]
    plain_got: dict[str, Any] = plain(got)
    return plain_got


def _compare(expect: dict[str, Any], got: dict[str, Any]) -> list[Difference]:
    differences = []
    for key in EXPECT_KEYS:
        if key not in expect:
            continue
        wanted = plain(expect[key])
        have: Any  # what the run gave, in the form the test wrote
        if key == "records":
            have = {name: got["records"].get(name) for name in wanted}
        elif key in ("dead_letters", "reviews"):
            have = [_like(w, g) for w, g in _pairs(wanted, got[key])]
        else:
            have = got.get(key, [] if key in ("path", "reviews") else None)
            if key == "requests":
                wanted = {name: reqs for name, reqs in wanted.items() if reqs}
        if wanted != have:
            differences.append(Difference(key, wanted, have))
    return differences


def _pairs(wanted: list[Any], got: list[Any]) -> list[tuple[Any, Any]]:
    return [(wanted[i] if i < len(wanted) else {}, g) for i, g in enumerate(got)]


def _like(wanted: Any, got: dict[str, Any]) -> dict[str, Any]:
    """A dead letter or review item as the test wrote it: keys the test left out are not
    compared, and ``reason_contains`` is met by a reason holding that text."""
    if not isinstance(wanted, dict):
        return got
    have = {k: v for k, v in got.items() if k in wanted}
    if "reason_contains" in wanted:
        text = str(wanted["reason_contains"])
        have["reason_contains"] = text if text in str(got.get("reason")) else got.get("reason")
    return have
