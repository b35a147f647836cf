"""The engine's branches of flowyard's error tree: definitions, records and runs.

The tree is drawn once, in ``connectors/errors.py`` (where the root and the connector
branch live, since connectors never import the engine); this module adds ``FlowError``,
``RecordError`` and ``RunError`` with their subclasses and re-exports the rest, so
``from engine.errors import ...`` finds every class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from connectors.errors import ConnectorError, FlowyardError, PermanentError, TransientError

__all__ = [
    "CircuitOpen",
    "ConflictError",
    "ConnectorError",
    "FlowError",
    "FlowyardError",
    "LaneLost",
    "LockHeld",
    "MappingError",
    "PermanentError",
    "Problem",
    "RecordError",
    "RecordRejected",
    "RecordValidationError",
    "RunError",
    "SourceUnavailable",
    "StateError",
    "TransientError",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a definition, and where: file, 1-based line and column, flow path."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        at = f" at {self.path}" if self.path else ""
        return f"{where}: {self.severity}{at}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FlowError(FlowyardError):
    """A flow or mapping definition is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"] or self.problems
        summary = "\n".join(str(p) for p in errors)
        super().__init__(summary or "invalid flow")


class RecordError(FlowyardError):
    """One record cannot be processed; the run dead-letters it and goes on."""


class MappingError(RecordError):
    """A mapping failed on a record: names the mapping, the field and the record key."""

    def __init__(self, message: str, *, mapping: str = "", field: str = "", record_key: str = ""):
        super().__init__(message)
        self.mapping = mapping
        self.field = field
        self.record_key = record_key


class RecordValidationError(RecordError):
    """A record does not match its canonical schema: ``path`` in the record (``lines[0].sku``),
    the schema's ``rule`` it broke (``type``, ``required`` ...) and the schema's ``schema_id``."""

    path: str = ""
    rule: str | None = None
    schema_id: str = ""


class ConflictError(RecordError):
    """An applied record came back changed and the flow says ``on_change: conflict``."""


class RecordRejected(RecordError):
    """A flow's ``fail`` step refused the record; the message is the flow's own reason."""


class RunError(FlowyardError):
    """The run could not proceed; the CLI exits 3."""


class LockHeld(RunError):
    """Another run of the same flow holds the lease."""


class SourceUnavailable(RunError):
    """The flow's source could not be read."""


class CircuitOpen(RunError):
    """A connection's circuit breaker is open; the records that need it are left for later."""


class LaneLost(RunError):
    """A lane process of the run ended before the run did (killed), or could not start:
    the run commits nothing more (engine/lane_processes.py)."""


class StateError(RunError):
    """The state file or the run-log folder cannot be used: not a flowyard state, damaged,
    read-only, or the disk is full. ``path`` names the file; the CLI exits 4."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path
