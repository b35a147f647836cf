"""The connector seam: one small base class a partner must learn.

A connector is configured from a mapping of options (a flow's *connection*) and
offers one or both roles:

* **source**: ``read(options, cursor)`` yields :class:`Item` objects, each with the
  record and, for incremental sources, its ``position`` (the cursor value that
  resumes *after* it). An unparsable input yields an ``Item`` with ``error`` set
  and the raw text, so the engine can dead-letter it and go on.
* **action**: ``call(request)`` performs one request for one record and returns a
  :class:`Response`, or raises :class:`~connectors.errors.TransientError` /
  :class:`~connectors.errors.PermanentError`.

Each role's options are declared as JSON Schemas (draft-07), which the flow
loader uses to check a flow before it runs. Connectors know nothing about flows:
templates are rendered by the engine before ``call`` sees them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(slots=True)
class Item:
    """One record read by a source, or one input the source could not parse."""

    data: Any = None
    position: Any = None
    line: int | None = None
    raw: str | None = None
    error: str | None = None


@dataclass(slots=True)
class Request:
    """One call for one record: the rendered call options and the idempotency key."""

    options: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(slots=True)
class Response:
    """What a call returned: a status where the target has one, and the decoded body."""

    body: Any = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Connector:
    """Base class of every connector.

    Subclasses set ``name``, ``options_schema`` (options of a connection), and
    ``read_schema`` and/or ``call_schema`` for the roles they offer; they override
    ``read`` and/or ``call``. ``secret_options`` names options whose values must
    never be shown (the engine masks them in dry runs and logs).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    read_schema: ClassVar[dict[str, Any] | None] = None
    call_schema: ClassVar[dict[str, Any] | None] = None
    #: the folder relative paths in options are resolved against; the engine sets it to
    #: the flow file's folder, so a flow's paths do not depend on where it is started from
    root: Path | None = None
    #: connection options whose values are secrets, masked wherever options are shown
    secret_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: Mapping[str, Any] | None = None):
        self.options: dict[str, Any] = dict(options or {})

    @classmethod
    def roles(cls) -> list[str]:
        """The roles this connector offers: ``source``, ``action`` or both."""
        roles = []
        if cls.read_schema is not None:
            roles.append("source")
        if cls.call_schema is not None:
            roles.append("action")
        return roles

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        """Yield the source's records after ``cursor`` (None: from the start)."""
        raise NotImplementedError(f"connector {self.name!r} is not a source")

    def call(self, request: Request) -> Response:
        """Perform one request for one record."""
        raise NotImplementedError(f"connector {self.name!r} offers no calls")

    def resolve_path(self, path: str | Path) -> Path:
        """``path`` as an absolute path: relative ones are taken from :attr:`root`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root or Path.cwd()) / p

    def close(self) -> None:
        """Release what the connector holds (connections, files)."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
