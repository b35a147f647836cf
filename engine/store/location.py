"""Where the state is: an SQLite file, or a PostgreSQL database shared by several machines.

``--state``, ``$FLOWYARD_STATE`` and ``Engine(state=...)`` all take the same value, read by
:meth:`StateLocation.of`: a ``postgresql://`` (or ``postgres://``) URL names a PostgreSQL
database, anything else a state file. A URL's password is a secret: :func:`mask_dsn` is how
a location is shown (``str()``), in every message and log line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_SCHEMES = ("postgresql://", "postgres://")
_URL_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:/@?#]*):([^@/?#]*)@")
_PARAM_PASSWORD = re.compile(r"(password=)([^&\s]*)", re.IGNORECASE)

# run logs of a state that is not a file: under the working directory, on each machine
DSN_RUN_LOGS = Path(".flowyard") / "runs"


def is_dsn(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a PostgreSQL database rather than a state file."""
    return isinstance(value, str) and value.startswith(_SCHEMES)


def mask_dsn(dsn: str) -> str:
    """The DSN with its password (in the URL or as a ``password=`` parameter) as ``***``."""
    masked = _URL_PASSWORD.sub(r"\1:***@", dsn)
    return _PARAM_PASSWORD.sub(r"\1***", masked)


def dsn_password(dsn: str) -> str | None:
    """The password a DSN carries, to mask wherever a driver's message may repeat it."""
    from urllib.parse import unquote

    found = _URL_PASSWORD.match(dsn)
    if found and found.group(2):
        return unquote(found.group(2))
    param = _PARAM_PASSWORD.search(dsn)
    return unquote(param.group(2)) if param and param.group(2) else None


@dataclass(frozen=True)
class StateLocation:
    """A state file (``path``) or a PostgreSQL database (``dsn``); exactly one is set."""

    path: Path | None = None
    dsn: str | None = None

    @classmethod
    def of(cls, value: str | os.PathLike[str] | StateLocation) -> StateLocation:
        """The location ``value`` names (a URL, a path, or a location already)."""
        if isinstance(value, StateLocation):
            return value
        if is_dsn(value):
            return cls(dsn=str(value))
        return cls(path=Path(value))

    @property
    def shared(self) -> bool:
        """Whether several machines can share it (a database, not a file)."""
        return self.dsn is not None

    def exists(self) -> bool:
        """Whether there is a state to read: the file exists; a database is always asked."""
        return self.path is None or self.path.exists()

    @property
    def runs_folder(self) -> Path:
        """Where run logs go: ``runs/`` beside a state file; ``.flowyard/runs`` under the
        working directory of each machine for a database."""
        return self.path.parent / "runs" if self.path is not None else DSN_RUN_LOGS

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else mask_dsn(self.dsn or "")
