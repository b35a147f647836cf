"""Load time: the connections and the source of a flow file, connectors resolved, options
checked.

A connection names a connector and its options; the source and each send or enrich step
go through one, by name (the source may also name a connector and take its defaults).
Every connector option is checked against the JSON Schema the connector declares for the
role it plays, so a misspelled or missing option is reported before any run; a template
or an ``${env:NAME}`` stands for any value, since its type is known only once rendered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, TypeVar

import jsonschema

from connectors import Connector, Registry
from engine import flow_schema
from engine._sandbox import FlowyardEnvironment
from engine.flow_schema import parse_duration
from engine.load_findings import Built, FlowText, Reporter
from engine.load_templates import OPTION_NAMES, SOURCE_KEY_NAMES
from engine.model import BreakerPolicy, Connection, RetryPolicy, Source, Webhook
from engine.suggest import did_you_mean
from engine.templates import is_template
from engine.yamlpos import format_path

# ${env:NAME} or ${file:PATH}; group 1 is the name the run's value goes by: NAME, file:PATH
ENV_REF = re.compile(r"\$\{(?:env:)?((?<=env:)[A-Za-z_][A-Za-z0-9_]*|(?<=\{)file:[^{}\s]+)\}")


def parse_rate(text: str) -> float:
    """``20/s`` -> 20.0 requests per second."""
    amount, _, unit = text.partition("/")
    return float(amount) / {"s": 1.0, "m": 60.0, "h": 3600.0}[unit]


P = TypeVar("P", RetryPolicy, BreakerPolicy)


def policy(cls: type[P], value: Any) -> P:
    """``cls(**value)`` when ``value`` has only ``cls``'s fields, else ``cls()``."""
    names = {f.name for f in dataclass_fields(cls)}
    if isinstance(value, dict) and set(value) <= names:
        return cls(**value)
    return cls()


@dataclass(frozen=True)
class SourceBuilt:
    """The flow's source, and the connections with the one an inline ``connector:`` made."""

    source: Source | None
    connections: dict[str, Connection]


def build_connections(
    text: FlowText, registry: Registry, env: FlowyardEnvironment, refused: Iterable[str]
) -> Built[dict[str, Connection]]:
    """The flow's ``connections:``, by name, each with its options checked."""
    reporter = Reporter(text, env, refused)
    return reporter.built(ConnectionBuilder(registry, reporter).connections())


def build_source(
    text: FlowText,
    registry: Registry,
    env: FlowyardEnvironment,
    refused: Iterable[str],
    connections: dict[str, Connection],
) -> Built[SourceBuilt]:
    """The flow's ``source:``; its findings name the connection it goes through."""
    reporter = Reporter(text, env, refused)
    connections = dict(connections)
    source = ConnectionBuilder(registry, reporter).source(connections)
    return reporter.built(SourceBuilt(source, connections))


class ConnectionBuilder:
    """Resolves connectors and checks their options, reporting into ``reporter``.

    The names of the connections gone through are noted in the reporter's findings
    (``connections_used``).
    """

    def __init__(self, registry: Registry, reporter: Reporter):
        self.registry = registry
        self.reporter = reporter
        self.data = reporter.text.data
        self.problem = reporter.problem
        self.refused = reporter.refuse
        self.templates = reporter.templates

    def check_options(
        self,
        options: dict[str, Any],
        schema: dict[str, Any] | None,
        path: list[Any],
        what: str,
        *,
        of_connection: set[str] | None = None,
    ) -> None:
        """Check a connector's options against its schema (templates stand for any value).

        ``of_connection``: the connection's own option names, for a read or call option
        that belongs on the connection instead.
        """
        if schema is None:
            return
        for err in jsonschema.Draft7Validator(schema).iter_errors(options):
            text = err.instance
            if isinstance(text, str) and (is_template(text) or "${" in text):
                # rendered later, its type known only then; a ${...} that is not a valid
                # environment reference is reported by the loader, with the way to write it
                continue
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                allowed = set(err.schema.get("properties", {}))
                for extra in sorted(set(err.instance) - allowed, key=str):
                    if of_connection and extra in of_connection and not err.absolute_path:
                        hint = f"; {extra!r} is an option of the connection: put it there"
                    else:
                        hint = did_you_mean(extra, allowed)
                    self.refused(
                        [*path, *err.absolute_path, extra],
                        f"{what} has no option {extra!r}{hint}; its options: "
                        f"{', '.join(sorted(allowed)) or 'none'}",
                        at_key=True,
                    )
                continue
            if err.validator == "required" and isinstance(err.instance, dict):
                missing = [k for k in err.validator_value if k not in err.instance]
                where = list(err.absolute_path)
                key = missing[0] if missing else "?"
                message = (
                    f"{what}: `{format_path(where)}` needs `{key}`"
                    if where
                    else f"{what} needs the option `{key}`"
                )
                condition = flow_schema.schema_condition(schema, err.schema_path)
                self.problem(
                    [*path, *where],
                    message + (f" {condition}" if condition else ""),
                    at_key=bool([*path, *where]),
                )
                continue
            where, message, at_key = flow_schema.explain(err, schema)
            self.refused([*path, *where], f"{what}: {message}", at_key=at_key)

    def lint(
        self,
        cls: type[Connector],
        role: str,
        options: dict[str, Any],
        path: list[Any],
        connection: dict[str, Any],
    ) -> None:
        """Report what the connector's own checks find in its options (``Connector.lint``)."""
        try:
            found = cls.lint(role, options, connection)
        except Exception as exc:  # a third-party connector's check must not break validation
            found = []
            self.problem(
                path,
                f"connector {cls.name!r} failed to check its options ({exc!r}); they are "
                "checked against its schema only",
                severity="warning",
            )
        for lint in found:
            self.problem([*path, *lint.path], lint.message, severity=lint.severity)

    def connector_class(self, name: Any, path: list[Any]) -> type[Connector] | None:
        """The connector class registered as ``name``; None (reported) when there is none."""
        if not isinstance(name, str):
            return None  # the schema said so
        cls = self.registry.get(name)
        if cls is None:
            broken = self.registry.broken().get(name)
            if broken:
                self.problem(path, f"connector {name!r} is installed but failed to load: {broken}")
            else:
                names = self.registry.names()
                self.problem(
                    path,
                    f"unknown connector {name!r}{did_you_mean(name, names)}; installed: "
                    f"{', '.join(names)}",
                )
        return cls

    def connections(self) -> dict[str, Connection]:
        """The flow's ``connections:``, by name, each with its options checked."""
        out: dict[str, Connection] = {}
        specs = self.data.get("connections")
        if not isinstance(specs, dict):
            return out
        for name, spec in specs.items():
            path = ["connections", name]
            if not isinstance(spec, dict):
                continue  # the schema said so
            connector = spec.get("connector")
            cls = self.connector_class(connector, [*path, "connector"])
            options = {k: v for k, v in spec.items() if k not in flow_schema.CONNECTION_KEYS}
            if cls is not None:
                self.check_options(options, cls.options_schema, path, f"connector {connector!r}")
                self.lint(cls, "connection", options, path, options)
            for key, value in options.items():
                self.templates.template(value, [*path, key], OPTION_NAMES)
            rate = spec.get("rate_limit")
            rate_limit = None
            if isinstance(rate, str) and re.fullmatch(r"\d+(\.\d+)?/[smh]", rate):
                rate_limit = parse_rate(rate)
                if rate_limit <= 0:
                    self.problem([*path, "rate_limit"], "a rate limit must allow some requests")
            breaker = spec.get("circuit_breaker")
            out[str(name)] = Connection(
                name=str(name),
                connector=connector if isinstance(connector, str) else "",
                options=options,
                retry=policy(RetryPolicy, spec.get("retry")),
                rate_limit=rate_limit,
                breaker=policy(BreakerPolicy, breaker) if breaker is not None else None,
            )
        return out

    def connection_for(
        self, spec: dict[str, Any], path: list[Any], role: str, connections: dict[str, Connection]
    ) -> tuple[str, type[Connector] | None]:
        """Resolve ``connection:`` (a name) or ``connector:`` (inline) to a connection name."""
        has_connection, has_connector = "connection" in spec, "connector" in spec
        if has_connection and has_connector and role == "source":
            self.problem(
                path,
                "name either `connection:` (one of the flow's connections) or `connector:` "
                "(a connector used with its defaults), not both",
            )
            return "", None
        if not has_connection and role == "source":
            if not has_connector:
                self.problem(
                    path,
                    "missing `connection:` (one of the flow's connections) or `connector:` "
                    "(a connector used with its defaults)",
                )
                return "", None
            connector = spec["connector"]
            cls = self.connector_class(connector, [*path, "connector"])
            if not isinstance(connector, str):
                return "", None
            name = f"{connector}@{format_path(path)}"
            connections[name] = Connection(name=name, connector=connector, options={})
            if cls is not None:
                needed = (cls.options_schema or {}).get("required") or []
                if needed:
                    self.problem(
                        [*path, "connector"],
                        f"connector {connector!r} needs connection options "
                        f"({', '.join(needed)}): define a connection under `connections:` and "
                        "write `connection: NAME` here",
                    )
                    return name, None
            return name, self._role(cls, connector, role, [*path, "connector"])
        named_as = spec.get("connection")
        if not isinstance(named_as, str):
            return "", None  # missing or not text: the schema said so
        name = named_as
        if name not in connections:
            named = sorted(n for n in connections if "@" not in n)  # not the inline ones
            self.problem(
                [*path, "connection"],
                f"unknown connection {name!r}{did_you_mean(name, named)}; defined: "
                f"{', '.join(named) or 'none (add it under `connections:`)'}",
            )
            return "", None
        self.reporter.findings.connections_used.add(name)
        connector = connections[name].connector
        cls = self.registry.get(connector) if connector else None
        return name, self._role(cls, connector, role, [*path, "connection"])

    def _role(
        self, cls: type[Connector] | None, connector: str, role: str, path: list[Any]
    ) -> type[Connector] | None:
        if cls is not None and role not in cls.roles():
            use = "as a source" if role == "source" else "in a send or enrich step"
            self.problem(
                path,
                f"connector {connector!r} cannot be used {use}; it offers: "
                f"{', '.join(cls.roles()) or 'nothing'}",
            )
            return None
        return cls

    def source(self, connections: dict[str, Connection]) -> Source | None:
        """The flow's ``source:``: its connection, read options and record key template
        (an inline ``connector:`` adds its connection to ``connections``)."""
        spec = self.data.get("source")
        if not isinstance(spec, dict):
            return None  # the schema said so
        if "webhook" in spec:
            return self.webhook_source(spec)
        name, cls = self.connection_for(spec, ["source"], "source", connections)
        options = {k: v for k, v in spec.items() if k not in flow_schema.SOURCE_KEYS}
        if cls is not None:
            self.check_options(
                options,
                cls.read_schema,
                ["source"],
                f"source {cls.name!r}",
                of_connection=set(cls.options_schema.get("properties", {})),
            )
            self.lint(cls, "source", options, ["source"], connections[name].options)
        for key, value in options.items():
            self.templates.template(value, ["source", key], OPTION_NAMES)
        key = None
        if "key" in spec:
            key = self.templates.key_template(
                spec["key"], ["source", "key"], SOURCE_KEY_NAMES, "source.key"
            )
        return Source(connection=name, options=options, key=key)

    def webhook_source(self, spec: dict[str, Any]) -> Source | None:
        """``source: {webhook: {...}, key: ...}``: records a platform pushes, taken by
        ``flowyard serve`` (engine/serve/). Nothing else belongs beside it."""
        for other in spec:
            if other not in ("webhook", "key"):
                self.problem(
                    ["source", other],
                    f"a webhook source takes `key:` beside `webhook:` and nothing else; "
                    f"{other!r} belongs to a source that reads from a connection",
                    at_key=True,
                )
        hook = spec["webhook"]
        if not isinstance(hook, dict):
            return None  # the schema said so
        secret = hook.get("secret")
        if isinstance(secret, str) and not ENV_REF.fullmatch(secret.strip()):
            self.problem(
                ["source", "webhook", "secret"],
                "write the signing secret as ${env:NAME} (or ${file:PATH}), never in the "
                "flow file itself",
            )
        key = None
        if "key" in spec:
            key = self.templates.key_template(
                spec["key"], ["source", "key"], SOURCE_KEY_NAMES, "source.key"
            )
        tolerance = hook.get("tolerance")
        name = self.data.get("flow")
        webhook = Webhook(
            path=hook.get("path") or f"/webhooks/{name}",
            scheme=str(hook.get("scheme")),
            secret=str(secret or "").strip(),
            topics=list(hook["topics"]) if isinstance(hook.get("topics"), list) else None,
            tolerance_s=parse_duration(tolerance) if isinstance(tolerance, str) else 300.0,
            max_body=int(hook.get("max_body") or 1_048_576),
        )
        return Source(connection="", options={}, key=key, webhook=webhook)
