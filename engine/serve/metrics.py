"""Metrics in the Prometheus text format, with the official client library.

Two kinds of figures:

- **counted** in the serving process from the run log's events (a run-log listener):
  records by flow and outcome, runs by flow and status, run and send latency histograms,
  webhook deliveries by flow and outcome and the time to acknowledge them, schedule slots
  skipped. They start at 0 when the process starts, as Prometheus counters do.
- **read from the state** at each scrape (:class:`StateCollector`, one query per kind of
  fact, engine/store ``flow_health``): dead letters and review items open, inbox depth,
  the time of each flow's last run and last completed run. Those are true whichever
  process ran the flow, so ``flowyard run --metrics-file`` writes the same gauges for
  cron users (node_exporter's textfile collector reads the file).

Every metric lives in the :class:`Metrics`' own registry, never the client's global one,
so a partner's application that exposes its own metrics keeps them apart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.store import FlowHealth, StateStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# seconds: a send to a local target takes milliseconds, a slow ERP seconds
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class StateCollector(Collector):
    """Gauges read from the state at each scrape; ``flows`` are named even before they
    have any fact (a flow that never ran shows no last-success time, and 0 open items)."""

    def __init__(
        self,
        open_store: Callable[[], AbstractContextManager[StateStore]],
        flows: Iterable[str] = (),
    ):
        self.open_store = open_store
        self.flows = list(flows)

    def health(self) -> list[FlowHealth]:
        with self.open_store() as store:
            found = {h.flow: h for h in store.flow_health()}
        for name in self.flows:
            found.setdefault(name, FlowHealth(name))
        return [found[name] for name in sorted(found)]

    def collect(self) -> Iterator[Metric]:
        health = self.health()
        letters = GaugeMetricFamily(
            "flowyard_dead_letters_open", "Dead letters waiting for a replay.", labels=["flow"]
        )
        reviews = GaugeMetricFamily(
            "flowyard_review_items_open",
            "Records held for a person, by queue.",
            labels=["flow", "queue"],
        )
        depth = GaugeMetricFamily(
            "flowyard_inbox_depth", "Webhook events kept and not yet processed.", labels=["flow"]
        )
        last_run = GaugeMetricFamily(
            "flowyard_last_run_timestamp_seconds",
            "When the flow's last run started.",
            labels=["flow"],
        )
        last_success = GaugeMetricFamily(
            "flowyard_last_success_timestamp_seconds",
            "When the flow's last completed run ended (every record final: ok, some "
            "dead-lettered or some held for review).",
            labels=["flow"],
        )
        failed = GaugeMetricFamily(
            "flowyard_last_run_failed",
            "1 when the flow's last run failed or stopped, else 0.",
            labels=["flow"],
        )
        for h in health:
            letters.add_metric([h.flow], h.dead_letters_open)
            for queue, n in sorted(h.reviews_open.items()):
                reviews.add_metric([h.flow, queue], n)
            depth.add_metric([h.flow], h.inbox_pending)
            if h.last_run_at is not None:
                last_run.add_metric([h.flow], h.last_run_at)
                failed.add_metric([h.flow], 1 if h.last_status in ("failed", "stopped") else 0)
            if h.last_success_at is not None:
                last_success.add_metric([h.flow], h.last_success_at)
        yield from (letters, reviews, depth, last_run, last_success, failed)


class Metrics:
    """The serving process's metrics: counters fed by :meth:`listener` (a run-log
    listener) and by intake, plus the state's gauges (:class:`StateCollector`)."""

    def __init__(
        self,
        open_store: Callable[[], AbstractContextManager[StateStore]],
        flows: Iterable[str] = (),
    ):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.records = Counter(
            "flowyard_records", "Records that reached an outcome.", ["flow", "outcome"], registry=r
        )
        self.runs = Counter(
            "flowyard_runs", "Runs that ended, by status.", ["flow", "status"], registry=r
        )
        self.run_seconds = Histogram(
            "flowyard_run_duration_seconds",
            "How long runs took.",
            ["flow"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.send_seconds = Histogram(
            "flowyard_send_duration_seconds",
            "One request of a send or enrich step (each attempt).",
            ["flow", "step"],
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.webhooks = Counter(
            "flowyard_webhooks",
            "Webhook deliveries by outcome: accepted, duplicate, ignored, unauthorized, "
            "too_large, throttled, failed.",
            ["flow", "outcome"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            "flowyard_webhook_ack_seconds",
            "From a delivery's body read to its answer (the durable commit included).",
            ["flow"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.schedule_skipped = Counter(
            "flowyard_schedule_skipped",
            "Schedule slots skipped because the flow's previous run was still going.",
            ["flow"],
            registry=r,
        )
        self.up = Gauge(
            "flowyard_serve_start_time_seconds", "When this process started.", registry=r
        )
        self.up.set_to_current_time()
        self.state = StateCollector(open_store, flows)
        r.register(self.state)
        self._lock = threading.Lock()

    def listener(self, event: dict[str, Any]) -> None:
        """Count what a run-log event says (every run the process makes reports here)."""
        name, flow = event.get("event"), str(event.get("flow"))
        if name == "record" and event.get("outcome"):
            self.records.labels(flow, event["outcome"]).inc()
        elif name == "attempt" and event.get("duration_ms") is not None:
            self.send_seconds.labels(flow, str(event.get("step"))).observe(
                event["duration_ms"] / 1000
            )
        elif name == "run_finished":
            self.runs.labels(flow, str(event.get("outcome"))).inc()
            if event.get("duration_ms") is not None:
                self.run_seconds.labels(flow).observe(event["duration_ms"] / 1000)

    def webhook(self, flow: str, outcome: str, seconds: float) -> None:
        """Count one delivery and the time it took to answer."""
        self.webhooks.labels(flow, outcome).inc()
        if outcome in ("accepted", "duplicate"):
            self.ack_seconds.labels(flow).observe(seconds)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)


def write_textfile(
    path: str | os.PathLike[str],
    open_store: Callable[[], AbstractContextManager[StateStore]],
    run: Any,
) -> None:
    """Write the state's gauges and the figures of one run (``run``: a RunResult) to
    ``path`` for node_exporter's textfile collector; written beside it and renamed, so
    the collector never reads half a file."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StateCollector(open_store, [run.flow]))
    records = Gauge(
        "flowyard_run_records",
        "Records of the flow's last run, by outcome.",
        ["flow", "outcome"],
        registry=registry,
    )
    for outcome, n in run.counts.items():
        records.labels(run.flow, outcome).set(n)
    Gauge(
        "flowyard_run_duration_seconds_last",
        "How long the flow's last run took.",
        ["flow"],
        registry=registry,
    ).labels(run.flow).set(run.duration_s)
    Gauge(
        "flowyard_run_exit_code",
        "The exit code of the flow's last run.",
        ["flow"],
        registry=registry,
    ).labels(run.flow).set(run.exit_code)
    from prometheus_client import disable_created_metrics, write_to_textfile

    disable_created_metrics()  # type: ignore[no-untyped-call]  # the client has no hint here
    write_to_textfile(str(path), registry)
