"""``${env:NAME}`` in a flow's options: a reference the flow's own text makes, never text
that is scanned for later.

A flow says where a secret goes by writing ``${env:NAME}`` in the options of a
connection, of the source or of a send or enrich step. Each reference is turned, once and
before any record exists, into a template expression that reads ``NAME`` from a context
entry that only the engine fills (:data:`ENV_CONTEXT`). So a secret is put where the
flow's text put the reference, and nowhere else: text that arrives later (a record's
field, a variable, a lookup's answer) is data forever. A record holding
``"${env:ERP_TOKEN}"`` is sent as those 17 characters.

Inside ``{{ ... }}`` a reference is part of an expression, not of the text around it; it
stays literal there (the loader says so), as it would in any other Jinja expression.
"""

from __future__ import annotations

import re
from typing import Any

from engine.flow_connections import ENV_REF

#: The context entry that holds the run's environment values. The ``fy_`` prefix marks
#: names the engine makes for itself; a flow's own templates cannot read it (the loader
#: refuses the name), only the references below can.
ENV_CONTEXT = "fy_env"

# Jinja's blocks: expressions, statements and comments. Text between them is literal.
_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def env_references(value: Any) -> Any:
    """``value`` with every ``${env:NAME}`` in its literal text made a reference to the run's
    value of ``NAME`` (strings, and dicts and lists of them; keys are left alone)."""
    if isinstance(value, str):
        return _text(value) if "${env:" in value else value
    if isinstance(value, dict):
        return {k: env_references(v) for k, v in value.items()}
    if isinstance(value, list):
        return [env_references(v) for v in value]
    return value


def references_in_expressions(value: Any) -> list[str]:
    """The ``${env:NAME}`` written inside ``{{ ... }}`` in ``value``: they stay literal."""
    if isinstance(value, str):
        return [
            ref.group(0)
            for block in _BLOCK.finditer(value)
            for ref in ENV_REF.finditer(block.group(0))
        ]
    if isinstance(value, dict):
        return [ref for v in value.values() for ref in references_in_expressions(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in references_in_expressions(v)]
    return []


def _text(text: str) -> str:
    out, end = [], 0
    for block in _BLOCK.finditer(text):
        out.append(_literal(text[end : block.start()]))
        out.append(block.group(0))
        end = block.end()
    out.append(_literal(text[end:]))
    return "".join(out)


def _literal(text: str) -> str:
    return ENV_REF.sub(lambda m: "{{ " + f"{ENV_CONTEXT}[{m.group(1)!r}]" + " }}", text)
