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

Where the values come from (:func:`resolve`, when a run starts; :func:`missing` tells the
loader what would be missing):

* ``${env:NAME}``: the process environment, else a ``.env`` file (``NAME=value`` lines) in
  the flow file's folder, else one in the working directory. The environment wins.
* ``${file:PATH}``: the text of the file at ``PATH`` (a container's or systemd's secret
  file, ``/run/secrets/erp_password``), less one trailing newline. A relative path is
  taken from the flow file's folder; a leading ``$NAME/`` is the value of ``NAME``
  (``${file:$CREDENTIALS_DIRECTORY/erp_password}``, as systemd's ``LoadCredential=``
  gives it).

Either way the value is one of the run's secrets: masked wherever flowyard shows or
stores anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import FlowError, Problem
from engine.load_connections import ENV_REF

if TYPE_CHECKING:
    from engine.model import Flow

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
        return _text(value) if "${" in value else value
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


# -- where the values come from ----------------------------------------------------------------
FILE_PREFIX = "file:"  # the names of ${file:PATH} references: "file:PATH"
DOTENV = ".env"
_MAX_SECRET_FILE = 64 * 1024  # bytes; a bigger file is not a secret (a wrong path, likely)
_DOTENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
_LEADING_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)(?=/|$)")


def dotenv(folder: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of ``folder/.env`` ({} without one).

    ``export NAME=value`` is read too; a value may be quoted (``'...'`` as written,
    ``"..."`` with ``\\n`` and ``\\"``); ``#`` starts a comment on its own line or after
    an unquoted value. Lines that are none of these are skipped.
    """
    try:
        text = (folder / DOTENV).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _DOTENV_LINE.fullmatch(line.strip())
        if match is None or line.lstrip().startswith("#"):
            continue
        name, raw = match.groups()
        if raw[:1] == "'" and raw.rfind("'") > 0:
            value = raw[1 : raw.rfind("'")]
        elif raw[:1] == '"' and raw.rfind('"') > 0:
            value = raw[1 : raw.rfind('"')].replace("\\n", "\n").replace('\\"', '"')
        else:
            value = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
        values[name] = value
    return values


def _environment(folder: Path) -> Mapping[str, str]:
    """The process environment over ``.env`` in the working directory over the flow's."""
    merged = {**dotenv(folder)}
    if Path.cwd().resolve() != folder.resolve():
        merged = {**merged, **dotenv(Path.cwd())}
    return {**merged, **os.environ}


def _file_path(name: str, folder: Path, environ: Mapping[str, str]) -> tuple[Path | None, str]:
    """The path of ``file:PATH`` (its leading ``$NAME`` expanded), or None and why not."""
    text = name[len(FILE_PREFIX) :]
    lead = _LEADING_VAR.match(text)
    if lead:
        value = environ.get(lead.group(1))
        if not value:
            return None, (
                f"secret file {text}: environment variable {lead.group(1)} is not set, so "
                "the path is not known"
            )
        text = value + text[lead.end() :]
    path = Path(text).expanduser()
    return (path if path.is_absolute() else folder / path), ""


def _read_secret(name: str, folder: Path, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The value of one reference, or None and the reason it has none."""
    if not name.startswith(FILE_PREFIX):
        if name in environ:
            return environ[name], ""
        return None, f"environment variable {name} is not set"
    path, why = _file_path(name, folder, environ)
    if path is None:
        return None, why
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_SECRET_FILE + 1)
    except OSError as exc:
        return None, f"secret file {path} cannot be read: {exc.strerror or exc}"
    if len(data) > _MAX_SECRET_FILE:
        return None, f"secret file {path} is larger than 64 KiB: is it the right file?"
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"secret file {path} is not UTF-8 text"
    value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if not value:
        return None, f"secret file {path} is empty"
    return value, ""


def missing(name: str, folder: Path) -> str | None:
    """Why the reference ``name`` (``NAME`` or ``file:PATH``) of a flow in ``folder`` has
    no value now (``environment variable X is not set``), or None when it has one."""
    return _read_secret(name, folder, _environment(folder))[1] or None


def resolve(flow: Flow) -> dict[str, str]:
    """The value of every ``${env:NAME}`` and ``${file:PATH}`` of ``flow``, by name.

    Raises :class:`FlowError` naming each one that has none, at the place in the flow
    where the loader found it (its warning).
    """
    folder = Path(flow.file).resolve().parent
    environ = _environment(folder)
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for name in sorted(flow.env_names):
        value, why = _read_secret(name, folder, environ)
        if value is not None:
            values[name] = value
            continue
        where = next((p for p in flow.warnings if p.message.startswith(why)), None)
        problems.append(
            Problem(
                flow.file,
                where.line if where else None,
                where.column if where else None,
                where.path if where else "",
                f"{why}; the flow needs it to run",
            )
        )
    if problems:
        raise FlowError(problems)
    return values
