"""flowyard's engine: load YAML flows, run them through connectors, remember what was sent.

The public API is what ``__all__`` lists; everything else is internal.

Each name is imported from its module on first use (PEP 562), not when the package is:
``flowyard validate`` needs the loader, not the runner, the state store, ``serve`` or
``init``, and importing them all cost it about a fifth of its start-up
(docs/benchmarks.md, start-up). ``from engine import Engine`` works as before.
"""

import importlib
import typing

if typing.TYPE_CHECKING:
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

# each public name and the module it lives in
_HOMES = {
    "engine.api": ("Decision", "Engine", "default_state"),
    "engine.codec": ("dumps",),
    "engine.errors": (
        "CircuitOpen",
        "ConflictError",
        "ConnectorError",
        "FlowError",
        "FlowyardError",
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
    ),
    "engine.model": ("Flow",),
    "engine.outcomes": ("Outcome", "RunStatus"),
    "engine.runner": ("RunResult",),
    "engine.scaffold": ("InitError",),
    "engine.serve.intake": ("IntakeAnswer",),
    "engine.serve.options": ("EmailSettings", "ServeOptions"),
    "engine.store": (
        "DeadLetter",
        "Pruned",
        "ReviewItem",
        "Run",
        "StateStore",
        "Trace",
        "WorkItem",
    ),
    "engine.work_items": ("QueueRow", "age_text"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

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


def __getattr__(name: str) -> typing.Any:
    """A public name, imported from its module the first time it is asked for."""
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked once: later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
