"""What a run hands down to the executor: the run context.

The runner builds one :class:`RunContext` per run and gives it to the executor
(engine/executor.py), which takes records through the steps with it and returns typed
results. Everything a step needs at run time is here (the flow, the run's vars and
``${env:NAME}`` values, its connections, its store, its log and masking), so nothing
below the runner ever calls back up into it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from connectors import Connector, Registry
from engine.envrefs import ENV_CONTEXT, env_references, resolve
from engine.model import Flow, RetryPolicy
from engine.retry import CircuitBreaker, RateLimiter
from engine.runlog import RunLog
from engine.store import StateStore
from engine.templates import compile_value, default_environment


class ConnectionState:
    """A connection opened for one run: the connector and what governs calls through it."""

    def __init__(
        self,
        name: str,
        connector: Connector,
        retry: RetryPolicy,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
    ):
        self.name = name
        self.connector = connector
        self.retry = retry
        self.limiter = limiter
        self.breaker = breaker


def render_options(
    raw: dict[str, Any], *, vars: dict[str, Any], run: dict[str, str], env: dict[str, str]
) -> dict[str, Any]:
    """Connection and source options with ``{{ vars.x }}`` and ``${env:X}`` rendered.

    They were checked at load time; compiled here once per run, in the shared environment
    that caches compiled templates. ``${env:X}`` is a reference made from the flow's own
    text (engine/envrefs.py): a var holding that text stays that text.
    """
    rendered: dict[str, Any] = compile_value(default_environment(), env_references(raw))(
        {"vars": vars, "run": run, ENV_CONTEXT: env}
    )
    return rendered


class Connections:
    """A run's connections, each opened on first use (from any thread) and closed once at
    the end of the run. The secrets a connector declares are masked from then on.

    What governs calls through a connection (its rate limiter and circuit breaker) is made
    once per run; :meth:`share` makes it in memory that the run's lane processes share, so
    the lanes keep one limit and one breaker between them, each with its own connectors.
    """

    def __init__(
        self,
        flow: Flow,
        registry: Registry,
        render: Callable[[dict[str, Any]], dict[str, Any]],
        on_secret: Callable[[str], None],
    ):
        self._flow = flow
        self._registry = registry
        self._render = render
        self._on_secret = on_secret
        self._open: dict[str, ConnectionState] = {}
        self._governance: dict[str, tuple[RateLimiter, CircuitBreaker]] = {}
        self._lock = threading.Lock()

    def share(self, names: Iterable[str], context: BaseContext) -> None:
        """Make the rate limiters and circuit breakers of connections ``names`` in memory
        shared with the processes forked from ``context`` after this call."""
        with self._lock:
            for name in names:
                if name not in self._open:
                    self._governance[name] = self._govern(name, context)

    def for_lane_process(self, on_secret: Callable[[str], None]) -> Connections:
        """The run's connections for a lane process (just forked): none open, each opened
        there on first use, governed by what :meth:`share` made."""
        forked = Connections(self._flow, self._registry, self._render, on_secret)
        forked._governance = dict(self._governance)
        return forked

    def _govern(
        self, name: str, context: BaseContext | None = None
    ) -> tuple[RateLimiter, CircuitBreaker]:
        conn = self._flow.connections[name]
        # the flow's concurrency is how many calls the target gets at once (engine/lanes.py)
        calls = self._flow.concurrency if self._flow.concurrency > 1 else None
        return (
            RateLimiter(conn.rate_limit, calls=calls, shared=context),
            CircuitBreaker(name, conn.breaker, shared=context),
        )

    def get(self, name: str) -> ConnectionState:
        """Connection ``name`` of the flow, opened now if this is its first use."""
        with self._lock:
            state = self._open.get(name)
            if state is None:
                conn = self._flow.connections[name]
                cls = self._registry.get(conn.connector)
                if cls is None:  # the loader checked every connector: only a plugin gone since
                    raise LookupError(f"connector {conn.connector!r} is not installed")
                connector = cls(self._render(conn.options))
                connector.root = Path(self._flow.file).resolve().parent
                connector.on_secret(self._on_secret)  # masked from now on, encoded too
                governance = self._governance.get(name) or self._govern(name)
                state = ConnectionState(name, connector, conn.retry, *governance)
                self._open[name] = state
            return state

    def close(self) -> list[tuple[str, Exception]]:
        """Close every connection opened; returns those whose close failed, with why."""
        failed = []
        with self._lock:
            opened, self._open = list(self._open.values()), {}
        for state in opened:
            try:
                state.connector.close()
            except Exception as exc:
                failed.append((state.name, exc))
        return failed


@dataclass
class RunContext:
    """Everything one run gives the executor.

    ``refresh_after``: a send skipped as a duplicate has its key's time refreshed (so
    retention keeps it) when the time is older than this many seconds.
    """

    flow: Flow
    run_id: str
    vars: dict[str, Any]
    env: dict[str, str]  # the values of the flow's ${env:NAME} and ${file:PATH}
    store: StateStore
    log: RunLog
    connections: Connections
    dry_run: bool = False
    refresh_after: float = 3600.0
    #: what templates see as ``run``
    run_info: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.run_info = {"id": self.run_id, "flow": self.flow.name}

    def mask(self, value: Any) -> Any:
        """``value`` with every secret of the run masked as ``***``."""
        return self.log.redact(value)

    def render_options(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Options of a connection or of the source, rendered for this run."""
        return render_options(raw, vars=self.vars, run=self.run_info, env=self.env)

    @classmethod
    def create(
        cls,
        flow: Flow,
        *,
        run_id: str,
        registry: Registry,
        store: StateStore,
        log: RunLog,
        vars: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        dry_run: bool = False,
        refresh_after: float = 3600.0,
    ) -> RunContext:
        """A run's context with its connections (opened on first use); ``vars`` default
        to the flow's, ``env`` to the values of the flow's ``${env:NAME}`` and
        ``${file:PATH}`` (:func:`engine.envrefs.resolve`)."""
        run_vars = dict(flow.vars) if vars is None else vars
        run_env = resolve(flow) if env is None else env
        run = {"id": run_id, "flow": flow.name}
        connections = Connections(
            flow,
            registry,
            partial(render_options, vars=run_vars, run=run, env=run_env),
            log.redact.add,
        )
        return cls(
            flow,
            run_id,
            run_vars,
            run_env,
            store,
            log,
            connections,
            dry_run=dry_run,
            refresh_after=refresh_after,
        )
