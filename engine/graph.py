"""A picture of a flow: its source, steps, routes, branches and connections.

:func:`flow_graph` turns a loaded flow into nodes and edges once; :func:`mermaid` and
:func:`dot` write them as Mermaid (rendered by GitHub, GitLab and most Markdown viewers)
and Graphviz DOT. Control flow is drawn with solid arrows (a route's branches labelled
with their ``when``), calls to connections with dotted ones. Every ``fail`` step leads to
the dead-letter queue, every ``filter`` to "filtered", every review or reconcile step to
the review queue, and the last step to "done".

:func:`embed` keeps a picture inside a Markdown file up to date, between the markers
``<!-- flowyard graph: NAME -->`` and ``<!-- /flowyard graph -->``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.model import (
    ApproveStep,
    CallStep,
    FailStep,
    FilterStep,
    Flow,
    ForeachStep,
    MapStep,
    ReconcileStep,
    ReviewStep,
    RouteStep,
    SetStep,
    Step,
    ValidateStep,
)
from engine.yamlpos import load_yaml

FORMATS = ("mermaid", "dot")
_LABEL_MAX = 48  # characters of a condition shown on an edge

DONE, DEAD, FILTERED, REVIEW = "t_done", "t_dead_letter", "t_filtered", "t_review"
_TERMINALS = {
    DONE: "done",
    DEAD: "dead-letter queue",
    FILTERED: "filtered",
    REVIEW: "review queue",
}


@dataclass
class Node:
    """A box in the picture: ``kind`` chooses its shape."""

    id: str
    label: str
    kind: str  # source, step kind (map, route, send ...), connection, terminal


@dataclass
class Edge:
    """An arrow; ``call`` arrows (to connections) are dotted."""

    start: str
    end: str
    label: str = ""
    call: bool = False


@dataclass
class Graph:
    """The nodes and edges of one flow, with the foreach bodies as groups."""

    name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    groups: list[tuple[str, str, list[str]]] = field(default_factory=list)  # id, label, nodes

    def node(self, id: str, label: str, kind: str) -> str:
        self.nodes.setdefault(id, Node(id, label, kind))
        return id

    def edge(self, start: str, end: str, label: str = "", call: bool = False) -> None:
        edge = Edge(start, end, label, call)
        if edge not in self.edges:
            self.edges.append(edge)


def _id(prefix: str, name: str) -> str:
    return prefix + re.sub(r"\W", "_", name)


def _short(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _LABEL_MAX else text[: _LABEL_MAX - 1] + "…"


def _raw_steps(flow: Flow) -> list[Any]:
    """The flow's steps as written (for the texts of conditions), [] if unreadable."""
    try:
        data, _ = load_yaml(Path(flow.file).read_text(encoding="utf-8"), flow.file)
    except OSError:
        return []
    steps = data.get("steps") if isinstance(data, dict) else None
    return steps if isinstance(steps, list) else []


def _at(raw: list[Any], i: int) -> dict[str, Any]:
    item = raw[i] if i < len(raw) else None
    return item if isinstance(item, dict) else {}


def _detail(step: Step) -> str:
    """What a step's box says under its name."""
    if isinstance(step, MapStep):
        return f"map {step.mapping_name}" + (f" into {step.into}" if step.into else "")
    if isinstance(step, ValidateStep):
        return f"validate {step.schema_name}"
    if isinstance(step, SetStep):
        return "set " + ", ".join(step.fields)
    if isinstance(step, ReviewStep | ApproveStep | ReconcileStep):
        return f"{step.kind} ({step.queue})"
    if isinstance(step, ForeachStep):
        return f"foreach {step.as_name}"
    if isinstance(step, CallStep):
        return f"{step.kind} via {step.connection}"
    if isinstance(step, FilterStep | RouteStep | FailStep):
        return step.kind
    raise TypeError(f"no picture for a {step.kind} step")


class _Builder:
    def __init__(self, flow: Flow):
        self.flow = flow
        self.graph = Graph(flow.name)

    def build(self) -> Graph:
        flow = self.flow
        source = flow.source
        conn = flow.connections.get(source.connection)
        connector = conn.connector if conn else ("webhook" if source.webhook else "?")
        start = self.graph.node("source", f"source: {connector}", "source")
        ends = self.steps(flow.steps, _raw_steps(flow), [(start, "")])
        self.close(ends, self.graph.node(DONE, _TERMINALS[DONE], "terminal"))
        return self.graph

    def close(self, ends: list[tuple[str, str]], target: str) -> None:
        for node, label in ends:
            self.graph.edge(node, target, label)

    def connection(self, name: str) -> str:
        conn = self.flow.connections.get(name)
        label = f"{name}: {conn.connector}" if conn else name
        return self.graph.node(_id("c_", name), label, "connection")

    def terminal(self, id: str) -> str:
        return self.graph.node(id, _TERMINALS[id], "terminal")

    def steps(
        self, steps: list[Step], raw: list[Any], entries: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Draw ``steps`` after ``entries`` (node, edge label); returns the loose ends."""
        for i, step in enumerate(steps):
            node = self.step(step)
            self.close(entries, node)
            entries = self.after(step, node, _at(raw, i))
            if not entries:
                break
        return entries

    def step(self, step: Step) -> str:
        detail = _detail(step)
        return self.graph.node(_id("s_", step.name), f"{step.name}\n{detail}", step.kind)

    def after(self, step: Step, node: str, raw: dict[str, Any]) -> list[tuple[str, str]]:
        """Draw what follows from ``step`` inside it; the loose ends that go on."""
        if isinstance(step, FailStep):
            self.graph.edge(node, self.terminal(DEAD))
            return []
        if isinstance(step, ApproveStep):
            # it waits for a person; approved it goes on, rejected it takes on_reject
            self.graph.edge(node, self.terminal(REVIEW), "waits")
            spec: dict[str, Any] = raw["approve"] if isinstance(raw.get("approve"), dict) else {}
            rejected = self.steps(step.on_reject, spec.get("on_reject") or [], [(node, "rejected")])
            if not step.on_reject:
                rejected = [(node, "rejected")]
            self.close(rejected, self.terminal(DONE))
            return [(node, "approved")]
        if isinstance(step, ReviewStep):
            self.graph.edge(node, self.terminal(REVIEW))
            return []
        if isinstance(step, ReconcileStep):
            self.graph.edge(node, self.terminal(REVIEW), "differs")
            return [(node, "adds up")]
        if isinstance(step, FilterStep):
            self.graph.edge(node, self.terminal(FILTERED), "dropped")
            condition = raw.get("filter")
            if str(condition).strip().lower() == "false":
                return []
            return [(node, _short(condition) if condition is not None else "kept")]
        if isinstance(step, CallStep):
            target = self.connection(step.connection)
            self.graph.edge(node, target, "send" if step.kind == "send" else "lookup", call=True)
            if step.compensate_connection is not None:  # how the send is undone
                undo = self.connection(step.compensate_connection)
                self.graph.edge(node, undo, "undo (compensate)", call=True)
            return [(node, "")]
        if isinstance(step, RouteStep):
            return self.route(step, node, raw.get("route"))
        if isinstance(step, ForeachStep):
            given = raw.get("foreach")
            spec = given if isinstance(given, dict) else {}
            before = set(self.graph.nodes)
            self.steps(step.steps, spec.get("steps") or [], [(node, f"each {step.as_name}")])
            body = [n for n in self.graph.nodes if n not in before and n.startswith("s_")]
            items = _short(spec.get("items", "")).strip("{} ")
            self.graph.groups.append((_id("g_", step.name), f"for each {items}", body))
            return [(node, "after the items")]
        return [(node, "")]

    def route(self, step: RouteStep, node: str, raw: Any) -> list[tuple[str, str]]:
        raw = raw if isinstance(raw, list) else []
        ends: list[tuple[str, str]] = []
        for i, branch in enumerate(step.branches):
            written = _at(raw, i)
            if branch.condition is None:
                label, body = "otherwise", written.get("otherwise")
            else:
                label, body = _short(written.get("when", f"branch {i}")), written.get("steps")
            ends += self.steps(
                branch.steps, body if isinstance(body, list) else [], [(node, label)]
            )
        if all(b.condition is not None for b in step.branches):
            ends.append((node, "no branch"))
        return ends


def flow_graph(flow: Flow) -> Graph:
    """The nodes and edges of ``flow``."""
    return _Builder(flow).build()


# -- Mermaid --------------------------------------------------------------------------------
_MERMAID_SHAPES = {
    "source": ('[("', '")]'),
    "connection": ('[("', '")]'),
    "terminal": ('(["', '"])'),
    "route": ('{"', '"}'),
    "filter": ('{{"', '"}}'),
    "send": ('[["', '"]]'),
    "enrich": ('[/"', '"/]'),
    "fail": ('>"', '"]'),
    "review": ('[\\"', '"/]'),
    "approve": ('[\\"', '"/]'),
    "reconcile": ('[\\"', '"/]'),
}


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def mermaid(graph: Graph) -> str:
    """The graph as a Mermaid flowchart, top to bottom."""
    lines = ["flowchart TD"]
    grouped = {n for _, _, nodes in graph.groups for n in nodes}
    for node in graph.nodes.values():
        if node.id not in grouped:
            lines.append("    " + _mermaid_node(node))
    for group, label, nodes in graph.groups:
        lines.append(f'    subgraph {group}["{_mermaid_text(label)}"]')
        lines += ["        " + _mermaid_node(graph.nodes[n]) for n in nodes]
        lines.append("    end")
    for edge in graph.edges:
        arrow = "-.->" if edge.call else "-->"
        if edge.label:
            text = _mermaid_text(edge.label)
            arrow = f'-. "{text}" .->' if edge.call else f'-- "{text}" -->'
        lines.append(f"    {edge.start} {arrow} {edge.end}")
    return "\n".join(lines) + "\n"


def _mermaid_node(node: Node) -> str:
    left, right = _MERMAID_SHAPES.get(node.kind, ('["', '"]'))
    return f"{node.id}{left}{_mermaid_text(node.label)}{right}"


# -- Graphviz DOT ---------------------------------------------------------------------------
_DOT_SHAPES = {
    "source": "cylinder",
    "connection": "cylinder",
    "terminal": "oval",
    "route": "diamond",
    "filter": "hexagon",
    "send": "box3d",
    "enrich": "parallelogram",
    "fail": "cds",
    "review": "trapezium",
    "approve": "trapezium",
    "reconcile": "trapezium",
}


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def dot(graph: Graph) -> str:
    """The graph in Graphviz DOT (``dot -Tsvg``)."""
    lines = [f'digraph "{_dot_text(graph.name)}" {{', "    node [shape=box, fontsize=10];"]
    grouped = {n for _, _, nodes in graph.groups for n in nodes}
    for node in graph.nodes.values():
        if node.id not in grouped:
            lines.append("    " + _dot_node(node))
    for group, label, nodes in graph.groups:
        lines.append(f'    subgraph "cluster_{group}" {{')
        lines.append(f'        label="{_dot_text(label)}";')
        lines += ["        " + _dot_node(graph.nodes[n]) for n in nodes]
        lines.append("    }")
    for edge in graph.edges:
        attrs = []
        if edge.label:
            attrs.append(f'label="{_dot_text(edge.label)}"')
        if edge.call:
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {edge.start} -> {edge.end}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(node: Node) -> str:
    return (
        f'{node.id} [label="{_dot_text(node.label)}", shape={_DOT_SHAPES.get(node.kind, "box")}];'
    )


def render(flow: Flow, format: str = "mermaid") -> str:
    """``flow`` as ``mermaid`` or ``dot`` text."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    graph = flow_graph(flow)
    return mermaid(graph) if format == "mermaid" else dot(graph)


# -- pictures in Markdown -------------------------------------------------------------------
def markers(name: str) -> tuple[str, str]:
    """The lines that enclose the picture of flow ``name`` in a Markdown file."""
    return f"<!-- flowyard graph: {name} -->", "<!-- /flowyard graph -->"


def embed(markdown: str, name: str, picture: str) -> str:
    """``markdown`` with the Mermaid block between the markers of ``name`` replaced by
    ``picture``; raises :class:`LookupError` when the markers are not there."""
    begin, end = markers(name)
    start = markdown.find(begin)
    stop = markdown.find(end, start + len(begin)) if start >= 0 else -1
    if start < 0 or stop < 0:
        raise LookupError(
            f"no picture of flow {name!r} to replace: put the lines {begin} and {end} "
            "where it belongs"
        )
    block = f"{begin}\n```mermaid\n{picture}```\n"
    return markdown[:start] + block + markdown[stop:]


def embedded(markdown: str, name: str) -> str | None:
    """The Mermaid text between the markers of ``name`` in ``markdown``, or None."""
    begin, end = markers(name)
    start = markdown.find(begin)
    stop = markdown.find(end, start + len(begin)) if start >= 0 else -1
    if start < 0 or stop < 0:
        return None
    block = markdown[start + len(begin) : stop].strip("\n")
    if block.startswith("```mermaid\n") and block.endswith("```"):
        return block[len("```mermaid\n") : -3]
    return block
