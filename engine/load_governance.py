"""The flow keys that serve people: ``queues:`` (owners, SLAs, escalation) and ``labels:``
(what stats group records by), checked and built at load time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine._sandbox import FlowyardEnvironment
from engine.flow_schema import parse_duration
from engine.load_findings import Built, FlowText, Reporter
from engine.load_templates import STEP_NAMES
from engine.model import QueuePolicy, Rendered


def build_queues(data: dict[str, Any]) -> dict[str, QueuePolicy]:
    """``queues:`` as policies by queue name (the schema checked their shape)."""
    given = data.get("queues")
    queues: dict[str, QueuePolicy] = {}
    for name, spec in given.items() if isinstance(given, dict) else ():
        if not isinstance(spec, dict):
            continue
        due = spec.get("due")
        try:
            due_s = parse_duration(due) if isinstance(due, str) else None
        except ValueError:
            due_s = None  # the schema said so
        escalate_to = spec.get("escalate_to")
        queues[str(name)] = QueuePolicy(
            name=str(name),
            owner=spec.get("owner") if isinstance(spec.get("owner"), str) else None,
            due_s=due_s,
            escalate_to=dict(escalate_to) if isinstance(escalate_to, dict) else None,
        )
    return queues


def build_labels(
    text: FlowText, env: FlowyardEnvironment, refused: Iterable[str]
) -> Built[dict[str, Rendered]]:
    """``labels:`` compiled: each a template on the record (and vars, meta, run)."""
    reporter = Reporter(text, env, refused)
    templates = reporter.templates
    given = text.data.get("labels")
    labels: dict[str, Any] = {}
    for name, value in given.items() if isinstance(given, dict) else ():
        path = ["labels", name]
        if templates.check_field_name(name, path):
            labels[str(name)] = templates.template(value, path, STEP_NAMES)
    return reporter.built(labels)
