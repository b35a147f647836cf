"""Tryton ERP over JSON-RPC: model calls, workflow buttons and stock levels.

The connector speaks Tryton's JSON-RPC (``POST <url>/<database>/rpc/``) with
httpx. It logs in once, lazily, on first use (``common.db.login``), keeps the
session for every later call, and logs in again once when the server answers 401
(the session expired or was closed). The user's context
(``model.res.user.get_preferences``: company, language, …) is sent as the last
parameter of every model call, merged with the connection's ``context`` and the
call's own ``context`` (later wins).

Values travel in Tryton's JSON form: ``Decimal``, ``date``, ``datetime``,
``time``, ``timedelta`` and ``bytes`` are sent as ``{"__class__": …}`` objects and
read back as the Python types (money stays ``Decimal``).

Errors:

* Tryton refusing the request (``UserError`` and its kinds such as access and
  validation errors, ``UserWarning``, ``LoginException``, an unknown method (403),
  an unknown database (404), a bad argument) → :class:`PermanentError` whose
  message is Tryton's own message, written for the person who must act on it;
* a lock or concurrent update (``ConcurrencyException``, "database is locked"),
  connection errors, timeouts, 408, 429 and 5xx → :class:`TransientError`, with
  ``retry_after`` from a ``Retry-After`` header in either form (``connectors.httpkit``).

A call with ``then`` runs workflow methods on the records it created (or was
given), and ``read_fields`` reads them back, in further requests. Tryton runs each
request in its own transaction, so when one of those fails after ``create``
succeeded the created records stay in the ERP: after retrying transient trouble
in place, that failure is raised as :class:`PermanentError` naming the ids and the
steps done, never as a transient error, because retrying the whole call would
create the records twice.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import threading
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from connectors.base import Check, Connector, Item, LaneKind, Request, Response
from connectors.errors import ConnectorError, PermanentError, TransientError
from connectors.httpkit import is_transient_status, retry_after

if TYPE_CHECKING:
    import httpx

_NAME = r"^[a-z][a-z0-9_]*$"
_MODEL = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"
_DOMAIN = {
    "type": "array",
    "description": 'A Tryton search domain, e.g. [["code", "like", "TSHIRT-%"]].',
}
_CONTEXT = {
    "type": "object",
    "description": "Context entries for this call, merged over the user's preferences "
    "and the connection's context.",
}
# Tryton's answer when it hit a lock and could not retry it away.
_TRANSIENT_MARKERS = ("database is locked", "could not serialize", "deadlock detected")
_FOLLOW_UP_ATTEMPTS = 3


class TrytonConnector(Connector):
    """A Tryton server: call any model method (action) and read stock levels (source)."""

    name: ClassVar[str] = "tryton"
    description: ClassVar[str] = (
        "Tryton ERP over JSON-RPC: model and workflow calls, stock levels per location."
    )
    secret_options: ClassVar[frozenset[str]] = frozenset({"password"})
    lanes: ClassVar[LaneKind] = "processes"  # each process logs in once, on first use

    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url", "database", "username", "password"],
        "properties": {
            "url": {
                "type": "string",
                "pattern": "^https?://",
                "description": "Base URL of the Tryton server, e.g. http://127.0.0.1:8000.",
            },
            "database": {
                "type": "string",
                "minLength": 1,
                "description": "Name of the Tryton database to work in.",
            },
            "username": {
                "type": "string",
                "minLength": 1,
                "description": "Tryton login of the integration user.",
            },
            "password": {
                "type": "string",
                "description": "Password of that user; give it as ${env:TRYTON_PASSWORD}.",
            },
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 30,
                "description": "Seconds to wait for one answer before the call counts as "
                "transiently failed.",
            },
            "context": {
                "type": "object",
                "description": "Context entries added to every call (over the user's "
                'preferences), e.g. {"language": "en"}.',
            },
        },
    }

    call_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model", "method"],
        "properties": {
            "model": {
                "type": "string",
                "pattern": _MODEL,
                "description": "Tryton model, e.g. sale.sale, party.party, account.invoice.",
            },
            "method": {
                "type": "string",
                "pattern": _NAME,
                "description": "Method of the model: search_read, search, read, create, "
                "write, delete, or a workflow button such as quote, confirm, process, post.",
            },
            "args": {
                "type": "array",
                "default": [],
                "description": "Positional parameters before the context, e.g. for create "
                '[[{"party": 2, "lines": [["create", [{…}]]]}]], for a workflow '
                "method [[sale_id]].",
            },
            "context": _CONTEXT,
            "then": {
                "type": "array",
                "items": {"type": "string", "pattern": _NAME},
                "description": "Workflow methods run, in order, on the ids the call created "
                '(create) or was given (first argument), e.g. ["quote", "confirm"].',
            },
            "read_fields": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "description": "Fields to read back from those ids after the call and its "
                '\'then\' steps, e.g. ["number", "state", "total_amount"].',
            },
            "confirm_warnings": {
                "type": "array",
                "items": {"type": "string", "pattern": _NAME},
                "description": "Tryton warnings this call (and its 'then' steps) confirms, "
                "as a person answering Yes in the Tryton client does, by name: the part of "
                'the warning\'s key after its dot, e.g. ["invoice_taxes"] to post an invoice '
                "whose taxes are not its products' defaults. Any other warning fails the "
                "call.",
            },
        },
    }

    read_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["locations"],
        "properties": {
            "model": {
                "type": "string",
                "pattern": _MODEL,
                "default": "product.product",
                "description": "Model whose stock quantities are read (product.product or "
                "product.template).",
            },
            "locations": {
                "type": "array",
                "minItems": 1,
                "items": {"type": ["integer", "string"]},
                "description": 'Stock locations, as ids or codes (e.g. "STO"); quantities '
                "include child locations.",
            },
            "fields": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "default": ["code", "name"],
                "description": "Product fields to copy into each record besides the quantities.",
            },
            "domain": _DOMAIN,
            "context": _CONTEXT,
            "page_size": {
                "type": "integer",
                "minimum": 1,
                "default": 500,
                "description": "Products fetched per request.",
            },
        },
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self._endpoint = "{}/{}/rpc/".format(
            str(self.options.get("url", "")).rstrip("/"),
            quote(str(self.options.get("database", "")), safe=""),
        )
        self._timeout = float(self.options.get("timeout", 30))
        import httpx  # with a connection: loading a flow does not import it (start-up)

        self._client = httpx.Client(timeout=self._timeout)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._authorization: str | None = None
        self._preferences: dict[str, Any] = {}

    # -- the action role -------------------------------------------------------------

    def call(self, request: Request) -> Response:
        """Call ``model.<model>.<method>`` with ``args`` and the context; run ``then`` steps."""
        opts = request.options
        model, method = opts["model"], opts["method"]
        args = list(opts.get("args") or [])
        context = opts.get("context") or {}
        confirm = frozenset(opts.get("confirm_warnings") or ())
        result = self._execute_confirming(model, method, args, context, confirm)
        then, read_fields = opts.get("then") or [], opts.get("read_fields")
        if not then and not read_fields:
            return Response(body=result, status=200)
        ids = result if method == "create" else (args[0] if args else [])
        if not _is_id_list(ids):
            raise PermanentError(
                f"'then' and 'read_fields' need ids, but {model}.{method} "
                f"{'returned' if method == 'create' else 'was given'} {ids!r}"
            )
        done = [method]
        for step in then:
            self._follow_up(model, step, [ids], context, done, confirm)
            done.append(step)
        records = None
        if read_fields:
            records = self._follow_up(model, "read", [ids, list(read_fields)], context, done)
        return Response(body={"ids": ids, "records": records}, status=200)

    def _follow_up(
        self,
        model: str,
        method: str,
        args: list[Any],
        context: dict[str, Any],
        done: list[str],
        confirm: frozenset[str] = frozenset(),
    ) -> Any:
        # The first request changed the ERP already, so a retry of the whole call
        # would repeat it (create the records twice): transient trouble is retried
        # here, and whatever remains is permanent.
        for attempt in range(1, _FOLLOW_UP_ATTEMPTS + 1):
            try:
                return self._execute_confirming(model, method, args, context, confirm)
            except TransientError as exc:
                error: ConnectorError = exc
                if attempt < _FOLLOW_UP_ATTEMPTS:
                    time.sleep(0.5 * attempt)
            except PermanentError as exc:
                error = exc
                break
        ids = args[0]
        raise PermanentError(
            f"{error.message} ({model} {ids} stay in the ERP after {', '.join(done)}; "
            f"{method!r} failed)",
            status=error.status,
            response={"ids": ids, "done": list(done), "failed": method, "error": error.response},
        )

    def _execute_confirming(
        self,
        model: str,
        method: str,
        args: list[Any],
        context: dict[str, Any],
        confirm: frozenset[str],
    ) -> Any:
        """``execute``, answering Yes to the warnings named in ``confirm``.

        Tryton raises a warning before it changes anything (the request's transaction is
        rolled back), so the call is made again once the warning is skipped, as the
        Tryton client does: ``res.user.warning.skip(key)`` for this user, once.
        """
        skipped: set[str] = set()
        while True:
            try:
                return self.execute(model, method, *args, context=context)
            except PermanentError as exc:
                answer = exc.response if isinstance(exc.response, dict) else {}
                key = answer.get("key")
                if answer.get("type") != "UserWarning" or not isinstance(key, str):
                    raise
                if key.partition(".")[2] not in confirm or key in skipped:
                    raise
                skipped.add(key)
                self.execute("res.user.warning", "skip", key, False)

    def execute(
        self, model: str, method: str, *args: Any, context: Mapping[str, Any] | None = None
    ) -> Any:
        """Call ``model.<model>.<method>(*args, context)`` and return the decoded result."""
        self._ensure_login()
        merged = {**self._preferences, **(self.options.get("context") or {}), **(context or {})}
        return self._rpc(f"model.{model}.{method}", [*args, merged])

    def check(self, source: Mapping[str, Any] | None = None) -> list[Check]:
        """Log in (which reads the user's preferences) and count the products: what every
        flow on Tryton does first. Nothing is written."""
        user = self.options.get("username")
        what = f"log in to {self.options.get('url')} database {self.options.get('database')}"
        try:
            self._ensure_login()
        except ConnectorError as exc:
            return [Check(f"{what} as {user}", False, str(exc))]
        checks = [Check(f"{what} as {user}", True, "logged in")]
        try:
            count = self.execute("product.product", "search_count", [])
        except ConnectorError as exc:
            return [*checks, Check("read product.product", False, str(exc))]
        return [*checks, Check("read product.product", True, f"{count} product(s)")]

    # -- the source role ---------------------------------------------------------------

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        """Yield one record per product and location with its quantity; no cursor."""
        model = options.get("model", "product.product")
        fields = list(options.get("fields") or ["code", "name"])
        wanted = [f for f in fields if f not in ("quantity", "forecast_quantity")]
        domain = list(options.get("domain") or [])
        page = int(options.get("page_size", 500))
        key = model.rsplit(".", 1)[-1]  # "product" for product.product
        for location_id, code in self._locations(options["locations"]):
            # Tryton computes quantities for the locations in the context; without it
            # every quantity reads 0.
            context = {**(options.get("context") or {}), "locations": [location_id]}
            offset = 0
            while True:
                rows = self.execute(
                    model,
                    "search_read",
                    domain,
                    offset,
                    page,
                    [["id", "ASC"]],
                    [*wanted, "quantity", "forecast_quantity"],
                    context=context,
                )
                for row in rows:
                    data = {key: row["id"]}
                    data.update({f: row.get(f) for f in wanted if f != "id"})
                    data.update(
                        location=location_id,
                        location_code=code,
                        quantity=row.get("quantity"),
                        forecast_quantity=row.get("forecast_quantity"),
                    )
                    yield Item(data=data, position=None)
                if len(rows) < page:
                    break
                offset += page

    def _locations(self, wanted: list[int | str]) -> list[tuple[int, str | None]]:
        """Each wanted location as (id, code); an unknown or ambiguous one is permanent."""
        codes = [w for w in wanted if isinstance(w, str)]
        ids = [w for w in wanted if isinstance(w, int)]
        rows = self.execute(
            "stock.location",
            "search_read",
            ["OR", ["code", "in", codes], ["id", "in", ids]],
            0,
            None,
            None,
            ["code"],
            context={},
        )
        code_of = {row["id"]: row["code"] for row in rows}
        by_code: dict[str, list[int]] = {}
        for location_id, code in code_of.items():
            by_code.setdefault(code, []).append(location_id)
        found = []
        for want in wanted:
            if isinstance(want, int):
                if want not in code_of:
                    raise PermanentError(f"Tryton has no stock location with id {want}")
                found.append((want, code_of[want]))
                continue
            matches = by_code.get(want, [])
            if not matches:
                raise PermanentError(f"no stock location has the code {want!r} in Tryton")
            if len(matches) > 1:
                raise PermanentError(
                    f"stock location code {want!r} matches {len(matches)} locations in "
                    "Tryton; give its id instead"
                )
            found.append((matches[0], want))
        return found

    # -- session -----------------------------------------------------------------------

    def _ensure_login(self) -> None:
        if self._authorization is None:
            with self._lock:
                if self._authorization is None:
                    self._login()

    def _login(self) -> None:
        """Log in and read the user's context; call with the lock held."""
        user = self.options["username"]
        params = [user, {"password": self.options.get("password", "")}, "en"]
        try:
            result = self._post("common.db.login", params, authorization=None)
        except PermanentError as exc:
            if exc.status == 401:
                raise PermanentError(
                    f"Tryton refused the login of user {user!r} on database "
                    f"{self.options['database']!r}: check the username and password",
                    status=401,
                ) from None
            raise
        user_id, token = result[0], self.declare_secret(result[1])  # masked from now on
        session = base64.b64encode(f"{user}:{user_id}:{token}".encode()).decode("ascii")
        self._authorization = f"Session {self.declare_secret(session)}"
        preferences = self._post(
            "model.res.user.get_preferences", [True, {}], authorization=self._authorization
        )
        self._preferences = dict(preferences or {})

    def _rpc(self, method: str, params: list[Any]) -> Any:
        authorization = self._authorization
        try:
            return self._post(method, params, authorization=authorization)
        except PermanentError as exc:
            if exc.status != 401:
                raise
        with self._lock:
            # Another thread may have logged in again already.
            if self._authorization == authorization:
                self._authorization = None
                self._login()
            authorization = self._authorization
        try:
            return self._post(method, params, authorization=authorization)
        except PermanentError as exc:
            if exc.status == 401:
                raise PermanentError(
                    f"Tryton refused the session for {method} right after a new login",
                    status=401,
                ) from None
            raise

    # -- the wire ----------------------------------------------------------------------

    def _post(self, method: str, params: list[Any], *, authorization: str | None) -> Any:
        body = json.dumps({"id": next(self._ids), "method": method, "params": _encode(params)})
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        import httpx

        try:
            answer = self._client.post(self._endpoint, content=body, headers=headers)
        except httpx.TimeoutException:
            raise TransientError(
                f"Tryton did not answer {method} within {self._timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"cannot reach Tryton at {self.options.get('url')}: {type(exc).__name__}: {exc}"
            ) from None
        status = answer.status_code
        if status != 200:
            raise _http_error(method, answer, self.options.get("database"))
        try:
            payload = json.loads(answer.content, object_hook=_decode_object)
        except ValueError:
            raise TransientError(
                f"Tryton answered {method} with a body that is not JSON", status=status
            ) from None
        if isinstance(payload, dict) and payload.get("error") is not None:
            raise _tryton_error(method, payload["error"])
        return payload.get("result") if isinstance(payload, dict) else payload

    def close(self) -> None:
        """Log out (best effort) and close the HTTP connections."""
        with self._lock:
            authorization, self._authorization = self._authorization, None
        if authorization:
            try:
                self._post("common.db.logout", [], authorization=authorization)
            except ConnectorError:
                pass
        self._client.close()


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    )


def _http_error(method: str, answer: httpx.Response, database: Any) -> ConnectorError:
    status = answer.status_code
    if is_transient_status(status):
        return TransientError(
            f"Tryton answered {method} with HTTP {status}",
            status=status,
            retry_after=retry_after(answer.headers.get("Retry-After")),
        )
    if status == 403:
        message = f"Tryton does not allow {method} (HTTP 403): no such RPC method, or no access"
    elif status == 404:
        message = f"Tryton has no database {database!r} (HTTP 404 on {method})"
    elif status == 401:
        message = f"Tryton refused the session (HTTP 401 on {method})"
    else:
        message = f"Tryton refused {method} with HTTP {status}"
    return PermanentError(message, status=status)


def _tryton_error(method: str, error: Any) -> ConnectorError:
    """Classify the ``error`` member of a Tryton answer (HTTP 200)."""
    kind, detail = (
        (error[0], error[1]) if isinstance(error, list) and len(error) == 2 else (None, error)
    )
    if kind == "UserError":  # also access, validation and button-state errors
        message, description = (list(detail) + ["", ""])[:2]
        text = f"{message} {description}".strip() if description else str(message)
        return PermanentError(
            text, response={"type": kind, "message": message, "description": description}
        )
    if kind == "UserWarning":
        key, message, description = (list(detail) + ["", "", ""])[:3]
        text = f"{message} {description}".strip() if description else str(message)
        return PermanentError(
            f"Tryton warning needs a person to confirm it: {text}",
            response={"type": kind, "key": key, "message": message, "description": description},
        )
    if kind == "ConcurrencyException":
        return TransientError(f"concurrent update in Tryton: {detail}", response={"type": kind})
    if kind == "LoginException":
        return PermanentError(
            f"Tryton asks for a login step ({detail}) on {method}", response={"type": kind}
        )
    # Any other server exception arrives as [str(exception), traceback].
    text = str(kind if kind is not None else detail)
    if any(marker in text.lower() for marker in _TRANSIENT_MARKERS):
        return TransientError(f"Tryton is busy on {method}: {text}", response={"type": "lock"})
    return PermanentError(f"Tryton failed on {method}: {text}", response={"type": "exception"})


# -- Tryton's JSON form of values ----------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dt.time):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, set | frozenset):
        return [_encode(item) for item in value]
    return value


def _decode_object(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return dt.datetime(
            obj["year"],
            obj["month"],
            obj["day"],
            obj["hour"],
            obj["minute"],
            obj["second"],
            obj["microsecond"],
        )
    if kind == "time":
        return dt.time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
    if kind == "timedelta":
        return dt.timedelta(seconds=obj["seconds"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj
