"""The connector seam: one small base class a partner must learn.

A connector is configured from a mapping of options (a flow's *connection*) and
offers one or both roles:

* **source**: ``read(options, cursor)`` yields :class:`Item` objects, each with the
  record and, for incremental sources, its ``position`` (the cursor value that
  resumes *after* it). An unparsable input yields an ``Item`` with ``error`` set
  and the raw text, so the engine can dead-letter it and go on.
* **action**: ``call(request)`` performs one request for one record and returns a
  :class:`Response`, or raises :class:`~connectors.errors.TransientError` /
  :class:`~connectors.errors.PermanentError`.

Each role's options are declared as JSON Schemas (draft-07), which the flow
loader uses to check a flow before it runs; :meth:`Connector.lint` adds the checks a
schema cannot express (a warning about a risky option, say). Connectors know nothing
about flows: templates are rendered by the engine before ``call`` sees them.

Groups of calls: a run commits its records in groups (docs/semantics.md, "Group commit").
A connector whose target has transactions may hold a group's calls in one transaction
(:meth:`Connector.begin_group`, :meth:`Connector.commit_group`,
:meth:`Connector.rollback_group`), so the target makes one durable commit per group
instead of one per call. The default holds nothing: each call commits before it returns,
as a connector written before groups does.

Calls at once: a flow's ``concurrency`` runs records on several lanes, and ``lanes`` says
what lanes a connector's calls need (docs/semantics.md, "Concurrency"): ``"processes"``
(calls wait on another system, and each process may have an instance of its own: lanes
in worker processes, not held back by one interpreter lock), ``"threads"`` (the default:
calls wait on another system but must stay in the engine's process) or ``"none"`` (calls
are work on this machine, which lanes would only slow down).

Reaching the target: :meth:`Connector.check` tries what ``flowyard check`` reports (log in,
one harmless read) without sending anything a record would; by default a connector has
nothing to check.

Secrets: a connector declares the values it must never see shown
(:meth:`Connector.declare_secret`): credentials from its options and tokens it receives
at run time (a session id, an OAuth token). The engine masks them, and their encoded
forms, wherever it shows or stores data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeGuard

#: what lanes a connector's calls need (:attr:`Connector.lanes`)
LaneKind = Literal["processes", "threads", "none"]


@dataclass(slots=True)
class Item:
    """One record read by a source, or one input the source could not parse.

    ``text``, where the source has it, is the JSON text ``data`` was decoded from
    (``connectors._json.loads(text)`` gives ``data`` again): a lane process is sent that
    instead of the decoded record, which costs more to send between processes.
    """

    data: Any = None
    position: Any = None
    line: int | None = None
    raw: str | None = None
    error: str | None = None
    text: str | None = None


@dataclass(slots=True)
class Request:
    """One call for one record: the rendered call options and the idempotency key."""

    options: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(slots=True)
class Response:
    """What a call returned: a status where the target has one, and the decoded body."""

    body: Any = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lint:
    """A problem :meth:`Connector.lint` finds in options as written in a flow.

    ``path`` leads to the option inside the options given (``("auth", "token")``);
    a ``"warning"`` is shown by ``flowyard validate``, an ``"error"`` refuses the flow.
    """

    path: tuple[str | int, ...]
    message: str
    severity: Literal["warning", "error"] = "warning"


@dataclass(frozen=True, slots=True)
class Check:
    """One thing :meth:`Connector.check` tried, and how it went.

    ``what`` says what was tried (``log in as admin``, ``GET /orders.json``), ``ok``
    whether it worked, ``detail`` what came back or why it failed (no secret: the engine
    masks declared secrets, but say nothing that needs it).
    """

    what: str
    ok: bool
    detail: str = ""


def is_template(value: Any) -> TypeGuard[str]:
    """Whether an option value, as written in a flow, is a template the engine renders."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


# Names a template may use that are the same for every record of a run.
_RUN_NAMES = frozenset({"vars", "run"})
# Declaring a secret is rare (construction, a login): one lock serves every connector.
# Re-entrant: the listeners are told under it (one may declare another secret).
_SECRETS_LOCK = threading.RLock()


def depends_on_record(value: Any) -> bool:
    """Whether an option value, as written, is a template that reads record data.

    True for ``"{{ record.store }}.ndjson"`` (or any name but ``vars`` and ``run``),
    false for ``"{{ vars.day }}.ndjson"`` and for plain text. A template that does not
    parse counts as reading record data (the loader reports its syntax).
    """
    if not is_template(value):
        return False
    from jinja2 import Environment, TemplateSyntaxError, meta  # only while a flow loads

    try:
        names = meta.find_undeclared_variables(Environment().parse(value))
    except TemplateSyntaxError:
        return True
    return not names <= _RUN_NAMES


class Connector:
    """Base class of every connector.

    Subclasses set ``name``, ``options_schema`` (options of a connection), and
    ``read_schema`` and/or ``call_schema`` for the roles they offer; they override
    ``read`` and/or ``call``. ``secret_options`` names connection options whose
    (string) values are secrets: they are declared with :meth:`declare_secret` when
    the connector is built.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    read_schema: ClassVar[dict[str, Any] | None] = None
    call_schema: ClassVar[dict[str, Any] | None] = None
    #: the folder relative paths in options are resolved against; the engine sets it to
    #: the flow file's folder, so a flow's paths do not depend on where it is started from
    root: Path | None = None
    #: connection options whose string values are secrets (declared on construction)
    secret_options: ClassVar[frozenset[str]] = frozenset()
    #: what lanes its calls need when a flow's ``concurrency`` is above 1: ``"processes"``
    #: (each worker process builds its own instance: nothing of it is shared with the
    #: engine's process), ``"threads"`` (calls at once, in the engine's process) or
    #: ``"none"`` (local work: calls at once would not be faster)
    lanes: ClassVar[LaneKind] = "threads"

    def __init__(self, options: Mapping[str, Any] | None = None):
        self.options: dict[str, Any] = dict(options or {})

    # -- secrets -------------------------------------------------------------

    def _secret_state(self) -> tuple[list[str], list[Callable[[str], None]]]:
        """(secrets, listeners), made on first use, so that a subclass whose
        ``__init__`` forgot ``super().__init__`` still works; seeded with the values
        of ``secret_options``."""
        state: tuple[list[str], list[Callable[[str], None]]] | None
        state = self.__dict__.get("_secret_state_")
        if state is None:
            options = getattr(self, "options", None) or {}
            seeded = [options[n] for n in sorted(self.secret_options) if options.get(n)]
            state = ([v for v in seeded if isinstance(v, str)], [])
            state = self.__dict__.setdefault("_secret_state_", state)
        return state

    def declare_secret(self, value: str) -> str:
        """Declare ``value`` a secret and return it.

        From then on the engine masks it as ``***`` in the run log, traces, dead letters,
        stored responses and dry-run output, in the forms it travels in too (base64, also
        inside ``user:secret``; URL-encoded; JSON-escaped). Call it in ``__init__`` for
        credentials taken from options, and as soon as a token arrives at run time (a
        session id, an OAuth access token). Safe from any thread.
        """
        if not isinstance(value, str) or not value:
            return value
        with _SECRETS_LOCK:
            secrets, listeners = self._secret_state()
            if value in secrets:
                return value
            secrets.append(value)
            # told before the lock is let go: a lane that declares the same value at the
            # same moment returns only once it is masked, not with it in its answer
            for listener in listeners:
                listener(value)
        return value

    def secrets(self) -> list[str]:
        """The secrets declared so far (``secret_options`` values included)."""
        with _SECRETS_LOCK:
            return list(self._secret_state()[0])

    def on_secret(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(value)`` for every secret declared so far and from now on.

        The engine registers its redactor here when it builds the connector.
        """
        with _SECRETS_LOCK:
            secrets, listeners = self._secret_state()
            listeners.append(listener)
            known = list(secrets)
        for value in known:
            listener(value)

    # -- checks at load time -------------------------------------------------

    @classmethod
    def lint(
        cls, role: str, options: Mapping[str, Any], connection: Mapping[str, Any]
    ) -> list[Lint]:
        """Problems in options as written in a flow, found when the flow is loaded.

        ``role`` says which options these are: ``"connection"`` (the connection's own;
        ``connection`` is then the same mapping), ``"source"`` (read options) or
        ``"action"`` (the options of a send or enrich step); ``connection`` holds the
        options of the connection they go through. Values are as written: templates
        unrendered (see :func:`is_template` and :func:`depends_on_record`) and
        ``${env:NAME}`` unresolved; the schema may have refused some of them already, so
        check a value's type before using it. Paths in the answer are relative to
        ``options``. By default there is nothing to say.
        """
        return []

    @classmethod
    def roles(cls) -> list[str]:
        """The roles this connector offers: ``source``, ``action`` or both."""
        roles = []
        if cls.read_schema is not None:
            roles.append("source")
        if cls.call_schema is not None:
            roles.append("action")
        return roles

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        """Yield the source's records after ``cursor`` (None: from the start)."""
        raise NotImplementedError(f"connector {self.name!r} is not a source")

    def call(self, request: Request) -> Response:
        """Perform one request for one record."""
        raise NotImplementedError(f"connector {self.name!r} offers no calls")

    # -- groups of calls -------------------------------------------------------

    def begin_group(self) -> bool:
        """The engine starts a group of calls that it commits together; say whether this
        connector holds them in one transaction of the target until :meth:`commit_group`.

        Return True only if, until :meth:`commit_group` returns, none of the group's calls
        is applied where anyone else can see it, and all of them are applied (durably)
        once it has returned; :meth:`rollback_group` then discards them. The engine
        commits the sends' idempotency keys only after :meth:`commit_group`, so a crash
        before it makes the next run send the group's calls again: write them so that
        doing them twice is harmless (an upsert, not an insert). The calls of a group
        may come from several threads. The default, False, keeps every call committed
        before it returns (the engine then commits each key in flight before its call).
        """
        return False

    def commit_group(self) -> None:
        """Apply every call made since :meth:`begin_group`, durably and at once. Raise a
        :class:`~connectors.errors.ConnectorError` when that failed: the engine then keeps
        none of the group's results and stops the run; the next run sends them again."""

    def rollback_group(self) -> None:
        """Discard every call made since :meth:`begin_group` (the run is ending without
        committing them)."""

    def check(self, source: Mapping[str, Any] | None = None) -> list[Check]:
        """Reach the target the way a run would, changing nothing: log in, one harmless
        read (a ``GET``, a ``SELECT``, opening a file). ``source`` is the flow's read
        options when the flow reads from this connection (its first page is a harmless
        read), else None.

        Return one :class:`Check` per thing tried; raise nothing: an error is a failed
        check (the engine turns an exception into one, too). By default there is nothing
        to check (``[]``), which ``flowyard check`` reports as "not checked".
        """
        return []

    def resolve_path(self, path: str | Path) -> Path:
        """``path`` as an absolute path: relative ones are taken from :attr:`root`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root or Path.cwd()) / p

    def close(self) -> None:
        """Release what the connector holds (connections, files)."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
