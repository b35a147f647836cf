"""What flow tests found: each case's status and differences, each file's, the whole run's;
and the text people read (a unified diff of expected against got, as YAML)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.errors import Problem


@dataclass
class Difference:
    """One expectation a case did not meet: ``what`` (``outcome``, ``requests`` ...)."""

    what: str
    expected: Any
    got: Any

    def diff(self) -> str:
        """Expected against got as a unified diff of their YAML."""
        if self.expected is ABSENT:
            return f"{self.what}: {self.got}"
        before = as_yaml({self.what: self.expected}).splitlines()
        after = as_yaml({self.what: self.got}).splitlines()
        lines = difflib.unified_diff(before, after, "expected", "got", lineterm="", n=2)
        return "\n".join(lines)


ABSENT = object()  # a Difference that is a plain message (a request no stub answered)


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
                    "expected": None if d.expected is ABSENT else d.expected,
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


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order given, lists indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _text)


def as_yaml(value: Any) -> str:
    """``value`` as block YAML, keys in their order (what --update writes, what diffs show)."""
    return yaml.dump(
        value,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
