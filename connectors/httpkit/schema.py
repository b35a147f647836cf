"""The options of an HTTP connection, as a JSON Schema a connector can declare as its own.

:func:`connection_schema` describes ``base_url``, ``auth``, ``timeout``, ``headers``,
``verify`` and ``redirect_origins``, which :meth:`HttpSession.from_options
<connectors.httpkit.HttpSession.from_options>` reads, so a connector built on the kit
takes the same connection options as the http connector, and :func:`lint_connection`
warns about the same risks.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from connectors.base import Lint


def tagged_schema(
    what: str, variants: dict[str, dict[str, dict[str, Any]]], required: dict[str, list[str]]
) -> dict[str, Any]:
    """An object whose ``type`` picks the variant; each variant lists its own options.

    Written with if/then rather than oneOf so a mistake is reported precisely ("no option
    'tokn'", "'next' is required") instead of "not valid under any of the given schemas".
    """
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": list(variants), "description": f"Kind of {what}."}},
        "allOf": [
            {
                "if": {"required": ["type"], "properties": {"type": {"const": kind}}},
                "then": {
                    "additionalProperties": False,
                    "required": required.get(kind, []),
                    "properties": {
                        "type": {"const": kind, "description": f"Kind of {what}."},
                        **fields,
                    },
                },
            }
            for kind, fields in variants.items()
        ],
    }


def text(description: str, **extra: Any) -> dict[str, Any]:
    """A string option with its description."""
    return {"type": "string", "description": description, **extra}


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

_CONNECTION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["base_url"],
    "properties": {
        "base_url": {
            "type": "string",
            "pattern": "^https?://",
            "description": "Root URL of the API; call and read paths are appended to its "
            "path (a query string in it is kept). Requests and credentials go only to "
            "its origin (scheme, host and port).",
        },
        "auth": {
            **tagged_schema(
                "authentication",
                {
                    "bearer": {"token": text("Sent as 'Authorization: Bearer <token>'.")},
                    "basic": {
                        "username": text("Basic auth user name."),
                        "password": text("Basic auth password."),
                    },
                    "header": {
                        "name": text("Header name, e.g. X-Api-Key."),
                        "value": text("Header value."),
                    },
                },
                required={
                    "bearer": ["token"],
                    "basic": ["username", "password"],
                    "header": ["name", "value"],
                },
            ),
            "description": "Credentials sent with every request (only to base_url's origin).",
        },
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 30,
            "description": "Seconds to wait to connect, and for each read or write.",
        },
        "headers": {**STRING_MAP, "description": "Headers sent with every request."},
        "verify": {
            "type": ["boolean", "string"],
            "default": True,
            "description": "Verify TLS certificates (true), skip it (false, warned "
            "about), or the path of a CA bundle to verify against.",
        },
        "redirect_origins": {
            "type": "array",
            "items": {"type": "string", "pattern": "^https?://"},
            "description": "Other origins a redirect may lead to, e.g. "
            "['https://files.example.com'] for downloads; such a redirect is followed "
            "without the connection's credentials and headers. A redirect to any other "
            "origin is an error.",
        },
    },
}


def connection_schema(**properties: dict[str, Any]) -> dict[str, Any]:
    """The HTTP connection options' schema (a fresh copy), with ``properties`` of your own
    connector added, e.g. ``connection_schema(shop=text("Shop handle."))``."""
    schema = copy.deepcopy(_CONNECTION)
    schema["properties"].update(properties)
    return schema


def lint_connection(options: Mapping[str, Any]) -> list[Lint]:
    """Warnings about connection options as written: ``verify: false``."""
    if options.get("verify") is False:
        return [
            Lint(
                ("verify",),
                "verify: false turns off TLS certificate checks: anyone on the network "
                "path can read and change the requests, credentials included; give "
                "verify the path of the CA bundle that signed the server's certificate",
            )
        ]
    return []
