"""The flow language as a JSON Schema (draft-07), the single definition of its keys.

``flowyard schema`` prints it so editors' YAML language servers can offer
completion and checks. The loader validates every flow file against it before
doing any semantic check; keys are documented in ``docs/flows.md``.
"""

from __future__ import annotations

from typing import Any

STEP_KINDS = ("map", "validate", "filter", "set", "route", "foreach", "send", "enrich")

NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_.-]*$"

_template = {"type": "string", "description": 'A Jinja2 template, e.g. "{{ record.id }}".'}
_condition = {
    "type": "string",
    "minLength": 1,
    "description": "A bare Jinja2 expression, e.g. record.total > 0 (no {{ }}).",
}
_retry = {
    "type": "object",
    "description": "How transient failures are retried.",
    "additionalProperties": False,
    "properties": {
        "attempts": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "description": "Attempts in all, the first included (default 5).",
        },
        "backoff": {
            "type": "number",
            "minimum": 0,
            "description": "First wait in seconds, doubled each attempt (default 0.5).",
        },
        "max_backoff": {
            "type": "number",
            "minimum": 0,
            "description": "Cap on one wait in seconds (default 30).",
        },
        "jitter": {"type": "boolean", "description": "Randomise waits (default true)."},
    },
}
_steps_ref = {"$ref": "#/definitions/steps"}

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "urn:flowyard:flow:v1",
    "title": "flowyard flow",
    "type": "object",
    "additionalProperties": False,
    "required": ["flow", "source", "steps"],
    "properties": {
        "flow": {"type": "string", "pattern": NAME_PATTERN, "description": "The flow's name."},
        "version": {"type": "integer", "minimum": 1, "description": "Version of this flow."},
        "description": {"type": "string"},
        "vars": {
            "type": "object",
            "description": "Variables with defaults, `vars.NAME` in templates; --var overrides.",
        },
        "mappings": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Folders searched for mappings and canonical schemas, relative "
            "to the flow file (default: mappings, ../mappings).",
        },
        "connections": {
            "type": "object",
            "description": "Named connections reused by the source and steps.",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"$ref": "#/definitions/connection"},
        },
        "source": {"$ref": "#/definitions/source"},
        "steps": _steps_ref,
        "concurrency": {
            "type": "integer",
            "minimum": 1,
            "maximum": 256,
            "description": "Records processed at once (default 1).",
        },
        "on_error": {
            "enum": ["dead_letter", "stop"],
            "description": "What a failed record does: dead_letter (default) or stop.",
        },
        "schedule": {
            "type": "string",
            "pattern": r"^\s*(\S+\s+){4}\S+\s*$",
            "description": "A five-field cron expression, for `flowyard schedule`.",
        },
        "retention": {
            "type": "string",
            "pattern": r"^\d+[dhm]$",
            "description": "How long runs and traces are kept, e.g. 30d.",
        },
    },
    "definitions": {
        "connection": {
            "type": "object",
            "required": ["connector"],
            "description": "A connector and its options; the engine keys below govern "
            "every use of the connection.",
            "properties": {
                "connector": {"type": "string", "description": "Connector name."},
                "retry": _retry,
                "rate_limit": {
                    "type": "string",
                    "pattern": r"^\d+(\.\d+)?/(s|m|h)$",
                    "description": "Requests per second/minute/hour, e.g. 20/s.",
                },
                "circuit_breaker": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "failures": {"type": "integer", "minimum": 1},
                        "cooldown": {"type": "number", "minimum": 0},
                        "on_open": {"enum": ["stop", "wait"]},
                    },
                },
            },
        },
        "source": {
            "type": "object",
            "description": "Where records come from: a connection or a connector, and "
            "its read options.",
            "properties": {
                "connection": {"type": "string"},
                "connector": {"type": "string"},
                "key": {**_template, "description": "The record key (default {{ record.id }})."},
            },
        },
        "steps": {"type": "array", "items": {"$ref": "#/definitions/step"}},
        "step": {
            "type": "object",
            "description": "One step: exactly one of the kinds, and an optional name.",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": NAME_PATTERN,
                    "description": "Step name, used in idempotency keys and traces.",
                },
                "map": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A mapping name (mappings/NAME.yaml) or a path.",
                },
                "validate": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A canonical schema name or a path.",
                },
                "filter": {**_condition, "description": "Keep records for which this is true."},
                "set": {
                    "type": "object",
                    "minProperties": 1,
                    "description": "Fields to set on the record: name -> template.",
                },
                "route": {
                    "type": "array",
                    "minItems": 1,
                    "description": "Branches: the first `when` that is true, else `otherwise`.",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "when": _condition,
                            "steps": _steps_ref,
                            "otherwise": _steps_ref,
                        },
                    },
                },
                "foreach": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["items", "steps"],
                    "properties": {
                        "items": {**_template, "description": "The list, e.g. {{ record.lines }}."},
                        "as": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                        "key": {
                            **_template,
                            "description": "Each item's key (default: parent key:index).",
                        },
                        "steps": _steps_ref,
                    },
                },
                "send": {"$ref": "#/definitions/call", "description": "A side effect."},
                "enrich": {
                    "$ref": "#/definitions/call",
                    "description": "A lookup whose answer is stored in the record.",
                },
            },
        },
        "call": {
            "type": "object",
            "required": ["connection"],
            "description": "A call through a connection; other keys are the connector's "
            "call options, each a template rendered per record.",
            "properties": {
                "connection": {"type": "string"},
                "idempotency_key": _template,
                "on_change": {"enum": ["update", "skip", "conflict"]},
                "save_as": {
                    "type": "string",
                    "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                    "description": "Record field that receives the response body.",
                },
                "retry": _retry,
            },
        },
    },
}

# Keys of a connection, a source and a call that belong to the engine; every other
# key is an option of the connector and is checked against its own schema.
CONNECTION_KEYS = frozenset({"connector", "retry", "rate_limit", "circuit_breaker"})
SOURCE_KEYS = frozenset({"connection", "connector", "key"})
CALL_KEYS = frozenset({"connection", "idempotency_key", "on_change", "save_as", "retry"})
