"""``flowyard serve``: one process that takes webhooks, runs flows on their schedules,
answers ``/metrics``, ``/healthz`` and ``/readyz``, and sends alerts.

:class:`Service` is everything but HTTP: the inbox writer, one processor thread per
webhook flow (each running the flow over its inbox, :meth:`Engine.process_inbox`), the
scheduler, the alerts, and a maintenance thread (done events pruned after ``keep_events``;
overdue flows checked). :func:`serve` puts the ASGI app (engine/serve/app.py) in front of
it with uvicorn and stops gracefully on SIGTERM or SIGINT: no new connection is accepted,
requests in flight are answered (their events committed), each processor finishes the
record it is on and commits, the scheduler's runs end, pending alerts go out, and the
process exits 0. After ``kill -9`` nothing acknowledged is lost: the next start processes
what is pending, claims of the killed process included.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.errors import LockHeld
from engine.model import Flow
from engine.runlog import _Redactor
from engine.serve.alerts import Alerts, Channel, EmailChannel, WebhookChannel
from engine.serve.inbox import InboxWriter
from engine.serve.intake import Depth, Intake
from engine.serve.metrics import Metrics
from engine.serve.options import ServeOptions
from engine.serve.scheduler import Scheduler, parse_clock
from engine.store import holder_id

if TYPE_CHECKING:
    from engine.api import Engine
    from engine.runner import RunResult


class Service:
    """The parts of ``flowyard serve`` that are not HTTP; :meth:`start` and :meth:`stop`."""

    def __init__(self, engine: Engine, flows: list[Flow], options: ServeOptions):
        self.engine = engine
        self.flows = flows
        self.options = options
        self.say = options.say
        self.hooked = [f for f in flows if f.source.webhook is not None]
        self.scheduled = [f for f in flows if f.schedule is not None]
        self.store = engine._shared_store()
        names = [f.name for f in flows]
        self.metrics = Metrics(lambda: contextlib.nullcontext(self.store), names)
        self.wakes = {f.name: threading.Event() for f in self.hooked}
        self.stopping = threading.Event()
        self.intake = Intake(
            self.hooked,
            Depth(self.store),
            max_depth=options.max_depth,
            retry_after=options.retry_after,
            count=self.metrics.webhook,
        )
        self.alerts = Alerts(
            self._channels(),
            secrets=self._secrets(),
            batch_seconds=options.alert_batch,
            min_interval=options.alert_interval,
            on_error=lambda channel, error: self.say(f"alert via {channel} not sent: {error}"),
        )
        engine.listeners.extend([self.metrics.listener, self.alerts.listener])
        self.writer: InboxWriter | None = None
        self.scheduler = Scheduler(
            self.scheduled,
            claim=lambda flow, due: self.store.claim_schedule(flow, due, holder_id()),
            last_claimed=self._last_claimed,
            run=self._run_scheduled,
            clock=parse_clock(options.clock) if isinstance(options.clock, str) else options.clock,
        )
        self._threads: list[threading.Thread] = []
        self.started_at = time.time()
        self.ready = False

    def _channels(self) -> list[Channel]:
        channels: list[Channel] = []
        if self.options.alert_url:
            channels.append(WebhookChannel(self.options.alert_url))
        mail = self.options.email
        if mail is not None and mail.to:
            channels.append(
                EmailChannel(
                    mail.host,
                    mail.port,
                    mail.sender,
                    mail.to,
                    user=mail.user,
                    password=mail.password,
                    starttls=mail.starttls,
                )
            )
        return channels

    def _secrets(self) -> set[str]:
        from engine.envrefs import resolve

        found = set(self.intake.secrets())
        for flow in self.flows:
            with contextlib.suppress(Exception):  # a missing one fails its runs, said there
                found |= set(resolve(flow).values())
        if self.options.alert_url:
            found.add(self.options.alert_url)
        if self.options.email and self.options.email.password:
            found.add(self.options.email.password)
        return found

    def mask(self) -> _Redactor:
        return _Redactor(self._secrets())

    def _last_claimed(self, flow: str) -> float | None:
        state = self.store.schedule_state(flow)
        return state.last_due if state else None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.writer = InboxWriter(self.store, on_commit=self._wake)
        for flow in self.hooked:
            self._thread(self._process, flow, name=f"flowyard-inbox-{flow.name}")
        self._thread(self._maintain, name="flowyard-maintenance")
        self.scheduler.start()
        self.alerts.start()
        self.ready = True

    def stop(self) -> None:
        """Stop taking work, finish what is going, keep what was accepted."""
        self.ready = False
        self.stopping.set()
        for wake in self.wakes.values():
            wake.set()
        self.scheduler.stop()
        for t in self._threads:
            t.join()
        if self.writer is not None:
            self.writer.close()
        self.alerts.stop()
        self.engine.close()

    def _thread(self, target: Callable[..., None], *args: Any, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _wake(self, flows: set[str]) -> None:
        for name in flows:
            wake = self.wakes.get(name)
            if wake is not None:
                wake.set()

    # -- work --------------------------------------------------------------------------------------
    def _process(self, flow: Flow) -> None:
        """Run the flow over its inbox whenever it holds events, until stopping."""
        wake = self.wakes[flow.name]
        while not self.stopping.is_set():
            wake.clear()
            try:
                result = self.engine.process_inbox(
                    flow,
                    stop=self.stopping,
                    wake=wake,
                    idle=self.options.idle,
                    max_seconds=self.options.run_seconds,
                )
            except LockHeld:
                self.stopping.wait(1.0)  # another run of the flow (or process) has it
                continue
            except Exception as exc:  # the state or the flow: say so, try again later
                self.say(f"flow {flow.name}: its inbox could not be processed: {exc}")
                self.stopping.wait(5.0)
                continue
            if result is None:
                wake.wait(1.0)  # also polls for events other processes accepted
            else:
                self._said(result)

    def _run_scheduled(self, flow: Flow, due: float) -> None:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(due))
        try:
            result = self.engine.run(flow)
        except LockHeld:
            self.metrics.schedule_skipped.labels(flow.name).inc()
            self.say(f"flow {flow.name}: slot {when} UTC skipped, its previous run is still going")
            return
        except Exception as exc:
            self.alerts.add("run_failed", flow.name, f"the scheduled run could not start: {exc}")
            self.say(f"flow {flow.name}: the scheduled run for {when} UTC could not start: {exc}")
            return
        self._said(result, f"scheduled for {when} UTC")

    def _said(self, result: RunResult, why: str = "") -> None:
        counts = " ".join(f"{k} {v}" for k, v in result.counts.items() if v or k == "read")
        self.say(
            f"{result.flow}: run {result.run_id} {result.status}{' (' + why + ')' if why else ''}"
            f": {counts}" + (f"; {result.message}" if result.message else "")
        )

    def _maintain(self) -> None:
        while not self.stopping.wait(self.options.maintenance_every):
            try:
                self.maintain()
            except Exception as exc:  # a busy or failing state: next time
                self.say(f"maintenance: {exc}")

    def maintain(self) -> None:
        """Prune done events past their keep time; alert on overdue flows."""
        for flow in self.hooked:
            keep = max(self.options.keep_events, flow.retention_s or 0.0)
            self.store.prune_inbox(keep, flow.name)
        expecting = [f for f in self.flows if f.expect_success_within_s]
        if expecting:
            health = {h.flow: h for h in self.store.flow_health()}
            self.alerts.check_overdue(
                (
                    f.name,
                    float(f.expect_success_within_s or 0),
                    health[f.name].last_success_at if f.name in health else None,
                    self.started_at,
                )
                for f in expecting
            )


def serve(engine: Engine, flows: list[Flow], options: ServeOptions) -> int:
    """Serve until SIGTERM or SIGINT; returns 0 after a graceful stop."""
    import uvicorn
    from prometheus_client import disable_created_metrics

    from engine.serve.app import build_app

    # the *_created series only double what a scrape shows (the client has no hint here)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    service = Service(engine, flows, options)
    app = build_app(service)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it stopped on, once it has stopped, to the handler
    # that was there before it: let that be one that lets the process end with 0
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        return 3  # the port could not be bound (uvicorn said why)
    return 0
