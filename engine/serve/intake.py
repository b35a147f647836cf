"""Intake: one webhook delivery in, one HTTP answer out, the event kept before a 2xx.

The order of the checks is the point (docs/serve.md, "What a delivery gets"):

1. the path names a webhook flow (else 404); the body is no larger than the flow's
   ``max_body`` (else 413: the server stops reading at the limit);
2. the signature holds over the raw bytes, before anything parses them (else 401, nothing
   kept, counted as ``unauthorized``);
3. a topic the flow does not take is acknowledged (200 ``ignored``) and not kept;
4. an inbox at its limit answers 503 with ``Retry-After`` (the platform comes back);
5. the event is committed to the inbox, then answered 200 ``accepted``, or 200
   ``duplicate`` when its id is known (platforms deliver at least once).

:class:`Intake` knows nothing of HTTP servers: the ASGI app (engine/serve/app.py) and
:meth:`engine.Engine.accept` (a partner's own web app) both call it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.context import render_options
from engine.envrefs import resolve
from engine.model import Flow, Webhook
from engine.serve.options import DEFAULT_MAX_DEPTH, RETRY_AFTER
from engine.serve.signatures import SignatureError, lower_headers, verify
from engine.store import InboxAdded, InboxEvent, StateStore


@dataclass
class IntakeAnswer:
    """What to answer a delivery: an HTTP status, a JSON body and headers. ``outcome`` is
    the word the metrics count it under."""

    status: int
    body: dict[str, Any]
    outcome: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Route:
    """A webhook flow as intake serves it: its path, scheme and resolved secret."""

    flow: Flow
    hook: Webhook
    secret: str


def webhook_secret(flow: Flow) -> str:
    """The value of the flow's webhook ``secret`` (``${env:NAME}`` or ``${file:PATH}``);
    raises :class:`~engine.errors.FlowError` when it has none, as a run would."""
    assert flow.source.webhook is not None
    env = resolve(flow)
    rendered = render_options(
        {"secret": flow.source.webhook.secret},
        vars=flow.vars,
        run={"id": "serve", "flow": flow.name},
        env=env,
    )
    return str(rendered["secret"])


def too_large(hook: Webhook) -> IntakeAnswer:
    return IntakeAnswer(
        413,
        {"error": f"the body is larger than this webhook takes ({hook.max_body} bytes)"},
        "too_large",
    )


class Depth:
    """Pending events per flow, read from the store at most every ``every`` seconds (every
    request asks; counting each time would cost more than the write)."""

    def __init__(self, store: StateStore, every: float = 0.5):
        self.store = store
        self.every = every
        self._lock = threading.Lock()
        self._at = 0.0
        self._depth: dict[str, int] = {}

    def __call__(self, flow: str) -> int:
        return self.all().get(flow, 0)

    def all(self) -> dict[str, int]:
        now = time.monotonic()
        if now - self._at >= self.every and self._lock.acquire(blocking=False):
            try:
                self._depth = self.store.inbox_depth()
                self._at = now
            finally:
                self._lock.release()
        return self._depth

    def added(self, flow: str) -> None:
        self._depth[flow] = self._depth.get(flow, 0) + 1


class Intake:
    """Takes deliveries for ``flows`` (those with a webhook source), keeping events with
    ``keep`` (an :class:`~engine.serve.inbox.InboxWriter`'s ``submit``).

    ``max_depth``: pending events per flow above which deliveries get 503 and
    ``Retry-After: retry_after``. ``count(flow, outcome, seconds)`` is told of each
    delivery (the metrics).
    """

    def __init__(
        self,
        flows: list[Flow],
        depth: Depth,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        retry_after: int = RETRY_AFTER,
        count: Callable[[str, str, float], None] = lambda flow, outcome, seconds: None,
    ):
        self.routes: dict[str, Route] = {}
        for flow in flows:
            hook = flow.source.webhook
            if hook is None:
                continue
            if hook.path in self.routes:
                other = self.routes[hook.path].flow.name
                raise ValueError(
                    f"flows {other!r} and {flow.name!r} both take webhooks at {hook.path}: "
                    "give one of them another `path:`"
                )
            self.routes[hook.path] = Route(flow, hook, webhook_secret(flow))
        self.depth = depth
        self.max_depth = max_depth
        self.retry_after = retry_after
        self.count = count

    def secrets(self) -> set[str]:
        """The signing secrets, for masking."""
        return {route.secret for route in self.routes.values()}

    def route(self, path: str) -> Route | None:
        return self.routes.get(path.rstrip("/") or "/") or self.routes.get(path)

    def check(
        self,
        route: Route,
        headers: Mapping[str, str] | list[tuple[str, str]],
        body: bytes,
        now: float | None = None,
    ) -> IntakeAnswer | InboxEvent:
        """Everything before the write: the answer when the delivery is not to be kept,
        else the event to keep."""
        hook, flow = route.hook, route.flow.name
        if len(body) > hook.max_body:
            return too_large(hook)
        lowered = lower_headers(headers)
        try:
            verified = verify(
                hook.scheme, route.secret, lowered, body, now=now, tolerance=hook.tolerance_s
            )
        except SignatureError as exc:
            return IntakeAnswer(401, {"error": f"signature refused: {exc}"}, "unauthorized")
        if hook.topics is not None and verified.topic not in hook.topics:
            return IntakeAnswer(
                200,
                {"status": "ignored", "event_id": verified.event_id, "topic": verified.topic},
                "ignored",
            )
        if self.depth(flow) >= self.max_depth:
            return IntakeAnswer(
                503,
                {
                    "error": f"the inbox of flow {flow!r} holds {self.max_depth} events or more; "
                    "deliver again later"
                },
                "throttled",
                {"Retry-After": str(self.retry_after)},
            )
        return InboxEvent(
            event_id=verified.event_id,
            body=body,
            topic=verified.topic,
            scheme=hook.scheme,
            headers=verified.headers,
            received_at=time.time(),
        )

    def answer(
        self, route: Route, event: InboxEvent, kept: InboxAdded | BaseException
    ) -> IntakeAnswer:
        """The answer once the store kept the event (or failed to)."""
        if isinstance(kept, BaseException):
            # not kept: the platform must deliver again (it does, on any 5xx)
            return IntakeAnswer(
                500, {"error": "the event could not be kept; deliver again"}, "failed"
            )
        if kept.new:
            self.depth.added(route.flow.name)
        return IntakeAnswer(
            200,
            {
                "status": "accepted" if kept.new else "duplicate",
                "event_id": event.event_id,
                "inbox_id": kept.id,
            },
            "accepted" if kept.new else "duplicate",
        )
