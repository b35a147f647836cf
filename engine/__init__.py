"""flowyard's engine: load YAML flows, run them through connectors, remember what was sent.

The public API is what ``__all__`` lists; everything else is internal.
"""

from engine.api import Decision, Engine, default_state
from engine.codec import dumps
from engine.errors import (
    CircuitOpen,
    ConflictError,
    ConnectorError,
    FlowError,
    FlowyardError,
    LockHeld,
    MappingError,
    PermanentError,
    Problem,
    RecordError,
    RecordRejected,
    RecordValidationError,
    RunError,
    SourceUnavailable,
    StateError,
    TransientError,
)
from engine.model import Flow
from engine.outcomes import Outcome, RunStatus
from engine.runner import RunResult
from engine.scaffold import InitError
from engine.serve.intake import IntakeAnswer
from engine.serve.options import EmailSettings, ServeOptions
from engine.store import DeadLetter, Pruned, ReviewItem, Run, StateStore, Trace, WorkItem
from engine.work_items import QueueRow, age_text

__all__ = [
    "CircuitOpen",
    "ConflictError",
    "ConnectorError",
    "DeadLetter",
    "Decision",
    "EmailSettings",
    "Engine",
    "Flow",
    "FlowError",
    "FlowyardError",
    "InitError",
    "IntakeAnswer",
    "LockHeld",
    "MappingError",
    "Outcome",
    "PermanentError",
    "Problem",
    "Pruned",
    "QueueRow",
    "RecordError",
    "RecordRejected",
    "RecordValidationError",
    "ReviewItem",
    "Run",
    "RunError",
    "RunResult",
    "RunStatus",
    "ServeOptions",
    "SourceUnavailable",
    "StateError",
    "StateStore",
    "Trace",
    "TransientError",
    "WorkItem",
    "age_text",
    "default_state",
    "dumps",
]
