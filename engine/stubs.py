"""Stubbed connections for flow tests: each request answered from a list, none sent anywhere.

A flow test (``engine/flowtest.py``) replaces every connection of the flow with a
:class:`StubConnector` that answers from the test file's stubs: the first stub whose
``match`` fits the request's options gives the answer (or raises the error it names).
Each connection keeps every request it received, in order, for the test to compare.

Matching: every key of ``match`` must be in the request's options with an equal value;
a mapping matches a mapping that has at least its keys (recursively), and a text with
``*`` matches any text in the star's place (``path: "*/pickups.ndjson"``); against a list,
a number or an object it matches their JSON text (``args: '*"#1001"*'``). A stub with
``times: N`` answers its first N matching requests, then lets the next stub answer.

An answer ``[]`` to a lookup whose options carry ``not_found`` raises that message as a
permanent error, as the file and sqlite connectors do, so a test sees the flow's own
"not found" reason.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from connectors.base import Connector, Request, Response
from connectors.errors import PermanentError, TransientError
from engine.codec import dumps


def plain(value: Any) -> Any:
    """``value`` as JSON gives it back (Decimals as exact strings, tuples as lists): the form
    in which tests compare what they expected with what they got."""
    return json.loads(dumps(value))


def exact(value: Any) -> Any:
    """``value`` with every float made a ``Decimal`` of the same text, as flowyard's connectors
    read fractional JSON numbers (money stays exact)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [exact(v) for v in value]
    return value


def matches(pattern: Any, value: Any) -> bool:
    """Whether a request's option ``value`` fits the stub's ``pattern`` (see module doc)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and matches(sub, value[key]) for key, sub in pattern.items()
        )
    if isinstance(pattern, str) and "*" in pattern:
        text = value if isinstance(value, str) else dumps(value)
        regex = ".*".join(re.escape(part) for part in pattern.split("*"))
        return re.fullmatch(regex, text, re.S) is not None
    return bool(plain(pattern) == plain(value))


@dataclass
class Stub:
    """One answer (or error) for the requests its ``match`` fits."""

    match: dict[str, Any] = field(default_factory=dict)
    answer: Any = None
    status: int | None = None
    error: dict[str, Any] | None = None
    times: int | None = None
    used: int = 0

    def fits(self, options: dict[str, Any]) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        return all(key in options and matches(p, options[key]) for key, p in self.match.items())


@dataclass
class Unanswered:
    """A request no stub of its connection fits: the test fails, naming it."""

    connection: str
    options: Any


class Book:
    """The stubs of one connection and every request it received."""

    def __init__(self, connection: str, stubs: list[Stub]):
        self.connection = connection
        self.stubs = stubs
        self.requests: list[dict[str, Any]] = []
        self.unanswered: list[Unanswered] = []
        self._lock = threading.Lock()

    def answer(self, request: Request) -> Response:
        options = request.options
        with self._lock:
            self.requests.append(plain(options))
            stub = next((s for s in self.stubs if s.fits(options)), None)
            if stub is None:
                self.unanswered.append(Unanswered(self.connection, plain(options)))
            else:
                stub.used += 1
        if stub is None:
            raise PermanentError(
                f"no stub of connection {self.connection!r} matches this request (add one "
                "to the test file's stubs)"
            )
        if stub.error is not None:
            kind = TransientError if stub.error.get("kind") == "transient" else PermanentError
            message = stub.error.get("message") or f"stubbed {stub.error.get('kind')} error"
            if kind is TransientError:
                raise TransientError(message, status=stub.error.get("status"), retry_after=0)
            raise PermanentError(message, status=stub.error.get("status"))
        if stub.answer == [] and options.get("not_found"):
            raise PermanentError(str(options["not_found"]))
        return Response(body=exact(copy.deepcopy(stub.answer)), status=stub.status or 200)


class StubConnector(Connector):
    """A connection of a flow under test: answers from its :class:`Book`, sends nothing.

    :func:`stub_class` makes one subclass per connection, holding that connection's book.
    """

    name: ClassVar[str] = "flowyard-test-stub"
    description: ClassVar[str] = "A flow test's stand-in for a connection: stubbed answers."
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}
    call_schema: ClassVar[dict[str, Any] | None] = {"type": "object"}
    book: ClassVar[Book]

    def call(self, request: Request) -> Response:
        return self.book.answer(request)


def stub_class(book: Book) -> type[StubConnector]:
    """A :class:`StubConnector` subclass answering from ``book``."""
    return type(f"Stub_{book.connection}", (StubConnector,), {"book": book})
