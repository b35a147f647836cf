"""What a load-time builder found, returned with what it built.

The builders of a flow's parts (connections and the source, the steps, the labels) never
change the loader. Each is given the flow file as read (:class:`FlowText`) and the paths
refused before it ran, reports into a :class:`Reporter` of its own, and returns
:class:`Built`: the part, and its :class:`Findings` (problems at their place, values
refused, files read, where ``${env:NAME}`` is resolved, the vars and connections used).
The loader collects the findings in the order the builders ran, so a builder's problems
stay quiet under a value an earlier one refused, as if one reporter had heard them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from engine._sandbox import FlowyardEnvironment
from engine.errors import Problem
from engine.load_templates import FlowTemplates
from engine.yamlpos import format_path, key_position, position

T = TypeVar("T")


def under(path: str, prefix: str) -> bool:
    """Whether the formatted ``path`` is ``prefix`` or lies below it."""
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


@dataclass(frozen=True)
class FlowText:
    """The flow file as the builders read it: its path (as given), its YAML with the
    position of every value, and its lines (for a line inside a multi-line template)."""

    path: Path
    data: Any
    lines: list[str]

    @property
    def file(self) -> str:
        return str(self.path)


@dataclass
class Findings:
    """What a builder found besides what it built."""

    problems: list[Problem] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # paths whose value was refused
    digests: dict[str, str] = field(default_factory=dict)  # SHA-256 of each file read
    env_ok: list[str] = field(default_factory=list)  # paths where ${env:NAME} is resolved
    vars_used: dict[str, list[Any]] = field(default_factory=dict)  # vars.NAME: first use
    connections_used: set[str] = field(default_factory=set)  # by the source or a step


@dataclass(frozen=True)
class Built(Generic[T]):
    """A part of a flow as a builder built it, with what the builder found."""

    value: T
    findings: Findings


class Reporter:
    """Reports problems at their place in one flow file and collects :class:`Findings`.

    ``refused``: the paths refused before (by the YAML reader, the schema, earlier
    builders); a problem at or below one of them stays quiet. ``templates`` checks and
    compiles templates, reporting here and noting the vars they read.
    """

    def __init__(self, text: FlowText, env: FlowyardEnvironment, refused: Iterable[str] = ()):
        self.text = text
        self.findings = Findings()
        self.templates = FlowTemplates(env, self.problem)
        self.findings.vars_used = self.templates.vars_used
        self._quiet = list(refused)  # refused before this reporter, and by it

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
        if any(under(where, done) for done in self._quiet):
            return  # the value itself was refused already; one message is enough
        data, lines = self.text.data, self.text.lines
        at = (key_position if at_key else position)(data, path)
        line, column = at or (None, None)
        if at is not None and lineno and lineno > 1:
            text = lines[at[0] - 1][at[1] - 1 :] if at[0] <= len(lines) else ""
            # a block scalar (| or >) starts on the line below its indicator
            line = at[0] + lineno - 1 + (1 if text[:1] in "|>" else 0)
            column = None
        self.findings.problems.append(
            Problem(self.text.file, line, column, where, message, severity)
        )

    def refuse(self, path: list[Any], message: str, *, at_key: bool = False) -> None:
        """Report a problem and keep later checks quiet about the same value."""
        self.problem(path, message, at_key=at_key)
        where = format_path(path)
        self._quiet.append(where)
        self.findings.refused.append(where)

    def refused_under(self, path: list[Any]) -> bool:
        """Whether a value at or below ``path`` was refused already."""
        where = format_path(path)
        return any(under(done, where) for done in self._quiet)

    @property
    def quiet(self) -> list[str]:
        """Every path refused so far: for the next builder."""
        return list(self._quiet)

    def take(self, found: Findings) -> None:
        """Collect what a builder found (after the builder ran, in the order they ran)."""
        self.findings.problems += found.problems
        self.findings.refused += found.refused
        self._quiet += found.refused
        self.findings.digests.update(found.digests)
        self.findings.env_ok += found.env_ok
        for name, path in found.vars_used.items():
            self.findings.vars_used.setdefault(name, path)
        self.findings.connections_used |= found.connections_used

    def built(self, value: T) -> Built[T]:
        """``value`` with what this reporter found."""
        return Built(value, self.findings)
