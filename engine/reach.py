"""``flowyard check FLOW``: reach each connection of a flow, send nothing.

Each connection is built as a run would build it (options rendered with the vars, secrets
from ``${env:NAME}``, ``.env`` and ``${file:PATH}``, relative paths from the flow's folder)
and asked to :meth:`~connectors.Connector.check` itself: log in, one harmless read. What
comes back is masked like everything else a run shows: the flow's secrets and the ones
the connectors declare (a session token) never appear.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors import Check, Registry
from engine.envrefs import ENV_CONTEXT, env_references, resolve
from engine.model import CallStep, Flow
from engine.runlog import RunLog
from engine.templates import compile_value, default_environment


@dataclass
class ConnectionCheck:
    """What ``check`` found for one connection: ``uses`` says how the flow uses it
    (``source``, ``send``, ``enrich``); ``checks`` are the connector's, ``error`` a failure
    to build the connection at all."""

    connection: str
    connector: str
    uses: list[str]
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0

    @property
    def status(self) -> str:
        """``ok``, ``failed``, or ``not checked`` (the connector offers no check)."""
        if self.error is not None or any(not c.ok for c in self.checks):
            return "failed"
        return "ok" if self.checks else "not checked"

    def to_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "connector": self.connector,
            "uses": self.uses,
            "status": self.status,
            "error": self.error,
            "duration_s": self.duration_s,
            "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def _uses(flow: Flow) -> dict[str, list[str]]:
    uses: dict[str, list[str]] = {name: [] for name in flow.connections}
    if flow.source.connection in uses:
        uses[flow.source.connection].append("source")
    for step, _, _ in flow.walk():
        if isinstance(step, CallStep) and step.kind not in uses.get(step.connection, [step.kind]):
            uses[step.connection].append(step.kind)
    return uses


def check_connections(
    flow: Flow, registry: Registry, vars: dict[str, Any] | None = None
) -> list[ConnectionCheck]:
    """Reach every connection of ``flow``. Raises :class:`~engine.errors.FlowError` when a
    secret the flow needs has no value (as ``run`` would)."""
    env = resolve(flow)
    run_vars = {**flow.vars, **(vars or {})}
    context = {"vars": run_vars, "run": {"id": "check", "flow": flow.name}, ENV_CONTEXT: env}
    log = RunLog("check", flow.name, path=None, stderr=False, secrets=set(env.values()))
    mask = log.redact
    root = Path(flow.file).resolve().parent
    results = []
    try:
        for name, uses in _uses(flow).items():
            conn = flow.connections[name]
            result = ConnectionCheck(name, conn.connector, uses)
            started = time.perf_counter()
            connector = None
            try:
                options = _render(conn.options, context)
                cls = registry.get(conn.connector)
                if cls is None:
                    raise LookupError(f"no connector {conn.connector!r} is installed")
                connector = cls(options)
                connector.root = root
                connector.on_secret(mask.add)
                source = _render(flow.source.options, context) if "source" in uses else None
                result.checks = list(connector.check(source))
            except Exception as exc:  # a connector may fail in any way: report, go on
                result.error = f"{type(exc).__name__}: {exc}"
            finally:
                if connector is not None:
                    try:
                        connector.close()
                    except Exception:
                        pass
            result.duration_s = round(time.perf_counter() - started, 3)
            result.error = mask(result.error)
            result.checks = [Check(mask(c.what), bool(c.ok), mask(c.detail)) for c in result.checks]
            results.append(result)
    finally:
        log.close()
    return results


def _render(raw: dict[str, Any], context: dict[str, Any]) -> Any:
    """Options as a run renders them: ``{{ vars.x }}`` and the flow's own secrets."""
    return compile_value(default_environment(), env_references(raw))(context)
