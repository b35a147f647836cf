"""Process intelligence: how each flow and step performs, computed from the state store.

Everything comes from what runs already keep: the trace of each record's pass (when it
started, when it ended, its outcome, the steps it took, the flow's ``labels:`` of the
record) and the work items (dead letters, review items, approvals with their owners,
decisions and SLA breaches). Nothing is sampled: every figure can be checked by hand
against ``flowyard runs show`` and ``flowyard queue list``.

Definitions (docs/governance.md says the same):

- **records**: distinct record keys with a trace in the window; **throughput**: records
  that reached ``done`` per hour (a window up to two days) or per day;
- **cycle time**: for each record that reached ``done`` in the window, from the start of
  its first pass in the window (its arrival from the source) to the end of the pass that
  reached ``done``: waits for people included;
- **waiting for people**: for each review item or approval decided in the window, from
  when it was created to the decision; **approval cycle time** the same for approvals;
- **exceptions**: work items created in the window, by reason category, step, kind and
  each label; the **exception rate** is exceptions per record;
- **SLA breaches**: items created in the window that went past due and were escalated;
- percentiles are nearest-rank: p50 of n sorted values is the value at rank ceil(0.5 n).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.store import StateStore, Trace, WorkItem

HOUR, DAY = 3600.0, 86400.0


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile ``p`` (0-100) of ``values``, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _waits(items: Iterable[WorkItem]) -> list[float]:
    """From creation to decision, for each item a person decided."""
    return [i.decided_at - i.created_at for i in items if i.decided_at is not None]


def summary(values: list[float]) -> dict[str, Any]:
    """Count, p50, p95 and max of durations in seconds (rounded to 0.1 s)."""

    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {
        "count": len(values),
        "p50": rounded(percentile(values, 50)),
        "p95": rounded(percentile(values, 95)),
        "max": rounded(max(values) if values else None),
        "total": round(sum(values), 1),
    }


# -- exception clusters -------------------------------------------------------------------------
_MASKS = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b\d{8}T\d{6}-[0-9a-f]{6}\b"), "<run>"),
    (re.compile(r"#[0-9a-f]{12}\b"), "#<hash>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<hex>"),
    (re.compile(r"[-+]?\d+(?:[.,]\d+)*"), "<n>"),
)


def signature(error_class: str | None, message: str, step: str | None = None) -> str:
    """An error's signature: its class, step and message with ids and numbers masked, so
    that the same failure of different records falls in one cluster."""
    text = " ".join((message or "").split())[:300]
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return f"{error_class or 'Error'} at {step or '?'}: {text}"


@dataclass
class Cluster:
    """Dead letters that failed the same way: count, first and last seen, one example."""

    signature: str
    flow: str
    step: str | None
    count: int
    open: int
    first_seen: float
    last_seen: float
    example: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def clusters(letters: Iterable[WorkItem], top: int = 10) -> list[Cluster]:
    """Dead letters grouped by :func:`signature`, the largest cluster first."""
    groups: dict[tuple[str, str], list[WorkItem]] = defaultdict(list)
    for item in letters:
        groups[(item.flow, signature(item.error_class, item.reason, item.step))].append(item)
    out = []
    for (flow, sig), items in groups.items():
        latest = max(items, key=lambda i: i.at)
        out.append(
            Cluster(
                signature=sig,
                flow=flow,
                step=latest.step,
                count=len(items),
                open=sum(1 for i in items if i.status == "open"),
                first_seen=min(i.created_at for i in items),
                last_seen=max(i.at for i in items),
                example={
                    "id": latest.id,
                    "record_key": latest.record_key,
                    "message": latest.reason[:500],
                },
            )
        )
    out.sort(key=lambda c: (-c.count, -c.last_seen))
    return out[:top]


# -- the figures ------------------------------------------------------------------------------
@dataclass
class FlowStats:
    """One flow's figures over the window (see the module's definitions)."""

    flow: str
    records: int = 0
    passes: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    cycle_time_s: dict[str, Any] = field(default_factory=dict)
    waiting_for_people_s: dict[str, Any] = field(default_factory=dict)
    approval_cycle_s: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    exceptions: int = 0
    exception_rate: float = 0.0
    exceptions_by_category: dict[str, int] = field(default_factory=dict)
    exceptions_by_step: dict[str, int] = field(default_factory=dict)
    exceptions_by_kind: dict[str, int] = field(default_factory=dict)
    exceptions_by_label: dict[str, dict[str, int]] = field(default_factory=dict)
    sla_breaches: int = 0
    breaches_by_queue: dict[str, int] = field(default_factory=dict)
    approvals: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Stats:
    """The figures of every flow with a trace or a work item in the window."""

    since: float | None
    until: float
    bucket: str
    flows: list[FlowStats]

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "bucket": self.bucket,
            "flows": [f.to_dict() for f in self.flows],
        }


def _bucket_of(since: float | None, until: float, traces: list[Trace]) -> str:
    start = since if since is not None else min((t.at for t in traces), default=until)
    return "hour" if until - start <= 2 * DAY else "day"


def _bucket_start(ts: float, bucket: str) -> float:
    size = HOUR if bucket == "hour" else DAY
    return math.floor(ts / size) * size


def compute(
    traces: Iterable[Trace],
    items: Iterable[WorkItem],
    *,
    since: float | None = None,
    until: float | None = None,
    bucket: str | None = None,
) -> Stats:
    """The stats of ``traces`` and ``items`` (both already limited to the window)."""
    until = time.time() if until is None else until
    traces = sorted(traces, key=lambda t: (t.at, t.started_at or t.at))
    items = list(items)
    chosen = bucket or _bucket_of(since, until, traces)
    by_flow: dict[str, list[Trace]] = defaultdict(list)
    for trace in traces:
        by_flow[trace.flow].append(trace)
    items_by_flow: dict[str, list[WorkItem]] = defaultdict(list)
    for item in items:
        items_by_flow[item.flow].append(item)
    flows = [
        _flow_stats(name, by_flow.get(name, []), items_by_flow.get(name, []), chosen, since, until)
        for name in sorted(set(by_flow) | set(items_by_flow))
    ]
    return Stats(since, until, chosen, flows)


def _flow_stats(
    name: str,
    traces: list[Trace],
    items: list[WorkItem],
    bucket: str,
    since: float | None,
    until: float,
) -> FlowStats:
    stats = FlowStats(name, passes=len(traces))
    keys = {t.record_key for t in traces}
    stats.records = len(keys)
    stats.outcomes = dict(Counter(str(t.outcome) for t in traces))

    # throughput: records that reached done, per bucket, and every pass per bucket
    done_at: dict[str | None, float] = {}
    arrived: dict[str | None, float] = {}
    for t in traces:
        arrived.setdefault(t.record_key, t.started_at if t.started_at is not None else t.at)
        if t.outcome == "done" and t.record_key not in done_at:
            done_at[t.record_key] = t.at
    buckets: dict[float, Counter[str]] = defaultdict(Counter)
    for t in traces:
        buckets[_bucket_start(t.at, bucket)]["passes"] += 1
    for at in done_at.values():
        buckets[_bucket_start(at, bucket)]["done"] += 1
    start = _bucket_start(since if since is not None else min(buckets, default=until), bucket)
    step_size = HOUR if bucket == "hour" else DAY
    cursor = start
    series: list[dict[str, Any]] = []
    while cursor <= until and len(series) < 1000:
        counts = buckets.get(cursor, Counter())
        series.append({"start": cursor, "done": counts["done"], "passes": counts["passes"]})
        cursor += step_size
    stats.throughput = series

    stats.cycle_time_s = summary([done_at[k] - arrived[k] for k in done_at])

    # steps: records through each, exceptions at each
    through: Counter[str] = Counter()
    for t in traces:
        for name_ in {line[0] for line in t.steps or [] if line}:
            through[name_] += 1
    stats.exceptions_by_step = dict(Counter(i.step or "source" for i in items))
    stats.steps = [
        {"step": s, "passes": n, "exceptions": stats.exceptions_by_step.get(s, 0)}
        for s, n in sorted(through.items(), key=lambda kv: -kv[1])
    ]

    # exceptions and people
    stats.exceptions = len(items)
    stats.exception_rate = round(len(items) / stats.records, 4) if stats.records else 0.0
    stats.exceptions_by_category = dict(Counter(i.category or "?" for i in items).most_common())
    stats.exceptions_by_kind = dict(Counter(i.kind for i in items))
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for item in items:
        for label, value in (item.labels or {}).items():
            by_label[label][str(value) if value is not None else "(none)"] += 1
    stats.exceptions_by_label = {k: dict(v.most_common()) for k, v in by_label.items()}
    breached = [i for i in items if i.breached]
    stats.sla_breaches = len(breached)
    stats.breaches_by_queue = dict(Counter(i.queue for i in breached))
    people = [i for i in items if i.kind in ("review", "approval")]
    stats.waiting_for_people_s = summary(_waits(people))
    stats.approval_cycle_s = summary(_waits(i for i in people if i.kind == "approval"))
    stats.approvals = dict(Counter(i.status for i in items if i.kind == "approval"))
    return stats


def collect(
    store: StateStore,
    *,
    since: float | None = None,
    until: float | None = None,
    flow: str | None = None,
    bucket: str | None = None,
) -> Stats:
    """The stats of the store's history since ``since`` (of one flow, or all)."""
    traces = [t for t in store.traces_since(since, flow) if until is None or t.at <= until]
    items = [
        i
        for i in store.work_items(flow=flow, status=None, since=since)
        if until is None or i.created_at <= until
    ]
    return compute(traces, items, since=since, until=until, bucket=bucket)
