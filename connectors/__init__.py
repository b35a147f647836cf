"""Connectors and the registry that finds them.

Connectors register through the ``flowyard.connectors`` entry-point group (the
built-ins register the same way, in ``setup.cfg``). Entry points are loaded on
first use; a third-party connector that fails to import is reported by
:func:`broken` and by ``flowyard connectors``, and does not stop the others.

Writing one: subclass :class:`Connector` (the seam, ``connectors.base``); raise the
errors of ``connectors.errors`` (where the whole error tree is drawn); for an HTTP API,
build on ``connectors.httpkit`` (sessions, authenticators, paginators, response
classification); test it with ``connectors.testing`` (a memory double and the contract
suite every built-in passes).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from connectors.base import Connector, Item, Lint, Request, Response
from connectors.errors import ConnectorError, FlowyardError, PermanentError, TransientError

__all__ = [
    "Connector",
    "ConnectorError",
    "FlowyardError",
    "Item",
    "Lint",
    "PermanentError",
    "Registry",
    "Request",
    "Response",
    "TransientError",
]

GROUP = "flowyard.connectors"

# Used only when flowyard runs from a checkout that was never installed, so no
# entry-point metadata exists; an installed flowyard reads setup.cfg's entry points.
_BUILTINS = {
    "file": "connectors.file:FileConnector",
    "http": "connectors.http:HttpConnector",
    "sqlite": "connectors.sqlite:SqliteConnector",
    "stdout": "connectors.stdout:StdoutConnector",
    "tryton": "connectors.tryton:TrytonConnector",
}


class Registry:
    """Names to connector classes: entry points, loaded lazily, plus explicit registrations."""

    def __init__(self) -> None:
        self._targets: dict[str, str] = {}
        self._classes: dict[str, type[Connector]] = {}
        self._broken: dict[str, str] = {}
        self._scanned = False

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
        for name, target in (found or _BUILTINS).items():
            self._targets.setdefault(name, target)

    def register(self, name: str, cls: type[Connector]) -> None:
        """Make ``cls`` available to flows as ``connector: name`` (overrides an entry point)."""
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TypeError(f"{cls!r} is not a subclass of connectors.Connector")
        self._classes[name] = cls
        self._broken.pop(name, None)

    def names(self) -> list[str]:
        """Every known connector name, loaded or not, broken ones included."""
        self._scan()
        return sorted(set(self._targets) | set(self._classes))

    def get(self, name: str) -> type[Connector] | None:
        """The class registered as ``name``; None when unknown or broken (see :meth:`broken`)."""
        if name in self._classes:
            return self._classes[name]
        self._scan()
        target = self._targets.get(name)
        if target is None or name in self._broken:
            return None
        module_name, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
            if not (isinstance(cls, type) and issubclass(cls, Connector)):
                raise TypeError(f"{target} is not a subclass of connectors.Connector")
        except Exception as exc:  # a third-party plugin may fail in any way
            self._broken[name] = f"{target}: {type(exc).__name__}: {exc}"
            return None
        self._classes[name] = cls
        return cls

    def broken(self) -> dict[str, str]:
        """Connectors whose entry point failed to load, with the reason."""
        for name in self.names():
            self.get(name)
        return dict(self._broken)
