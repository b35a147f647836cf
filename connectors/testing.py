"""Test helpers that ship with flowyard: a memory connector and the connector contract suite.

:class:`MemoryConnector` is a test double for flows: records to read, a script of
failures, and every call it received. :class:`ConnectorContract` is a pytest suite that
any connector, built-in or third-party, runs against itself by subclassing it::

    from connectors.testing import ConnectorContract

    class TestMyPosContract(ConnectorContract):
        connector_class = MyPosConnector

        def connection_options(self, tmp_path):
            return {"base_url": "http://127.0.0.1:8099"}

        def call_options(self, tmp_path):
            return {"path": "/sales", "body": {"sku": "A-1", "qty": 1}}

Override only the hooks your connector's roles need; a test whose hook is not given is
skipped, except that a source must give ``read_options`` and an action ``call_options``.
Hooks may use attributes set by your own autouse fixtures (a server, say).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from connectors import Registry
from connectors.base import Connector, Item, Lint, Request, Response
from connectors.errors import ConnectorError, PermanentError, TransientError

__all__ = ["ConnectorContract", "MemoryConnector"]


class MemoryConnector(Connector):
    """Reads ``records`` and keeps every call; ``fail`` scripts call outcomes in order.

    ``fail`` is a list of ``"ok"``, ``"transient"`` or ``"permanent"``, one consumed per
    call (then every call succeeds). An :class:`Item` in ``records`` is yielded as it is,
    which is how a test scripts an unparsable input. Records get positions 1, 2, 3, ...
    A connector built with an ``id`` option is kept in ``MemoryConnector.instances[id]``
    so a test can find the instance an engine created.
    """

    name: ClassVar[str] = "memory"
    description: ClassVar[str] = "In-memory test double: scripted records and call outcomes."
    instances: ClassVar[dict[str, MemoryConnector]] = {}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "description": "Name under which tests find this instance."},
            "records": {"type": "array", "description": "Records the source yields, in order."},
            "fail": {
                "type": "array",
                "items": {"enum": ["ok", "transient", "permanent"]},
                "description": "Outcome of each call in turn; calls after the list succeed.",
            },
        },
    }
    read_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "records": {
                "type": "array",
                "description": "Records to read instead of the connection's records.",
            },
        },
    }
    call_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": True,
        "description": "Any options: they are recorded as given.",
        "properties": {},
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.records: list[Any] = list(self.options.get("records", []))
        self.calls: list[Request] = []
        self.closed = False
        self._script = list(self.options.get("fail", []))
        self._lock = threading.Lock()
        if "id" in self.options:
            MemoryConnector.instances[self.options["id"]] = self

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        """Yield the records after position ``cursor``."""
        records = options.get("records", self.records)
        for position, record in enumerate(records, start=1):
            if cursor is None or position > cursor:
                yield record if isinstance(record, Item) else Item(data=record, position=position)

    def call(self, request: Request) -> Response:
        """Record the call, then succeed or fail as scripted."""
        with self._lock:
            self.calls.append(request)
            outcome = self._script.pop(0) if self._script else "ok"
            number = len(self.calls)
        if outcome == "transient":
            raise TransientError("scripted transient failure", status=503, retry_after=0)
        if outcome == "permanent":
            raise PermanentError("scripted permanent failure", status=400, response="scripted")
        return Response(body={"call": number, "options": request.options}, status=200)

    def close(self) -> None:
        """Mark the connector closed (tests check the engine closes what it opens)."""
        self.closed = True


def _skip(reason: str) -> NoReturn:
    import pytest  # only ever called while pytest runs the suite

    pytest.skip(reason)


def _undescribed(schema: Mapping[str, Any], where: str = "") -> list[str]:
    """Property paths in ``schema`` (nested ones too) that have no description."""
    missing: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{where}.{name}" if where else name
        if not (isinstance(sub, Mapping) and sub.get("description")):
            missing.append(path)
        if isinstance(sub, Mapping):
            missing += _undescribed(sub, path)
    for keyword in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(keyword, []):
            missing += _undescribed(sub, where)
    for keyword in ("then", "else"):
        if isinstance(schema.get(keyword), Mapping):
            missing += _undescribed(schema[keyword], where)
    for keyword in ("items", "additionalProperties"):
        if isinstance(schema.get(keyword), Mapping):
            missing += _undescribed(schema[keyword], f"{where}[]")
    return missing


class ConnectorContract:
    """The behaviour every connector promises the engine; subclass it in a test module.

    Set ``connector_class``; override the hooks below for the roles the connector has.
    ``registered = False`` skips the entry-point check (for a class registered by hand).
    """

    connector_class: ClassVar[type[Connector]]
    registered: ClassVar[bool] = True
    concurrent_calls: ClassVar[int] = 20

    # -- hooks ---------------------------------------------------------------

    def connection_options(self, tmp_path: Path) -> dict[str, Any]:
        """Options of a working connection (a flow's connection minus engine keys)."""
        return {}

    def make_connector(self, tmp_path: Path) -> Connector:
        """A configured connector; override when building one takes more than options."""
        return self.connector_class(self.connection_options(tmp_path))

    def read_options(self, tmp_path: Path) -> dict[str, Any] | None:
        """Source options that read at least two good records (sources must give this)."""
        return None

    def bad_read_options(self, tmp_path: Path) -> dict[str, Any] | None:
        """Source options whose input holds an unparsable entry followed by a good record."""
        return None

    def call_options(self, tmp_path: Path) -> dict[str, Any] | None:
        """Options of a call that succeeds (actions must give this)."""
        return None

    def failing_call_options(self, tmp_path: Path) -> dict[str, Any] | None:
        """Options of a call the target refuses or cannot perform."""
        return None

    def received_idempotency_key(self, connector: Connector) -> str | None:
        """The idempotency key the target saw on the last call (override where it applies)."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------

    def _read_options(self, tmp_path: Path) -> dict[str, Any]:
        if "source" not in self.connector_class.roles():
            _skip("not a source")
        options = self.read_options(tmp_path)
        assert options is not None, "a source connector must override read_options()"
        return options

    def _call_options(self, tmp_path: Path) -> dict[str, Any]:
        if "action" not in self.connector_class.roles():
            _skip("not an action")
        options = self.call_options(tmp_path)
        assert options is not None, "an action connector must override call_options()"
        return options

    # -- the contract --------------------------------------------------------

    def test_has_a_name_a_description_and_a_role(self) -> None:
        cls = self.connector_class
        assert cls.name and isinstance(cls.name, str)
        assert cls.description, "describe the connector in one line (shown by the CLI)"
        assert cls.roles(), "set read_schema and/or call_schema"

    def test_schemas_are_draft07_objects_with_every_property_described(self) -> None:
        from jsonschema import Draft7Validator

        cls = self.connector_class
        for label in ("options_schema", "read_schema", "call_schema"):
            schema = getattr(cls, label)
            if schema is None:
                continue
            Draft7Validator.check_schema(schema)
            assert schema.get("type") == "object", f"{label} must describe an object"
            assert not _undescribed(schema), f"{label}: no description for {_undescribed(schema)}"

    def test_connection_options_reject_unknown_keys(self) -> None:
        # A typo in a connection must fail validation instead of being ignored.
        assert self.connector_class.options_schema.get("additionalProperties") is False

    def test_sample_options_match_the_schemas(self, tmp_path: Path) -> None:
        from jsonschema import Draft7Validator

        cls = self.connector_class
        samples = [
            (cls.options_schema, self.connection_options(tmp_path)),
            (cls.read_schema, self.read_options(tmp_path)),
            (cls.read_schema, self.bad_read_options(tmp_path)),
            (cls.call_schema, self.call_options(tmp_path)),
            (cls.call_schema, self.failing_call_options(tmp_path)),
        ]
        for schema, sample in samples:
            if schema is not None and sample is not None:
                Draft7Validator(schema).validate(sample)

    def test_lint_finds_no_error_in_the_sample_options(self, tmp_path: Path) -> None:
        cls = self.connector_class
        connection = self.connection_options(tmp_path)
        samples = [
            ("connection", connection),
            ("source", self.read_options(tmp_path)),
            ("source", self.bad_read_options(tmp_path)),
            ("action", self.call_options(tmp_path)),
            ("action", self.failing_call_options(tmp_path)),
        ]
        for role, options in samples:
            if options is None:
                continue
            found = cls.lint(role, options, connection)
            assert isinstance(found, list), "lint() returns a list of connectors.Lint"
            assert all(isinstance(lint, Lint) for lint in found), found
            assert all(lint.severity in ("warning", "error") for lint in found), found
            errors = [lint for lint in found if lint.severity == "error"]
            assert not errors, f"lint() refuses the sample {role} options: {errors}"

    def test_declared_secrets_reach_a_listener(self, tmp_path: Path) -> None:
        connector = self.make_connector(tmp_path)
        heard: list[str] = []
        connector.on_secret(heard.append)
        try:
            assert heard == connector.secrets()
            assert all(isinstance(secret, str) and secret for secret in heard)
            for name in self.connector_class.secret_options:
                value = connector.options.get(name)
                if isinstance(value, str) and value:
                    assert value in heard, f"secret option {name!r} was not declared"
        finally:
            connector.close()

    def test_roles_match_the_overridden_methods(self) -> None:
        cls = self.connector_class
        assert ("source" in cls.roles()) == (cls.read is not Connector.read)
        assert ("action" in cls.roles()) == (cls.call is not Connector.call)

    def test_the_registry_finds_it_by_name(self) -> None:
        if not self.registered:
            _skip("registered by hand, not through an entry point")
        registry = Registry()
        found = registry.get(self.connector_class.name)
        assert found is self.connector_class, registry.broken().get(self.connector_class.name)

    def test_read_is_lazy_and_yields_items(self, tmp_path: Path) -> None:
        options = self._read_options(tmp_path)
        with self.make_connector(tmp_path) as connector:
            stream = connector.read(options, None)
            assert isinstance(stream, Iterator), "read() must return an iterator (stream)"
            items = list(stream)
        assert len(items) >= 2, "read_options() should read at least two records"
        assert all(isinstance(item, Item) for item in items)
        assert all(item.error is None and item.data is not None for item in items)

    def test_reading_after_a_position_resumes_after_it(self, tmp_path: Path) -> None:
        options = self._read_options(tmp_path)
        with self.make_connector(tmp_path) as connector:
            first = list(connector.read(options, None))
            if first[0].position is None:
                _skip("not an incremental source")
            rest = list(connector.read(options, first[0].position))
        assert [item.data for item in rest] == [item.data for item in first[1:]]

    def test_an_unparsable_input_is_an_error_item_and_reading_goes_on(self, tmp_path: Path) -> None:
        if "source" not in self.connector_class.roles():
            _skip("not a source")
        options = self.bad_read_options(tmp_path)
        if options is None:
            _skip("this source cannot produce an unparsable input")
        with self.make_connector(tmp_path) as connector:
            items = list(connector.read(options, None))
        errors = [i for i, item in enumerate(items) if item.error]
        assert errors, "the unparsable input must come back as an Item with error set"
        bad = items[errors[0]]
        assert isinstance(bad.error, str) and bad.raw is not None and bad.data is None
        assert any(item.error is None for item in items[errors[0] + 1 :]), "reading stopped"

    def test_call_returns_a_response(self, tmp_path: Path) -> None:
        options = self._call_options(tmp_path)
        with self.make_connector(tmp_path) as connector:
            response = connector.call(Request(options=options, idempotency_key="contract:1"))
        assert isinstance(response, Response)

    def test_call_passes_the_idempotency_key_on(self, tmp_path: Path) -> None:
        options = self._call_options(tmp_path)
        with self.make_connector(tmp_path) as connector:
            connector.call(Request(options=options, idempotency_key="contract:key-7"))
            try:
                received = self.received_idempotency_key(connector)
            except NotImplementedError:
                _skip("the target has no notion of an idempotency key")
        assert received == "contract:key-7"

    def test_a_refused_call_raises_a_classified_error(self, tmp_path: Path) -> None:
        if "action" not in self.connector_class.roles():
            _skip("not an action")
        options = self.failing_call_options(tmp_path)
        if options is None:
            _skip("no failing call given")
        with self.make_connector(tmp_path) as connector:
            try:
                connector.call(Request(options=options, idempotency_key="contract:fail"))
            except ConnectorError as exc:
                assert isinstance(exc, TransientError | PermanentError)
            else:
                raise AssertionError("failing_call_options() made a call that succeeded")

    def test_calls_from_several_threads_all_succeed(self, tmp_path: Path) -> None:
        options = self._call_options(tmp_path)
        with self.make_connector(tmp_path) as connector, ThreadPoolExecutor(max_workers=4) as pool:
            requests = [
                Request(options=options, idempotency_key=f"contract:{n}")
                for n in range(self.concurrent_calls)
            ]
            responses = list(pool.map(connector.call, requests))
        assert all(isinstance(response, Response) for response in responses)

    def test_close_is_idempotent(self, tmp_path: Path) -> None:
        self.make_connector(tmp_path).close()  # never used
        connector = self.make_connector(tmp_path)
        if "action" in connector.roles():
            connector.call(Request(options=self._call_options(tmp_path)))
        else:
            list(connector.read(self._read_options(tmp_path), None))
        connector.close()
        connector.close()
