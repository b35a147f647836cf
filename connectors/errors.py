"""Errors a connector raises; the root of flowyard's error tree.

The whole tree (the engine adds the definition and record branches, see
``engine.errors``)::

    FlowyardError
    ├── ConnectorError                a call or read through a connector failed
    │   ├── TransientError            worth retrying: timeouts, connection errors, 408, 429, 5xx
    │   └── PermanentError            not worth retrying: other 4xx, a refusal by the target
    ├── FlowError                     (engine) the flow definition is invalid
    ├── RecordError                   (engine) one record cannot be processed
    │   ├── MappingError              a mapping template failed on this record
    │   └── RecordValidationError     the record does not match its canonical schema
    └── RunError                      (engine) the run cannot proceed
        ├── LockHeld                  another run of the flow holds the lease
        └── CircuitOpen               a connection's circuit breaker is open

Retry decisions read the error's class, never its message: ``TransientError`` is
retried, everything else goes to the dead-letter queue with its reason.
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
