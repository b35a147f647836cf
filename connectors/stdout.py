"""Standard output as a sink: one JSON line per record, for pipes and quick looks."""

from __future__ import annotations

import sys
import threading
from typing import Any, ClassVar

from connectors import _json
from connectors.base import Connector, LaneKind, Request, Response
from connectors.errors import PermanentError

# Every instance writes to the same stream, so they share one lock.
_LOCK = threading.Lock()


class StdoutConnector(Connector):
    """Write each record as one line of JSON to standard output."""

    name: ClassVar[str] = "stdout"
    description: ClassVar[str] = "Standard output: one JSON line per record (sink)."
    lanes: ClassVar[LaneKind] = "none"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    }
    call_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["record"],
        "properties": {
            "record": {"description": "The value to write: any JSON value, one line each."},
        },
    }

    def call(self, request: Request) -> Response:
        """Write the record and flush; ``sys.stdout`` is looked up now, so redirection works."""
        try:
            line = _json.dumps(request.options["record"]) + "\n"
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"the record cannot be written as JSON: {exc}") from None
        with _LOCK:
            stream = sys.stdout
            stream.write(line)
            stream.flush()
        return Response()
