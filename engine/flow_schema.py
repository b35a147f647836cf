"""The flow language as a JSON Schema (draft-07), the single definition of its keys.

``flowyard schema`` prints it so editors' YAML language servers can offer
completion, hover text and checks; every key has a description and most have
examples. The loader validates every flow file against it before any semantic
check, and words jsonschema's errors with :func:`explain` (jsonschema's own
messages speak of instances and subschemas). Keys are documented in
``docs/flows.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema

from engine.suggest import did_you_mean

STEP_KINDS = (
    "map",
    "validate",
    "filter",
    "set",
    "route",
    "foreach",
    "send",
    "enrich",
    "fail",
    "review",
    "reconcile",
    "approve",
)

NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_.-]*$"
IDENTIFIER_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"

_template = {
    "type": "string",
    "description": 'A Jinja2 template, e.g. "{{ record.id }}" (quote it in YAML).',
}
_condition = {
    "type": "string",
    "minLength": 1,
    "description": "A bare Jinja2 expression, without {{ }}: true keeps the record.",
    "examples": ["record.total > 0", "record.fulfillment.method == 'pickup'"],
}
_retry = {
    "type": "object",
    "description": "How transient failures (timeouts, connection errors, 408, 429, 5xx) "
    "are retried: exponential backoff with jitter, Retry-After honoured.",
    "additionalProperties": False,
    "properties": {
        "attempts": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "description": "Attempts in all, the first included (default 5).",
            "examples": [5],
        },
        "backoff": {
            "type": "number",
            "minimum": 0,
            "description": "First wait in seconds, doubled each attempt (default 0.5).",
            "examples": [0.5],
        },
        "max_backoff": {
            "type": "number",
            "minimum": 0,
            "description": "Cap on one wait in seconds (default 30).",
            "examples": [30],
        },
        "jitter": {"type": "boolean", "description": "Randomise waits (default true)."},
    },
    "examples": [{"attempts": 5, "backoff": 0.5, "max_backoff": 30}],
}
_steps_ref = {"$ref": "#/definitions/steps"}
_queue = {
    "type": "string",
    "pattern": NAME_PATTERN,
    "description": "The review queue the record waits in (default review): letters, digits, "
    "_ . -, starting with a letter or _.",
    "examples": ["finance"],
}
_duration = {
    "type": "string",
    "pattern": r"^\d+(\.\d+)?[smhd]$",
    "description": "A duration: a number and s, m, h or d, e.g. 4h.",
    "examples": ["4h", "1d", "30m"],
}
_owner = {
    "type": "string",
    "minLength": 1,
    "description": "Who owns the item: a team or a role (default: the queue's owner).",
    "examples": ["finance-team"],
}
_escalate_to = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "description": "Who takes an item over once it is past due: another queue, owner or both.",
    "properties": {
        "queue": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "The queue an item past due moves to.",
        },
        "owner": {**_owner, "description": "The owner an item past due passes to."},
    },
    "examples": [{"owner": "finance-lead"}],
}
_work_keys = {
    "owner": _owner,
    "category": {
        "type": "string",
        "pattern": NAME_PATTERN,
        "description": "The reason category stats group items by (default: the step's name).",
        "examples": ["refund_above_threshold"],
    },
    "due": {
        **_duration,
        "description": "How soon a person must act (the SLA), e.g. 4h; past it the item is "
        "escalated and counted as a breach (default: the queue's `due`).",
    },
    "escalate_to": _escalate_to,
}
_amount_value = {
    "type": ["string", "integer"],
    "description": "An amount: a template, or a decimal written as text (quote it: YAML "
    "reads 104.00 as a float).",
}
_tolerance = {
    "type": ["string", "integer"],
    "description": "The largest difference accepted, absolute, per amount: a decimal as "
    'text, e.g. "0.01", or a template giving one (default 0).',
    "examples": ["0.01"],
}

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "urn:flowyard:flow:v1",
    "title": "flowyard flow",
    "description": "A flowyard flow: records read from a source go through the steps. "
    "Reference: docs/flows.md.",
    "type": "object",
    "additionalProperties": False,
    "required": ["flow", "source", "steps"],
    "properties": {
        "flow": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "The flow's name: letters, digits, _ . - (it names runs, locks "
            "and default idempotency keys, so keep it once the flow is in use).",
            "examples": ["orders_to_erp"],
        },
        "version": {
            "type": "integer",
            "minimum": 1,
            "description": "Version of this flow, for your own bookkeeping (default 1).",
        },
        "description": {"type": "string", "description": "What the flow does, for people."},
        "vars": {
            "type": "object",
            "description": "Variables with their defaults, `{{ vars.NAME }}` in templates; "
            "`flowyard run --var NAME=VALUE` overrides them.",
            "examples": [{"out_dir": "out", "store_id": 12}],
        },
        "mappings": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Folders searched for mappings (NAME.yaml) and canonical schemas "
            "(canonical/NAME.schema.json), relative to the flow file "
            "(default: mappings, ../mappings).",
            "examples": [["../mappings"]],
        },
        "connections": {
            "type": "object",
            "description": "Named connections reused by the source and the steps: a "
            "connector, its options, and how the engine governs it (retry, rate_limit, "
            "circuit_breaker).",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"$ref": "#/definitions/connection"},
        },
        "source": {"$ref": "#/definitions/source"},
        "steps": {
            **_steps_ref,
            "description": "What happens to each record, in order.",
        },
        "concurrency": {
            "type": "integer",
            "minimum": 1,
            "maximum": 256,
            "description": "Records processed at once (default 1); raise it for I/O-bound sends.",
            "examples": [8],
        },
        "group": {
            "type": "object",
            "additionalProperties": False,
            "description": "How many records are committed together (group commit): a group "
            "ends after `records` records or `seconds` seconds, whichever comes first "
            "(default 500 and 0.2). A crash redoes at most the last group.",
            "properties": {
                "records": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 100000,
                    "description": "Records in a group at most (default 500): more make fewer "
                    "commits, fewer redo less after a crash.",
                },
                "seconds": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 3600,
                    "description": "A group ends at the first record that ends this long after "
                    "it began (default 0.2); a SQLite target is locked for other writers "
                    "while its group is open.",
                },
            },
            "examples": [{"records": 500, "seconds": 0.2}],
        },
        "on_error": {
            "enum": ["dead_letter", "stop"],
            "description": "What a failed record does: dead_letter (default: park it and "
            "go on) or stop (end the run at the first failure).",
        },
        "schedule": {
            # one schema for both forms: a pattern checks text only, properties objects only
            "type": ["string", "object"],
            "pattern": r"^\s*(\S+\s+){4}\S+\s*$",
            "description": "A five-field cron expression (minute hour day month weekday, read "
            "in UTC), e.g. */5 * * * *, or {cron, timezone, missed}: when `flowyard serve` "
            "runs the flow.",
            "additionalProperties": False,
            "required": ["cron"],
            "properties": {
                "cron": {
                    "type": "string",
                    "pattern": r"^\s*(\S+\s+){4}\S+\s*$",
                    "description": "A five-field cron expression (minute hour day month "
                    "weekday), e.g. */5 * * * *.",
                },
                "timezone": {
                    "type": "string",
                    "description": "The IANA time zone the expression is read in (default "
                    "UTC), e.g. Europe/Berlin.",
                    "examples": ["Europe/Berlin", "America/New_York"],
                },
                "missed": {
                    "enum": ["run_once", "skip"],
                    "description": "Slots missed while no `flowyard serve` ran: run_once "
                    "(default: one run at start, however many were missed) or skip (wait "
                    "for the next slot).",
                },
            },
            "examples": ["*/5 * * * *", {"cron": "0 2 * * 1-5", "timezone": "Europe/Berlin"}],
        },
        "expect_success_within": {
            "type": "string",
            "pattern": r"^\d+[smhd]$",
            "description": "Alert (`flowyard serve`) when the flow has had no successful run "
            "for this long: a number and s, m, h or d, e.g. 2h.",
            "examples": ["15m", "2h"],
        },
        "retention": {
            "type": "string",
            "pattern": r"^\d+[dhm]$",
            "description": "How long runs and traces are kept: a number and d, h or m, e.g. 30d.",
            "examples": ["30d", "12h"],
        },
        "queues": {
            "type": "object",
            "description": "The flow's work queues: who owns each, how soon its items are due "
            "and who takes them over past that. `dead_letters` is the queue of the flow's "
            "dead letters.",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "owner": _owner,
                    "due": _duration,
                    "escalate_to": _escalate_to,
                },
            },
            "examples": [
                {"finance": {"owner": "finance-team", "due": "1d"}},
                {"dead_letters": {"owner": "integration-team", "due": "4h"}},
            ],
        },
        "labels": {
            "type": "object",
            "description": "Named values of each record (a store, a supplier), templates "
            "rendered on the record as it ends its pass; `flowyard stats` and the report "
            "group exceptions by them.",
            "propertyNames": {"pattern": IDENTIFIER_PATTERN},
            "additionalProperties": {"type": "string"},
            "examples": [{"store": "{{ record.fulfillment.pickup_store }}"}],
        },
    },
    "definitions": {
        "connection": {
            "type": "object",
            "required": ["connector"],
            "description": "A connector and its options; the engine keys (retry, "
            "rate_limit, circuit_breaker) govern every use of the connection. Options may "
            "use ${env:NAME} for secrets and {{ vars.NAME }}.",
            "properties": {
                "connector": {
                    "type": "string",
                    "description": "Connector name (`flowyard connectors` lists them).",
                    "examples": ["http", "file", "sqlite", "stdout"],
                },
                "retry": _retry,
                "rate_limit": {
                    "type": "string",
                    "pattern": r"^\d+(\.\d+)?/(s|m|h)$",
                    "description": "At most this many requests per second, minute or hour: "
                    "a number, / and s, m or h, e.g. 20/s.",
                    "examples": ["20/s", "600/m"],
                },
                "circuit_breaker": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "Stop calling a failing target: open after `failures` "
                    "transient failures in a row, probe again after `cooldown` seconds.",
                    "properties": {
                        "failures": {
                            "type": "integer",
                            "minimum": 1,
                            "description": "Transient failures in a row that open it (default 5).",
                        },
                        "cooldown": {
                            "type": "number",
                            "minimum": 0,
                            "description": "Seconds before a probe (default 30).",
                        },
                        "on_open": {
                            "enum": ["stop", "wait"],
                            "description": "stop (default): park the records and end the "
                            "run (exit 3); wait: wait for the cooldown and probe.",
                        },
                    },
                },
            },
            "examples": [
                {
                    "connector": "http",
                    "base_url": "https://erp.example.com/api",
                    "auth": {"type": "bearer", "token": "${env:ERP_TOKEN}"},
                    "rate_limit": "20/s",
                }
            ],
        },
        "source": {
            "type": "object",
            "description": "Where records come from: `connection:` (one of the flow's "
            "connections) or `connector:` (a connector with its defaults), the record key, "
            "and the connector's read options.",
            "properties": {
                "connection": {"type": "string", "description": "A connection's name."},
                "connector": {
                    "type": "string",
                    "description": "A connector used with its default options.",
                },
                "webhook": {"$ref": "#/definitions/webhook"},
                "key": {
                    **_template,
                    "description": "Each record's key, a template (default: the record's "
                    "`id` field, else its line). Keys identify records in traces and "
                    "make default idempotency keys.",
                    "examples": ["{{ record.id }}", "shopify:{{ record.id }}"],
                },
            },
            "examples": [{"connector": "file", "path": "orders.ndjson"}],
        },
        "webhook": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scheme", "secret"],
            "description": "Records pushed by a platform: `flowyard serve` takes signed "
            "deliveries at `path`, keeps them in the state's inbox, and runs the flow on them.",
            "properties": {
                "path": {
                    "type": "string",
                    "pattern": r"^/[A-Za-z0-9/_.~-]*$",
                    "description": "The URL path deliveries are posted to (default "
                    "/webhooks/<flow>).",
                    "examples": ["/webhooks/shop/orders"],
                },
                "scheme": {
                    "enum": ["shopify", "woocommerce", "standard"],
                    "description": "How deliveries are signed: shopify (X-Shopify-Hmac-Sha256), "
                    "woocommerce (X-WC-Webhook-Signature) or standard (Standard Webhooks: "
                    "webhook-id, webhook-timestamp, webhook-signature).",
                },
                "secret": {
                    "type": "string",
                    "description": "The signing secret, as ${env:NAME} or ${file:PATH} (never "
                    "written in the flow file).",
                    "examples": ["${env:SHOP_WEBHOOK_SECRET}"],
                },
                "topics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string"},
                    "description": "The topics the flow takes (default: all); a delivery of "
                    "another topic is acknowledged and not kept.",
                    "examples": [["orders/create", "orders/updated"]],
                },
                "tolerance": {
                    "type": "string",
                    "pattern": r"^\d+[smh]$",
                    "description": "standard only: how far a delivery's webhook-timestamp may "
                    "be from now (default 5m); older ones are replays and refused.",
                    "examples": ["5m"],
                },
                "max_body": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "The largest body taken, in bytes (default 1048576); "
                    "larger ones are answered 413.",
                },
            },
        },
        "steps": {"type": "array", "items": {"$ref": "#/definitions/step"}},
        "step": {
            "type": "object",
            "description": "One step: exactly one of map, validate, filter, set, route, "
            "foreach, send, enrich, fail, review, reconcile, approve; and an optional name.",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": NAME_PATTERN,
                    "description": "Step name, unique in the flow; used in idempotency keys, "
                    "traces and dead letters (default: kind_N by position).",
                    "examples": ["erp_sales_order"],
                },
                "map": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Replace the record with a mapping's output (or, with "
                    "`into`, set one field to it): a mapping name (NAME.yaml in the mapping "
                    "folders) or a path.",
                    "examples": ["shopify_order_to_canonical"],
                },
                "into": {
                    "type": "string",
                    "pattern": IDENTIFIER_PATTERN,
                    "description": "map only: put the mapping's output in this record field "
                    "instead of replacing the record (e.g. an ERP request body built from "
                    "the record).",
                    "examples": ["erp_sale"],
                },
                "validate": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Check the record against a canonical JSON Schema: a "
                    "name (canonical/NAME.schema.json in the mapping folders) or a path; "
                    "a record that fails is dead-lettered.",
                    "examples": ["order"],
                },
                "filter": {
                    **_condition,
                    "description": "Keep only records for which this bare expression is "
                    "true; the others end as `filtered`.",
                },
                "set": {
                    "type": "object",
                    "minProperties": 1,
                    "description": "Fields to set on the record: field name -> value or template.",
                    "examples": [{"channel": "web", "label": "order {{ record.id }}"}],
                },
                "route": {
                    "type": "array",
                    "minItems": 1,
                    "description": "Branches: the record takes the first whose `when` is "
                    "true, else `otherwise`; a record matching nothing goes on after the "
                    "route, as does every record after its branch.",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "description": "`when:` + `steps:`, or `otherwise:` (last).",
                        "properties": {
                            "when": _condition,
                            "steps": {**_steps_ref, "description": "The branch's steps."},
                            "otherwise": {
                                **_steps_ref,
                                "description": "Steps of the records no `when` matched.",
                            },
                        },
                    },
                },
                "foreach": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["items", "steps"],
                    "description": "Split: run `steps` once per item of a list. Inside, "
                    "`record` is the item and `parent` the record it came from; the body "
                    "does not continue into the outer flow.",
                    "properties": {
                        "items": {
                            **_template,
                            "description": "The list, a lone template expression.",
                            "examples": ["{{ record.lines }}"],
                        },
                        "as": {
                            "type": "string",
                            "pattern": IDENTIFIER_PATTERN,
                            "description": "Another name for the item in templates (default item).",
                            "examples": ["line"],
                        },
                        "key": {
                            **_template,
                            "description": "Each item's key (default: parent key:index).",
                            "examples": ["{{ parent.id }}:{{ record.sku }}"],
                        },
                        "steps": {**_steps_ref, "description": "Steps run for each item."},
                    },
                },
                "send": {
                    "$ref": "#/definitions/call",
                    "description": "A side effect through a connection, performed once per "
                    "idempotency key.",
                },
                "fail": {
                    **_template,
                    "minLength": 1,
                    "description": "Dead-letter the record with this reason, a template "
                    "written for the person who must act on it (use it in a route branch).",
                    "examples": ["unknown SKU {{ record.sku }} in order {{ record.number }}"],
                },
                "enrich": {
                    "$ref": "#/definitions/call",
                    "description": "A lookup through a connection whose answer is stored "
                    "in the record (`save_as`); never deduplicated, skipped in --dry-run.",
                },
                "review": {
                    "type": ["string", "object"],
                    "minLength": 1,
                    "description": "Hold the record for a person: it ends in `review` with "
                    "an item in a review queue (`flowyard review list`), never `done`. The "
                    "reason as a template, or {queue, reason, figures}.",
                    "examples": [
                        "order {{ record.order_number }} is not paid yet",
                        {
                            "queue": "finance",
                            "reason": "order {{ record.order_number }} is "
                            "{{ record.status.financial }}",
                            "figures": {"total": "{{ record.totals.total }}"},
                        },
                    ],
                    "additionalProperties": False,
                    "required": ["reason"],
                    "properties": {
                        "queue": _queue,
                        "reason": {
                            **_template,
                            "minLength": 1,
                            "description": "Why the record needs a person, a template "
                            "written for that person.",
                        },
                        "figures": {
                            "type": "object",
                            "description": "Named values the person needs to decide, each "
                            "a constant or a template.",
                            "examples": [{"total": "{{ record.totals.total }}"}],
                        },
                        **_work_keys,
                    },
                },
                "approve": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["reason"],
                    "description": "Stop the record until a person approves it "
                    "(`flowyard approvals approve ID --by NAME`): approved, it resumes at "
                    "the next step with the flow as it is then; rejected, the compensations "
                    "of its earlier sends run, then its `on_reject` steps, and it ends there.",
                    "properties": {
                        "queue": {
                            **_queue,
                            "description": "The queue the approval waits in (default approvals).",
                        },
                        "reason": {
                            **_template,
                            "minLength": 1,
                            "description": "What is to be approved, a template written for "
                            "the approver.",
                        },
                        "figures": {
                            "type": "object",
                            "description": "Named values the approver decides on, each a "
                            "constant or a template; an approval covers these figures.",
                            "examples": [{"refund": "{{ record.refund.total }}"}],
                        },
                        **_work_keys,
                        "on_reject": {
                            **_steps_ref,
                            "description": "Steps a rejected record takes (after the "
                            "compensations of its sends); it ends after them.",
                        },
                    },
                    "examples": [
                        {
                            "queue": "finance",
                            "reason": "refund {{ record.rma_id }} above the limit",
                            "figures": {"refund": "{{ record.refund.total }}"},
                            "due": "4h",
                        }
                    ],
                },
                "reconcile": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["amounts"],
                    "description": "Check money: compare amounts the source stated with "
                    "amounts a target reported, as decimals. All equal within the tolerance: "
                    "the record goes on; otherwise it ends in `review` with every figure "
                    "and a reason naming each difference.",
                    "properties": {
                        "queue": _queue,
                        "tolerance": _tolerance,
                        "reason": {
                            **_template,
                            "description": "Words put before the differences in the reason, "
                            "e.g. which order and which sale.",
                            "examples": ["order {{ record.order_number }}"],
                        },
                        "amounts": {
                            "type": ["object", "string"],
                            "minProperties": 1,
                            "description": "name: {expected, actual[, tolerance]} for each "
                            "amount; or one template giving such a mapping (or a list of "
                            "{name, expected, actual[, tolerance]}) per record.",
                            "additionalProperties": {"$ref": "#/definitions/amount"},
                            "examples": [
                                {
                                    "total": {
                                        "expected": "{{ record.totals.total }}",
                                        "actual": "{{ record.erp_sale.total_amount }}",
                                    }
                                }
                            ],
                        },
                    },
                },
            },
        },
        "amount": {
            "type": "object",
            "additionalProperties": False,
            "required": ["expected", "actual"],
            "description": "One amount to reconcile.",
            "properties": {
                "expected": {
                    **_amount_value,
                    "description": "What the source stated: a template or a decimal as text.",
                    "examples": ["{{ record.totals.total }}"],
                },
                "actual": {
                    **_amount_value,
                    "description": "What the target reported back: a template or a decimal "
                    "as text. Missing, a float or not a number: a difference.",
                    "examples": ["{{ record.erp_sale.total_amount }}"],
                },
                "tolerance": {**_tolerance, "description": "Overrides the step's tolerance."},
            },
        },
        "call": {
            "type": "object",
            "required": ["connection"],
            "description": "A call through a connection. The keys below belong to the "
            "engine; every other key is a call option of the connector, each string a "
            "template rendered per record.",
            "properties": {
                "connection": {"type": "string", "description": "A connection's name."},
                "idempotency_key": {
                    **_template,
                    "description": "send only: the key that makes the side effect happen "
                    "once (default <flow>:<step name>:<record key>).",
                    "examples": ["order:{{ record.order_id }}"],
                },
                "on_change": {
                    "enum": ["update", "skip", "conflict"],
                    "description": "send only: what a key already sent with another "
                    "request does: conflict (default: dead-letter it), update (send it), "
                    "skip.",
                },
                "save_as": {
                    "type": "string",
                    "pattern": IDENTIFIER_PATTERN,
                    "description": "Record field that receives the response body "
                    "(required for enrich).",
                    "examples": ["erp_response"],
                },
                "retry": {**_retry, "description": "Overrides the connection's retry."},
                "compensate": {
                    "type": "object",
                    "minProperties": 1,
                    "description": "send only: how to undo the send when a later step of "
                    "the record fails for good or its approval is rejected: call options of "
                    "the same connection (or `connection:` another), rendered with the "
                    "record as it was right after the send; `idempotency_key` optional "
                    "(default: the send's key and :compensate).",
                    "examples": [
                        {
                            "model": "sale.sale",
                            "method": "cancel",
                            "args": [["{{ record.erp_sale_created.ids[0] }}"]],
                        }
                    ],
                },
            },
        },
    },
}

# Keys of a connection, a source and a call that belong to the engine; every other
# key is an option of the connector and is checked against its own schema.
CONNECTION_KEYS = frozenset({"connector", "retry", "rate_limit", "circuit_breaker"})
SOURCE_KEYS = frozenset({"connection", "connector", "key", "webhook"})
CALL_KEYS = frozenset(
    {"connection", "idempotency_key", "on_change", "save_as", "retry", "compensate"}
)

# What to write when a required key is missing, by key.
REQUIRED_HINTS = {
    "flow": "`flow:` names the flow, e.g. `flow: orders_to_erp`",
    "source": "`source:` says where records come from, e.g. "
    "`source: {connector: file, path: orders.ndjson}`",
    "steps": "`steps:` lists what happens to each record, e.g. `steps: [{map: my_mapping}]`",
    "connector": "a connection needs `connector:` (see `flowyard connectors`)",
    "items": 'foreach needs `items:`, the list to split, e.g. items: "{{ record.lines }}"',
    "connection": "a call needs `connection:`, one of the flow's connections (define it "
    "under `connections:`)",
    "reason": "`reason:` says why the record needs a person, e.g. "
    '`reason: "order {{ record.order_number }} is not paid"`',
    "amounts": "`amounts:` names the amounts to compare, e.g. "
    '`total: {expected: "{{ record.totals.total }}", actual: "{{ record.erp.total }}"}`',
    "expected": "`expected:` is what the source stated, e.g. "
    '`expected: "{{ record.totals.total }}"`',
    "actual": "`actual:` is what the target reported back, e.g. "
    '`actual: "{{ record.erp_sale.total_amount }}"`',
}

_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping (key: value lines)",
    "array": "a list (- item lines or [a, b])",
    "null": "null",
}


def describe_value(value: Any) -> str:
    """How YAML read a value, for "expected X, got Y" messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the text {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if hasattr(value, "isoformat"):
        return f"a date/time ({value}) because YAML reads unquoted dates as dates"
    return f"a {type(value).__name__}"


def _expected_type(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_TYPE_WORDS.get(t, t) for t in names)


def _type_hint(expected: Any, value: Any) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    if "string" in names and isinstance(value, bool):
        return "; YAML reads yes/no/on/off/true/false as booleans, quote the value"
    if "string" in names and (isinstance(value, int | float) or hasattr(value, "isoformat")):
        return "; quote it to keep it as text"
    return ""


def explain(
    err: jsonschema.ValidationError, root: dict[str, Any] | None = None
) -> tuple[list[Any], str, bool]:
    """One jsonschema error in a person's words: (path, message, point at the key?).

    ``path`` may go one step deeper than the error's own (an unknown key, an invalid
    property name), so that the position shown is the offending key itself. ``root``
    is the whole schema, to explain ``if``/``then`` rules.
    """
    path = list(err.absolute_path)
    kind, value, schema = err.validator, err.instance, _schema_of(err)
    rule: Any = err.validator_value  # the keyword's value in the schema (JSON)
    if "propertyNames" in err.relative_schema_path:
        form = (
            "use letters, digits, _ . - and start with a letter or _"
            if schema.get("pattern") == NAME_PATTERN
            else f"names must match {schema.get('pattern')}"
        )
        return [*path, value], f"{value!r} is not a valid name: {form}", True
    if kind == "required":
        missing = [k for k in rule if not isinstance(value, dict) or k not in value]
        key = missing[0] if missing else "?"
        hint = REQUIRED_HINTS.get(key, f"`{key}:` is required here")
        return path, f"missing `{key}:`; {hint}", bool(path)
    if kind == "type":
        expected = _expected_type(rule)
        if value is None:
            return path, f"a value is missing here (expected {expected})", False
        hint = _type_hint(rule, value)
        return path, f"expected {expected}, got {describe_value(value)}{hint}", False
    if kind == "enum":
        choices = [str(c) for c in rule]
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        return (
            path,
            f"expected one of {', '.join(choices)}; got {describe_value(value)}{hint}",
            False,
        )
    if kind == "const":
        return path, f"expected {rule!r}, got {describe_value(value)}", False
    if kind == "pattern":
        what = schema.get("description") or f"matching {rule}"
        return path, f"{describe_value(value)} does not have the expected form: {what}", False
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "exclusiveMinimum": "more than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }
        bounds = [f"{words[k]} {schema[k]}" for k in words if k in schema]
        return path, f"must be {' and '.join(bounds)}; got {value}", False
    if kind == "minLength":
        return path, "must not be empty", False
    if kind in ("maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        size = {"minItems": "item", "maxItems": "item"}.get(kind, "entry")
        if kind == "maxLength":
            return path, f"must be at most {rule} character(s) long", False
        bound = "at least" if kind.startswith("min") else "at most"
        n = rule
        what = "empty" if n == 1 and bound == "at least" else "of the wrong size"
        return path, f"is {what}: give {bound} {n} {size}(s)", False
    if kind in ("oneOf", "anyOf"):
        return _explain_alternatives(err)
    if kind == "not" and set(rule or {}) == {"required"}:
        keys = ", ".join(f"`{k}`" for k in rule["required"])
        condition = schema_condition(root, err.schema_path) if root else ""
        return path, f"{keys} is not allowed here{' ' + condition if condition else ''}", False
    return path, err.message, False


def _schema_of(err: jsonschema.ValidationError) -> Mapping[str, Any]:
    """The (sub)schema that refused the value; an empty one for ``true``/``false``."""
    return err.schema if isinstance(err.schema, Mapping) else {}


def schema_condition(root: dict[str, Any] | None, schema_path: Iterable[Any]) -> str:
    """The ``if`` a then/else rule at ``schema_path`` depends on, in words ("when ...")."""
    parts = list(schema_path)
    node: Any = root
    for i, part in enumerate(parts):
        if part in ("then", "else") and isinstance(node, dict) and isinstance(node.get("if"), dict):
            rule = _describe_if(node["if"])
            if rule and i >= len(parts) - 3:
                return f"when {rule}" if part == "then" else f"unless {rule}"
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return ""
    return ""


def _describe_if(rule: dict[str, Any]) -> str:
    consts = {
        k: v["const"]
        for k, v in (rule.get("properties") or {}).items()
        if isinstance(v, dict) and "const" in v
    }
    if consts:
        return " and ".join(f"{k} is {v}" for k, v in consts.items())
    required = rule.get("required") or []
    return " and ".join(f"`{k}` is given" for k in required)


def _explain_alternatives(err: jsonschema.ValidationError) -> tuple[list[Any], str, bool]:
    """``oneOf``/``anyOf``: pick the alternative the value meant, and explain that one.

    Alternatives told apart by a ``type: {const: X}`` property (http auth, pagination)
    are chosen by the value's ``type``; alternatives that only require one key each
    (``query`` or ``table``) read as "give exactly one of".
    """
    path = list(err.absolute_path)
    value = err.instance
    branches = err.validator_value if isinstance(err.validator_value, list) else []
    tags = [((b.get("properties") or {}).get("type") or {}).get("const") for b in branches]
    if all(tags) and isinstance(value, dict):
        tag = value.get("type")
        if tag not in tags:
            got = "no `type:`" if tag is None else f"type {tag!r}{did_you_mean(tag, tags)}"
            return path, f"expected `type:` one of {', '.join(map(str, tags))}; got {got}", False
        chosen = branches[tags.index(tag)]
        for sub in err.context:
            if sub.schema is chosen or (
                sub.relative_schema_path and sub.relative_schema_path[0] == tags.index(tag)
            ):
                sub_path, message, at_key = _explain_sub(sub, path)
                return sub_path, f"type {tag}: {message}", at_key
        return path, f"does not match type {tag}", False
    required = [b.get("required") for b in branches]
    if all(
        r and len(r) == 1 and set(b) <= {"required"}
        for r, b in zip(required, branches, strict=True)
    ):
        keys = [r[0] for r in required]
        present = [k for k in keys if isinstance(value, dict) and k in value]
        got = ", ".join(present) if present else "none"
        return path, f"give exactly one of {', '.join(keys)}; got {got}", False
    best = jsonschema.exceptions.best_match(err.context) if err.context else None
    if best is not None:
        return _explain_sub(best, path)
    return path, err.message, False


def _explain_sub(sub: jsonschema.ValidationError, base: list[Any]) -> tuple[list[Any], str, bool]:
    sub_path, message, at_key = explain(sub)
    if sub.validator == "additionalProperties":
        allowed = sorted(_schema_of(sub).get("properties") or {})
        instance: Any = sub.instance  # a mapping: additionalProperties refused it
        extra = sorted(set(instance) - set(allowed), key=str)
        if extra:
            key = extra[0]
            return (
                [*sub_path, key],
                f"unknown key {key!r}{did_you_mean(key, allowed)}; expected one of: "
                f"{', '.join(allowed)}",
                True,
            )
    return sub_path, message, at_key


# -- schedule -----------------------------------------------------------------------------
_CRON_FIELDS: tuple[tuple[str, str], ...] = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat"),
)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``30d`` / ``12h`` / ``15m`` / ``10s`` -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30d, 12h, 15m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cron_problem(text: str) -> str | None:
    """What is wrong with a five-field cron expression, or None when it is valid (read by
    croniter, the cron library `flowyard serve` schedules with; each field is tried alone
    so that the message names the one that is wrong)."""
    fields = text.split()
    if len(fields) != 5:
        return f"a cron expression has 5 fields (minute hour day month weekday); got {len(fields)}"
    from croniter import croniter  # on use: only flows with a schedule need it

    def fails(expression: str) -> str | None:
        try:
            croniter(expression)
        except Exception as exc:  # croniter's own error says why
            return str(exc).split("] ", 1)[-1]
        return None

    for i, (name, allowed) in enumerate(_CRON_FIELDS):
        alone = " ".join(fields[i] if j == i else "*" for j in range(5))
        why = fails(alone)
        if why:
            return (
                f"{name} field {fields[i]!r}: {why} (it takes {allowed}, *, lists, ranges, /steps)"
            )
    why = fails(text)
    return f"not a valid cron expression: {why}" if why else None


def timezone_problem(name: str) -> str | None:
    """What is wrong with an IANA time zone name, or None when this machine knows it."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r}; write an IANA name such as Europe/Berlin or UTC"
    return None
