"""Every error flowyard raises on purpose, in one tree: the only drawing of it.

The connector branch lives here, since a connector author needs it and connectors never
import the engine; the engine adds the ``FlowError``, ``RecordError`` and ``RunError``
branches (``engine.errors``; the template errors are in ``engine.templates``)::

    FlowyardError
    ├── ConnectorError                a call or read through a connector failed
    │   ├── TransientError            retried: timeouts, connection errors, 408, 429, 5xx
    │   └── PermanentError            dead-lettered at once: other 4xx, refusals
    ├── FlowError                     the flow or mapping definition is invalid (.problems)
    ├── RecordError                   one record cannot be processed; it is dead-lettered
    │   ├── MappingError              a mapping failed on this record
    │   │   └── TemplateRenderError   a template failed on it (.field, .source)
    │   │       ├── UndefinedValueError   it used a name or field the record lacks
    │   │       └── SandboxViolation      it reached for Python internals or a limit
    │   ├── RecordValidationError     the record does not match its canonical schema
    │   ├── ConflictError             a sent record changed and on_change is conflict
    │   └── RecordRejected            a `fail` step refused the record, with its reason
    └── RunError                      the run cannot proceed (exit code 3)
        ├── LockHeld                  another run of the same flow holds the lease
        ├── SourceUnavailable         the source could not be read
        ├── CircuitOpen               a connection's circuit breaker is open
        ├── LaneLost                  a lane process ended before the run did
        └── StateError                the state file or run log cannot be used (exit code 4)

Retry decisions read the error's class, never its message: ``TransientError`` is
retried (after ``retry_after`` seconds when the target said), everything else goes to the
dead-letter queue with its reason. Catch ``FlowError`` around ``Engine.load``; a run
reports record failures in its result and raises only ``RunError`` subclasses.
``tests/test_error_tree.py`` checks this drawing against the classes.
"""

from __future__ import annotations

from typing import Any


class FlowyardError(Exception):
    """Root of every error flowyard raises on purpose."""


class ConnectorError(FlowyardError):
    """A connector could not complete a read or a call.

    ``status`` is the target's status code where it has one, ``response`` the
    decoded answer (kept in the dead letter so a person can act on it).
    """

    def __init__(self, message: str, *, status: int | None = None, response: Any = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.response = response


class TransientError(ConnectorError):
    """A failure that may go away by itself; ``retry_after`` is in seconds when the target said."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        response: Any = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, response=response)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """A failure that retrying cannot fix: the request or the record must change."""
