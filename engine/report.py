"""``flowyard report``: one self-contained HTML page a manager can read.

The page holds the figures of engine/stats.py with charts drawn here as inline SVG, the
top exception clusters (dead letters grouped by error signature) and the age of every
work queue. It loads nothing: no script, style sheet, font or image from anywhere (its
Content-Security-Policy forbids it), so it opens the same from a mail attachment, a file
share or a laptop on a train. A few lines of inline script only count the charts drawn
(``data-charts`` on the body) and any error, so a test in a real browser can tell the
page rendered.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from engine.stats import Cluster, FlowStats, Stats
from engine.work_items import QueueRow, age_text

_PALETTE = ("#2563eb", "#059669", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#65a30d")
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
_CHECK_SCRIPT = """
(function () {
  var errors = 0;
  window.addEventListener('error', function () { errors += 1; });
  window.addEventListener('load', function () {
    var drawn = 0;
    document.querySelectorAll('svg.chart').forEach(function (svg) {
      var box = svg.getBoundingClientRect();
      if (box.width > 0 && box.height > 0 && svg.querySelectorAll('rect,path,circle').length) {
        drawn += 1;
      }
    });
    document.body.setAttribute('data-charts', String(drawn));
    document.body.setAttribute('data-errors', String(errors));
  });
})();
"""
_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111827;
       margin: 0; background: #f3f4f6; }
header { background: #111827; color: #f9fafb; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #d1d5db; }
main { padding: 16px 32px 40px; max-width: 1200px; }
section { background: #fff; border-radius: 8px; padding: 16px 20px; margin: 16px 0;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 14px; margin: 16px 0 6px; color: #374151; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; }
.tile { border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.tile b { display: block; font-size: 20px; }
.tile span { color: #6b7280; font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 16px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e5e7eb;
         vertical-align: top; }
th { color: #374151; background: #f9fafb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
.bad { color: #b91c1c; font-weight: 600; }
.muted { color: #6b7280; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else age_text(seconds)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


# -- charts ---------------------------------------------------------------------------------------
def bar_chart(
    title: str, bars: Sequence[tuple[str, float]], *, unit: str = "", width: int = 520
) -> str:
    """Horizontal bars with their labels and values, as an inline SVG."""
    if not bars:
        return f'<p class="muted">{_e(title)}: nothing in this period.</p>'
    row, label_w, top = 22, 170, 26
    height = top + row * len(bars) + 8
    peak = max(value for _, value in bars) or 1
    parts = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="0" y="16" font-size="13" font-weight="600">{_e(title)}</text>',
    ]
    for i, (label, value) in enumerate(bars):
        y = top + i * row
        bar = max(1.0, (width - label_w - 70) * value / peak)
        color = _PALETTE[i % len(_PALETTE)]
        shown = label if len(label) <= 26 else label[:25] + "…"
        parts += [
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="12" text-anchor="end">'
            f"<title>{_e(label)}</title>{_e(shown)}</text>",
            f'<rect x="{label_w}" y="{y + 3}" width="{bar:.1f}" height="15" rx="2" '
            f'fill="{color}"/>',
            f'<text x="{label_w + bar + 5:.1f}" y="{y + 14}" font-size="12">'
            f"{_e(_number(value))}{_e(unit)}</text>",
        ]
    parts.append("</svg>")
    return "".join(parts)


def column_chart(title: str, series: list[dict[str, Any]], *, width: int = 1080) -> str:
    """Throughput over time: a column per bucket (records done), as an inline SVG."""
    if not series:
        return f'<p class="muted">{_e(title)}: nothing in this period.</p>'
    height, left, bottom, top = 190, 40, 28, 26
    plot_w, plot_h = width - left - 10, height - top - bottom
    peak = max(max(p["done"] for p in series), 1)
    step = plot_w / len(series)
    parts = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="0" y="16" font-size="13" font-weight="600">{_e(title)}</text>',
        f'<path d="M{left} {top} V{top + plot_h} H{width - 10}" stroke="#9ca3af" fill="none"/>',
        f'<text x="{left - 4}" y="{top + 10}" font-size="11" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="11" text-anchor="end">0</text>',
    ]
    labels_every = max(1, len(series) // 12)
    for i, point in enumerate(series):
        h = plot_h * point["done"] / peak
        x = left + i * step + step * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{max(step * 0.7, 1):.1f}" '
            f'height="{max(h, 0):.1f}" fill="{_PALETTE[0]}"><title>'
            f"{_e(_when(point['start']))}: {point['done']} done, {point['passes']} passes"
            "</title></rect>"
        )
        if i % labels_every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 10}" font-size="10">'
                f"{_e(time.strftime('%m-%d %H:%M', time.localtime(point['start'])))}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


# -- the page ---------------------------------------------------------------------------------
def _tiles(f: FlowStats, open_items: int) -> str:
    tiles = [
        (f.records, "records"),
        (f.outcomes.get("done", 0), "passes done"),
        (f"{f.exception_rate * 100:.1f} %", "exception rate"),
        (_duration(f.cycle_time_s.get("p50")), "cycle time p50"),
        (_duration(f.cycle_time_s.get("p95")), "cycle time p95"),
        (_duration(f.approval_cycle_s.get("p50")), "approval time p50"),
        (_duration(f.waiting_for_people_s.get("total")), "waiting for people"),
        (f.sla_breaches, "SLA breaches"),
        (open_items, "open items"),
    ]
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><b>{_e(value)}</b><span>{_e(label)}</span></div>'
            for value, label in tiles
        )
        + "</div>"
    )


def _flow_section(f: FlowStats, open_items: int, bucket: str) -> str:
    by_label = "".join(
        bar_chart(f"exceptions by {label}", list(values.items())[:10])
        for label, values in f.exceptions_by_label.items()
    )
    steps = "".join(
        f"<tr><td><code>{_e(s['step'])}</code></td><td class=num>{s['passes']}</td>"
        f"<td class=num>{s['exceptions']}</td></tr>"
        for s in f.steps
    )
    return (
        f'<section id="flow-{_e(f.flow)}"><h2>Flow {_e(f.flow)}</h2>'
        + _tiles(f, open_items)
        + "<h3>Throughput</h3>"
        + column_chart(f"records done per {bucket}", f.throughput)
        + '<div class="grid"><div>'
        + bar_chart("exceptions by reason category", list(f.exceptions_by_category.items())[:10])
        + "</div><div>"
        + (by_label or '<p class="muted">No labels: add <code>labels:</code> to the flow.</p>')
        + "</div></div>"
        + "<h3>Steps</h3><table><tr><th>step</th><th>passes</th><th>exceptions</th></tr>"
        + steps
        + "</table></section>"
    )


def _clusters_section(found: list[Cluster]) -> str:
    rows = "".join(
        f"<tr><td class=num>{c.count}</td><td class=num>{c.open}</td><td>{_e(c.flow)}</td>"
        f"<td><code>{_e(c.signature)}</code></td><td>{_e(_when(c.first_seen))}</td>"
        f"<td>{_e(_when(c.last_seen))}</td><td>dead letter {c.example['id']} "
        f"({_e(c.example['record_key'])}): {_e(c.example['message'][:160])}</td></tr>"
        for c in found
    )
    body = (
        "<table><tr><th>count</th><th>open</th><th>flow</th><th>signature</th>"
        f"<th>first seen</th><th>last seen</th><th>example</th></tr>{rows}</table>"
        if found
        else '<p class="muted">No dead letters in this period.</p>'
    )
    return f'<section id="clusters"><h2>Top exception clusters</h2>{body}</section>'


def _queues_section(rows: list[QueueRow]) -> str:
    chart = bar_chart(
        "oldest open item per queue (hours)",
        [(f"{r.queue} / {r.owner}", round(r.oldest_age_s / 3600, 1)) for r in rows[:12]],
        unit=" h",
    )
    table = "".join(
        f"<tr><td>{_e(r.queue)}</td><td>{_e(r.owner)}</td><td class=num>{r.depth}</td>"
        f"<td class=num>{_e(age_text(r.oldest_age_s))}</td>"
        f"<td class=num>{_e(age_text(r.median_age_s))}</td>"
        f"<td class=num{' bad' if r.overdue else ''}>{r.overdue}</td>"
        f"<td class=num>{r.breached}</td></tr>"
        for r in rows
    )
    body = (
        chart + "<table><tr><th>queue</th><th>owner</th><th>open</th><th>oldest</th><th>median</th>"
        f"<th>past due</th><th>escalated</th></tr>{table}</table>"
        if rows
        else '<p class="muted">No open items: every queue is empty.</p>'
    )
    return f'<section id="queues"><h2>Work queues now</h2>{body}</section>'


def render(
    stats: Stats,
    found: list[Cluster],
    queues: list[QueueRow],
    *,
    open_items: dict[str, int] | None = None,
    title: str = "flowyard: how the flows are doing",
) -> str:
    """The whole page as HTML text."""
    open_by_flow: dict[str, int] = dict(open_items or {})
    period = (
        f"{_when(stats.since)} to {_when(stats.until)}"
        if stats.since
        else f"everything kept, to {_when(stats.until)}"
    )
    flows = "".join(
        _flow_section(f, open_by_flow.get(f.flow, 0), stats.bucket) for f in stats.flows
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style>"
        f"<script>{_CHECK_SCRIPT}</script></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(period)} · generated {_e(_when(time.time()))}"
        " by flowyard report</p></header><main>"
        + _queues_section(queues)
        + _clusters_section(found)
        + (flows or '<section><p class="muted">No runs in this period.</p></section>')
        + "</main></body></html>\n"
    )
