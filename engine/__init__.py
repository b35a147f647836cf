"""flowyard's engine: load YAML flows, run them through connectors, remember what was sent.

The public API is what ``__all__`` lists; everything else is internal.
"""

from engine.api import Engine, default_state
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
from engine.runner import RunResult
from engine.store import DeadLetter, ReviewItem

__all__ = [
    "CircuitOpen",
    "ConflictError",
    "ConnectorError",
    "DeadLetter",
    "Engine",
    "Flow",
    "FlowError",
    "FlowyardError",
    "LockHeld",
    "MappingError",
    "PermanentError",
    "Problem",
    "RecordError",
    "RecordRejected",
    "RecordValidationError",
    "ReviewItem",
    "RunError",
    "RunResult",
    "SourceUnavailable",
    "StateError",
    "TransientError",
    "default_state",
]
