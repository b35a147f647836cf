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

import difflib
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from engine import packaged
from engine.envrefs import ENV_CONTEXT
from engine.errors import FlowError, Problem
from engine.flow_schema import did_you_mean
from engine.model import (
    CallStep,
    FilterStep,
    Flow,
    ForeachStep,
    RetryPolicy,
    RouteStep,
    Step,
)
from engine.stubs import Book, Stub, exact, plain, stub_class
from engine.yamlpos import format_path, key_position, load_yaml, position

if TYPE_CHECKING:
    from engine.api import Engine

OUTCOMES = ["done", "skipped", "filtered", "dead_lettered", "review", "parked"]
# what --update writes, in this order; "records" only for the steps a case names
EXPECT_KEYS = ("outcome", "path", "records", "requests", "dead_letters", "reviews")
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


# -- results ----------------------------------------------------------------------------------
@dataclass
class Difference:
    """One expectation a case did not meet: ``what`` (``outcome``, ``requests`` ...)."""

    what: str
    expected: Any
    got: Any

    def diff(self) -> str:
        """Expected against got as a unified diff of their YAML."""
        if self.expected is _ABSENT:
            return f"{self.what}: {self.got}"
        before = _yaml({self.what: self.expected}).splitlines()
        after = _yaml({self.what: self.got}).splitlines()
        lines = difflib.unified_diff(before, after, "expected", "got", lineterm="", n=2)
        return "\n".join(lines)


_ABSENT = object()  # a Difference that is a plain message (a request no stub answered)


@dataclass
class CaseResult:
    """How one case went: ``passed``, ``failed`` (see ``differences``) or ``error`` (the
    record could not be run: ``message``)."""

    name: str
    status: str
    duration_s: float
    line: int | None = None
    differences: list[Difference] = field(default_factory=list)
    got: dict[str, Any] = field(default_factory=dict)
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "line": self.line,
            "duration_s": self.duration_s,
            "message": self.message,
            "differences": [
                {
                    "what": d.what,
                    "expected": None if d.expected is _ABSENT else d.expected,
                    "got": d.got,
                }
                for d in self.differences
            ],
            "got": self.got,
        }


@dataclass
class FileResult:
    """The cases of one test file, or the problems that kept it from running."""

    file: str
    flow: str | None
    cases: list[CaseResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # cases whose expectations were rewritten

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "flow": self.flow,
            "problems": [p.to_dict() for p in self.problems],
            "updated": self.updated,
            "cases": [c.to_dict() for c in self.cases],
        }


@dataclass
class TestReport:
    """Every test file run: counts, the exit code they imply, and a text for people."""

    __test__ = False  # not a pytest class, whatever its name

    files: list[FileResult]
    duration_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for f in self.files for c in f.cases if c.status == status)

    @property
    def invalid(self) -> bool:
        return any(p.severity == "error" for f in self.files for p in f.problems)

    @property
    def ok(self) -> bool:
        """Every case passed and every file was valid."""
        return not self.invalid and self.count("passed") == sum(len(f.cases) for f in self.files)

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 a case failed, 2 a test file (or its flow) is invalid."""
        if self.invalid:
            return 2
        return 0 if self.ok else 1

    def summary(self) -> str:
        parts = [f"{self.count('passed')} passed"]
        for status in ("failed", "error"):
            if self.count(status):
                parts.append(f"{self.count(status)} {status}")
        updated = sum(len(f.updated) for f in self.files)
        if updated:
            parts.append(f"{updated} updated")
        bad = sum(1 for f in self.files if any(p.severity == "error" for p in f.problems))
        if bad:
            parts.append(f"{bad} file(s) invalid")
        return ", ".join(parts) + f" in {self.duration_s:.2f} s"

    def text(self) -> str:
        """The whole report as people read it: each case, a diff for each failure."""
        out: list[str] = []
        for f in self.files:
            out.append(f.file + (f" (flow {f.flow})" if f.flow else ""))
            out += [f"  {p}" for p in f.problems]
            for case in f.cases:
                mark = {"passed": "ok  ", "failed": "FAIL", "error": "ERR "}[case.status]
                where = f"line {case.line}: " if case.line else ""
                out.append(f"  {mark}  {where}{case.name} ({case.duration_s:.2f} s)")
                if case.message:
                    out.append(f"        {case.message}")
                for difference in case.differences:
                    out += ["        " + line for line in difference.diff().splitlines()]
                if case.name in f.updated:
                    out.append("        expectations rewritten (--update)")
        out.append(self.summary())
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "errors": self.count("error"),
            "exit_code": self.exit_code,
            "duration_s": self.duration_s,
            "files": [f.to_dict() for f in self.files],
        }


# -- finding test files ------------------------------------------------------------------------
def find_test_files(paths: list[Path]) -> tuple[list[Path], list[Problem]]:
    """Test files from what a user names: a test file, a flow (its test file beside it), a
    folder (every ``*.test.yaml`` below it), or a shipped flow's name."""
    found: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.rglob(f"*{packaged.TEST_SUFFIX}"))
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
        elif not path.exists() and packaged.flow_file(str(path)) is not None:
            tests = packaged.flow_tests_file(packaged.flow_file(str(path)))
            if tests.is_file():
                found.append(tests)
        else:
            problems.append(Problem(str(path), None, None, "", "no such file or folder"))
    return list(dict.fromkeys(found)), problems


# -- one test file ---------------------------------------------------------------------------
class _TestFile:
    """One test file: read, checked, its flow loaded, its cases run (and rewritten)."""

    def __init__(self, path: Path, engine: Engine):
        self.path = path
        self.file = str(path)
        self.engine = engine
        self.data: Any = None
        self.text = ""
        self.problems: list[Problem] = []
        self.flow: Flow | None = None

    def problem(self, path: list[Any], message: str, *, at_key: bool = False) -> None:
        where = (key_position if at_key else position)(self.data, path) or (None, None)
        self.problems.append(Problem(self.file, *where, format_path(path), message))

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
        return not self.problems

    def flow_path(self) -> Path:
        name = self.data.get("flow")
        if isinstance(name, str):
            return (self.path.parent / name).resolve()
        return self.path.with_name(self.path.name[: -len(packaged.TEST_SUFFIX)] + ".yaml")

    def load_flow(self) -> bool:
        path = self.flow_path()
        if not path.is_file():
            self.problem(["flow"] if "flow" in self.data else [], f"no flow file {path}")
            return False
        try:
            self.flow = self.engine.load(path)
        except FlowError as exc:
            self.problems += exc.problems
            return False
        return True

    def check_names(self) -> None:
        """Stubs of connections the flow has, records of steps it has."""
        flow = self.flow
        places = [(["stubs"], self.data.get("stubs") or {})]
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

    def record(self, case: dict, i: int) -> tuple[Any, str | None]:
        if "record" in case:
            return exact(plain(case["record"])), None
        from connectors._json import loads

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
            return exact(plain(yaml.safe_load(text))), None
        except yaml.YAMLError as exc:
            return None, f"record_file {path}: not YAML: {exc}"

    # -- running --------------------------------------------------------------------------------
    def run(self, select: str | None, update: bool) -> FileResult:
        result = FileResult(self.file, None)
        if not self.read() or not self.load_flow():
            result.problems = self.problems
            return result
        self.check_names()
        result.flow = self.flow.name
        if self.problems:
            result.problems = self.problems
            return result
        with tempfile.TemporaryDirectory(prefix="flowyard-test-") as tmp:
            for i, case in enumerate(self.data["cases"]):
                if select and select.lower() not in str(case["name"]).lower():
                    continue
                result.cases.append(self.run_case(case, i, Path(tmp)))
        if update:
            result.updated = self.update(result.cases)
        return result

    def run_case(self, case: dict, i: int, tmp: Path) -> CaseResult:
        started = time.perf_counter()
        line = position(self.data, ["cases", i])
        outcome = CaseResult(str(case["name"]), "error", 0.0, line[0] if line else None)
        record, why = self.record(case, i)
        if why:
            outcome.message = why
            return outcome
        expect = case.get("expect") or {}
        books = {
            name: Book(name, _stubs(case.get("stubs"), name) + _stubs(self.data.get("stubs"), name))
            for name in self.flow.connections
        }
        captured: dict[str, list[Any]] = {name: [] for name in expect.get("records") or {}}
        env = {**_placeholders(self.flow), **(self.data.get("env") or {})}
        flow = _test_copy(self.flow, env, captured)
        from engine.api import Engine

        engine = Engine(state=tmp / f"case-{i}.db")
        for name, book in books.items():
            engine.register_connector(_STUB_CONNECTOR + name, stub_class(book))
        run_vars = {**(self.data.get("vars") or {}), **(case.get("vars") or {})}
        run = engine.run(flow, records=[record], vars=plain(run_vars))
        outcome.duration_s = round(time.perf_counter() - started, 3)
        if run.status == "failed":
            outcome.message = f"the run failed: {run.message}"
            return outcome
        outcome.got = _got(engine, run.run_id, self.flow.name, books, captured)
        outcome.differences = [
            Difference(
                "unanswered",
                _ABSENT,
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
                    _ABSENT,
                    "the case expects nothing: write `expect:`, or "
                    "run with --update to record what it does, then review that",
                )
            )
        outcome.status = "failed" if outcome.differences else "passed"
        return outcome

    # -- --update -------------------------------------------------------------------------------
    def update(self, cases: list[CaseResult]) -> list[str]:
        """Rewrite the ``expect:`` of each case that failed (or had none) with what it got.

        Only the lines of those ``expect:`` blocks change; the rest of the file, comments
        included, stays as it was. A case with a request no stub answered is left alone.
        """
        lines = self.text.splitlines(keepends=True)
        edits: list[tuple[int, int, list[str]]] = []  # (first line, end line, new lines)
        names = [c.name for c in cases]
        done: list[str] = []
        for i, case in enumerate(self.data["cases"]):
            name = str(case["name"])
            if name not in names:
                continue
            result = cases[names.index(name)]
            if result.status == "error" or any(d.what == "unanswered" for d in result.differences):
                continue
            if result.status == "passed" and "expect" in case:
                continue
            span = self._case_lines(i, len(lines))
            if span is None:
                continue
            first, end, indent = span
            expect = _expectation(case.get("expect") or {}, result.got)
            block = _yaml({"expect": expect}).splitlines(keepends=True)
            block = [(" " * indent + line) if line.strip() else line for line in block]
            if "expect" in case:
                start = key_position(self.data, ["cases", i, "expect"])[0] - 1
                stop = self._block_end(i, "expect", end)
            else:
                start = stop = end
            edits.append((start, stop, block))
            done.append(name)
        for start, stop, block in sorted(edits, reverse=True):
            lines[start:stop] = block
        if edits:
            self.path.write_text("".join(lines), encoding="utf-8")
        return done

    def _case_lines(self, i: int, total: int) -> tuple[int, int, int] | None:
        """(first line, end line after its last content line, key indent) of case ``i``,
        0-based; None for a case written in flow style."""
        case = self.data["cases"][i]
        keys = sorted(case.key_pos.values())
        if not keys or len({line for line, _ in keys}) != len(keys):
            return None  # keys on one line: a flow-style mapping
        first = keys[0][0] - 1
        cases = self.data["cases"]
        end = cases.item_pos[i + 1][0] - 1 if i + 1 < len(cases) else self._list_end(total)
        lines = self.text.splitlines()
        while end > first + 1 and (
            not lines[end - 1].strip() or lines[end - 1].lstrip()[:1] == "#"
        ):
            end -= 1
        # the "- " of the case's first line: its keys start after it
        return first, end, keys[0][1] - 1

    def _list_end(self, total: int) -> int:
        """The line after the cases list: the next top-level key after ``cases``, or EOF."""
        start = self.data.key_pos["cases"][0]
        later = [line for line, _ in self.data.key_pos.values() if line > start]
        return min(later) - 1 if later else total

    def _block_end(self, i: int, key: str, end: int) -> int:
        """The line after the value of ``key`` in case ``i``: the next key of the case's."""
        case = self.data["cases"][i]
        start = case.key_pos[key][0]
        later = [line for line, _ in case.key_pos.values() if line > start]
        stop = min(later) - 1 if later else end
        lines = self.text.splitlines()
        while stop > start and (not lines[stop - 1].strip() or lines[stop - 1].lstrip()[:1] == "#"):
            stop -= 1
        return stop


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


def _stubs(given: dict | None, connection: str) -> list[Stub]:
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


def _fast(policy: RetryPolicy | None) -> RetryPolicy | None:
    """The same number of attempts, no waiting between them."""
    if policy is None:
        return None
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
                step = replace(step, retry=_fast(step.retry), options=_with_env(step.options, env))
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


def _with_env(options: Any, env: dict[str, str]) -> Any:
    def render(ctx: dict) -> Any:
        return options({**ctx, ENV_CONTEXT: env})

    return render


def _probe(step: Step, into: list[Any]) -> FilterStep:
    """A step that keeps every record and notes it: the record after ``step``."""

    def keep(ctx: dict) -> bool:
        into.append(plain(ctx["record"]))
        return True

    return FilterStep(
        name=_PROBE + step.name, kind="filter", path=step.path, line=step.line, condition=keep
    )


# -- what happened, and whether it was expected -----------------------------------------------
def _got(
    engine: Engine, run_id: str, flow: str, books: dict[str, Book], captured: dict[str, list]
) -> dict[str, Any]:
    store = engine.store()
    try:
        rows = store.run_records(run_id)
        letters = store.dead_letters(flow=flow, status="open")
        reviews = store.reviews(flow=flow, status="open")
    finally:
        store.close()
    got: dict[str, Any] = {}
    if rows:
        got["outcome"] = rows[0]["outcome"]
        got["path"] = [
            {str(step[0]): step[1]}
            for row in rows
            for step in row["steps"] or []
            if not str(step[0]).startswith(_PROBE)
        ]
    got["records"] = {
        name: (values[0] if len(values) == 1 else values) if values else None
        for name, values in captured.items()
    }
    got["requests"] = {name: b.requests for name, b in books.items() if b.requests}
    got["dead_letters"] = [
        {
            **(
                {"record_key": d.record_key}
                if rows and d.record_key != rows[0]["record_key"]
                else {}
            ),
            "step": d.step,
            "error": d.error_class,
            "reason": d.message,
        }
        for d in letters
    ]
    got["reviews"] = [
        {"step": r.step, "queue": r.queue, "reason": r.reason, "figures": plain(r.figures)}
        for r in reviews
    ]
    return plain(got)


def _compare(expect: dict[str, Any], got: dict[str, Any]) -> list[Difference]:
    differences = []
    for key in EXPECT_KEYS:
        if key not in expect:
            continue
        wanted = plain(expect[key])
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


def _pairs(wanted: list, got: list) -> list[tuple[Any, Any]]:
    return [(wanted[i] if i < len(wanted) else {}, g) for i, g in enumerate(got)]


def _like(wanted: Any, got: dict) -> dict:
    """A dead letter or review item as the test wrote it: keys the test left out are not
    compared, and ``reason_contains`` is met by a reason holding that text."""
    if not isinstance(wanted, dict):
        return got
    have = {k: v for k, v in got.items() if k in wanted}
    if "reason_contains" in wanted:
        text = str(wanted["reason_contains"])
        have["reason_contains"] = text if text in str(got.get("reason")) else got.get("reason")
    return have


def _expectation(old: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """What --update writes: everything the case got, the records of the steps it named."""
    new: dict[str, Any] = {}
    for key in EXPECT_KEYS:
        if key == "records":
            if old.get("records"):
                new["records"] = {name: got["records"].get(name) for name in old["records"]}
        elif key in ("dead_letters", "reviews", "requests"):
            if got.get(key):
                new[key] = got[key]
        elif key in got:
            new[key] = got[key]
    return new


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order given, lists indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _text)


def _yaml(value: Any) -> str:
    return yaml.dump(
        value,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
