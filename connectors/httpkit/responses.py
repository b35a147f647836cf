"""What an HTTP answer means: a classified error, a wait, a body with money kept exact.

* :func:`raise_for_status` turns an answer of 300 or more into the error tree's
  :class:`~connectors.errors.TransientError` (408, 429, 5xx, and 409 to a request that
  carried an ``Idempotency-Key``) or :class:`~connectors.errors.PermanentError` (the
  rest), with the status and the decoded answer, which the dead letter keeps.
* :func:`retry_after` reads a ``Retry-After`` header in both of its forms.
* :func:`decode_body` reads JSON with fractions as ``Decimal`` (``connectors._json``).
* :func:`raise_for_graphql_errors` does for a GraphQL answer (HTTP 200 with ``errors``)
  what :func:`raise_for_status` does for a status.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from connectors import _json
from connectors.errors import PermanentError, TransientError

if TYPE_CHECKING:
    import httpx

_DELTA_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")
#: ``extensions.code`` (or ``type``) of a GraphQL error that goes away by waiting
GRAPHQL_TRANSIENT_CODES = frozenset({"THROTTLED", "RATE_LIMITED"})


def is_transient_status(status: int, *, idempotent: bool = False) -> bool:
    """Whether an error status may go away by itself: 408, 429, any 5xx, and 409 when the
    request carried an ``Idempotency-Key`` (the target is still processing that key)."""
    return status in (408, 429) or status >= 500 or (status == 409 and idempotent)


def raise_for_status(response: httpx.Response, *, idempotent: bool = False) -> httpx.Response:
    """``response`` itself when its status is below 300, else its classified error.

    The message names the method, the URL path (never the query, which may hold a
    secret) and the status; ``status`` and ``response`` (the decoded body) travel with
    the error, and a transient one carries ``retry_after`` from the ``Retry-After`` header.
    """
    status = response.status_code
    if status < 300:
        return response
    message = f"{response.request.method} {response.url.path} -> {status} {response.reason_phrase}"
    body = decode_body(response, strict=False)
    if is_transient_status(status, idempotent=idempotent):
        raise TransientError(
            message,
            status=status,
            response=body,
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    raise PermanentError(message, status=status, response=body)


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def decode_body(response: httpx.Response, *, strict: bool = True) -> Any:
    """JSON (fractions as ``Decimal``) when the content type says JSON, else text; None if empty.

    A body that says JSON but does not parse is a ``TransientError`` (a truncated
    answer), unless ``strict`` is false (after a side effect): then it is returned as text.
    """
    if not response.content:
        return None
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return _json.loads(response.content)
        except ValueError:
            if strict:
                raise TransientError(
                    f"{response.request.method} {response.url.path}: "
                    "response says JSON but does not parse (truncated?)",
                    status=response.status_code,
                    response=response.text,
                ) from None
    return response.text


def raise_for_graphql_errors(
    body: Any, *, transient: Collection[str] = GRAPHQL_TRANSIENT_CODES
) -> Any:
    """``body`` itself when it carries no GraphQL ``errors``, else their classified error.

    A GraphQL server answers 200 and lists what went wrong in ``errors``; an error whose
    ``extensions.code`` (or ``type``) is in ``transient`` (a rate limit) makes a
    ``TransientError``, any other a ``PermanentError``. The message joins the errors'
    messages; ``response`` is the ``errors`` list.
    """
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return body
    if not isinstance(errors, list):
        errors = [errors]
    messages, codes = [], set()
    for error in errors:
        if isinstance(error, dict):
            messages.append(str(error.get("message", error)))
            extensions = error.get("extensions")
            codes.add(extensions.get("code") if isinstance(extensions, dict) else None)
            codes.add(error.get("type"))
        else:
            messages.append(str(error))
    message = "GraphQL errors: " + "; ".join(messages)
    if codes & set(transient):
        raise TransientError(message, response=errors)
    raise PermanentError(message, response=errors)
