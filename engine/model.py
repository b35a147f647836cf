"""The compiled flow: what the loader produces and the runner executes.

Every template, condition, mapping and schema here is already compiled; nothing
in a ``Flow`` can fail to compile later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Problem

Rendered = Callable[[dict[str, Any]], Any]


@dataclass
class RetryPolicy:
    """Attempts in all (the first included), exponential backoff with optional jitter, a cap."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: bool = True


@dataclass
class BreakerPolicy:
    """Open after ``failures`` consecutive transient failures; probe after ``cooldown`` s."""

    failures: int = 5
    cooldown: float = 30.0
    on_open: str = "stop"  # or "wait"


@dataclass
class Connection:
    """A named connector configuration shared by the source and the steps."""

    name: str
    connector: str
    options: dict[str, Any]  # raw, may hold ${env:NAME} and {{ vars.x }}
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit: float | None = None  # requests per second
    breaker: BreakerPolicy | None = None


@dataclass
class Webhook:
    """A source whose records a platform pushes: ``flowyard serve`` takes signed deliveries
    at ``path`` into the flow's inbox (engine/serve/)."""

    path: str
    scheme: str  # shopify | woocommerce | standard (engine/serve/signatures.py)
    secret: str  # as written: ${env:NAME} or ${file:PATH}, resolved when serving starts
    topics: list[str] | None = None  # None: every topic
    tolerance_s: float = 300.0  # standard: how far a delivery's timestamp may be from now
    max_body: int = 1_048_576  # bytes


@dataclass
class Source:
    """Where records come from: a connection, its read options and the record key template;
    or, for records pushed to flowyard, a webhook (then ``connection`` is empty)."""

    connection: str
    options: dict[str, Any]
    key: Rendered | None  # None: the record's ``id`` field
    webhook: Webhook | None = None


@dataclass
class Schedule:
    """When ``flowyard serve`` runs a flow: a cron expression read in ``timezone``, and what
    it does about slots missed while nothing served (``run_once`` or ``skip``)."""

    cron: str
    timezone: str = "UTC"
    missed: str = "run_once"


@dataclass
class Step:
    """Base of every step: a unique name, its kind and where it is in the flow file."""

    name: str
    kind: str
    path: str
    line: int | None


@dataclass
class MapStep(Step):
    mapping: Callable[[Any, dict[str, Any]], Any] = None  # type: ignore[assignment]
    mapping_name: str = ""
    into: str | None = None  # the field that receives the output; None: replace the record


@dataclass
class ValidateStep(Step):
    validator: Callable[[Any], None] = None  # type: ignore[assignment]
    schema_name: str = ""


@dataclass
class FilterStep(Step):
    condition: Callable[[dict[str, Any]], bool] = None  # type: ignore[assignment]


@dataclass
class SetStep(Step):
    fields: dict[str, Rendered] = field(default_factory=dict)


@dataclass
class Branch:
    condition: Callable[[dict[str, Any]], bool] | None  # None: otherwise
    steps: list[Step]


@dataclass
class RouteStep(Step):
    branches: list[Branch] = field(default_factory=list)


@dataclass
class ForeachStep(Step):
    items: Rendered = None  # type: ignore[assignment]
    as_name: str = "item"
    key: Rendered | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class FailStep(Step):
    """Dead-letter the record with a reason rendered from the record."""

    message: Rendered = None  # type: ignore[assignment]


@dataclass
class ReviewStep(Step):
    """Hold the record for a person: it ends in ``review`` with a reason and figures.

    ``owner``, ``category`` and ``due_s`` (seconds) override the queue's
    (:class:`QueuePolicy`); the category defaults to the step's name.
    """

    queue: str = "review"
    reason: Rendered = None  # type: ignore[assignment]
    figures: dict[str, Rendered] = field(default_factory=dict)
    owner: str | None = None
    category: str | None = None
    due_s: float | None = None
    escalate_to: dict[str, str] | None = None


@dataclass
class ApproveStep(ReviewStep):
    """Stop the record until a person approves it: approved, it resumes at the next step;
    rejected, the compensations of its earlier sends run and then ``on_reject``.

    An approval covers the figures the person saw: a record that comes again with other
    figures needs another approval.
    """

    on_reject: list[Step] = field(default_factory=list)


@dataclass
class QueuePolicy:
    """What a flow says of one of its work queues: who owns it, how soon an item is due,
    and who takes it over past that (``escalate_to``: ``queue`` and/or ``owner``)."""

    name: str
    owner: str | None = None
    due_s: float | None = None
    escalate_to: dict[str, str] | None = None


@dataclass
class Amount:
    """One amount a ``reconcile`` step compares: what the source stated, what the target
    reported, and the tolerance (None: the step's)."""

    name: str
    expected: Rendered
    actual: Rendered
    tolerance: Rendered | None = None


@dataclass
class ReconcileStep(Step):
    """Compare amounts the source stated with those a target reported; a difference beyond
    the tolerance sends the record to review.

    ``amounts`` is either the amounts written in the flow or one template that gives them
    per record (a mapping name -> {expected, actual[, tolerance]}, or a list of such
    objects with a ``name``).
    """

    queue: str = "review"
    tolerance: Rendered | None = None  # renders a decimal (None: 0)
    amounts: list[Amount] | Rendered = field(default_factory=list)
    reason: Rendered | None = None  # an optional lead-in of the reason, e.g. the order


@dataclass
class CallStep(Step):
    """A ``send`` (side effect, idempotent) or an ``enrich`` (lookup) through a connection."""

    connection: str = ""
    options: Rendered = None  # type: ignore[assignment]  # renders the call options dict
    idempotency_key: Rendered | None = None
    on_change: str = "conflict"
    save_as: str | None = None
    retry: RetryPolicy | None = None
    # how to undo the send: call options of ``compensate_connection`` rendered with the
    # record as it was right after the send (engine/compensation.py)
    compensate: Rendered | None = None
    compensate_connection: str | None = None
    compensate_key: Rendered | None = None


@dataclass
class Flow:
    """A loaded, validated and compiled flow."""

    name: str
    file: str
    version: int
    description: str
    vars: dict[str, Any]
    connections: dict[str, Connection]
    source: Source
    steps: list[Step]
    concurrency: int = 1
    # group commit (engine/group.py): records per group and seconds per group; None: defaults
    group_records: int | None = None
    group_seconds: float | None = None
    on_error: str = "dead_letter"
    schedule: Schedule | None = None
    retention_s: float | None = None
    expect_success_within_s: float | None = None  # alert after this long without success
    warnings: list[Problem] = field(default_factory=list)
    env_names: set[str] = field(default_factory=set)
    # SHA-256 over the flow file and every mapping and schema file it compiled
    definition_digest: str = ""
    # work queues (owner, SLA, escalation) and each record's labels for stats
    queues: dict[str, QueuePolicy] = field(default_factory=dict)
    labels: dict[str, Rendered] = field(default_factory=dict)

    def walk(self) -> list[tuple[Step, list[Step], int]]:
        """Every step with the list that holds it and its index there, depth first."""
        out: list[tuple[Step, list[Step], int]] = []

        def visit(steps: list[Step]) -> None:
            for i, step in enumerate(steps):
                out.append((step, steps, i))
                if isinstance(step, RouteStep):
                    for branch in step.branches:
                        visit(branch.steps)
                elif isinstance(step, ForeachStep):
                    visit(step.steps)
                elif isinstance(step, ApproveStep):
                    visit(step.on_reject)

        visit(self.steps)
        return out

    def step(self, name: str) -> Step | None:
        """The step called ``name``, anywhere in the flow."""
        return next((s for s, _, _ in self.walk() if s.name == name), None)
