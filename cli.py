"""The ``flowyard`` command line: parse, call the engine API, render. Nothing else.

Logging is configured here and only here (the run log goes to a file per run in
the state directory; ``--log-stderr`` mirrors it to stderr). The engine is
imported inside each command so that ``flowyard --help`` starts fast.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from engine import Engine

EXIT_INVALID = 2
EXIT_CANNOT_PROCEED = 3
EXIT_STATE = 4

app = typer.Typer(
    name="flowyard",
    help="Run declarative retail integration flows: validated before they run, every side "
    "effect applied once, failures parked for replay, every record traceable.\n\n"
    "Exit codes: 0 all records final and none dead-lettered or held for review; 1 some "
    "records need a person (dead-lettered or in review); 2 the flow or the command line is "
    "invalid; 3 the run could not proceed; 4 the state file (or the run-log folder) cannot "
    "be used: damaged, read-only, not a flowyard state, or the disk is full.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help and error text: rendering them with rich costs its import, which was more
    # than half of `flowyard --help` (0.31 s -> 0.15 s, docs/benchmarks.md).
    rich_markup_mode=None,
)
runs_app = typer.Typer(
    help="List runs and show one run's records.", no_args_is_help=True, rich_markup_mode=None
)
dlq_app = typer.Typer(
    help="Dead letters: list, show, replay and purge parked records.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
review_app = typer.Typer(
    help="Review items: records held for a person (a review step, a reconcile that found a "
    "difference). List, show and close them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(runs_app, name="runs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(review_app, name="review")

OutputOpt = typer.Option(
    "table", "--output", "-o", help="table (for people) or json.", case_sensitive=False
)
StateOpt = typer.Option(
    None,
    "--state",
    envvar="FLOWYARD_STATE",
    help="State file [default: .flowyard/state.db; env FLOWYARD_STATE].",
)


def _out(value: str) -> str:
    if value not in ("table", "json"):
        _fail(f"--output must be table or json, not {value!r}", EXIT_INVALID)
    return value


def _fail(message: str, code: int) -> None:
    typer.echo(f"flowyard: {message}", err=True)
    raise typer.Exit(code)


def _engine(state: Path | None, **kw: Any) -> Engine:
    import os

    from engine import Engine

    ttl = os.environ.get("FLOWYARD_LEASE_TTL")
    if ttl:
        try:
            seconds = float(ttl)
        except ValueError:
            seconds = 0.0
        if not seconds > 0:
            _fail(f"FLOWYARD_LEASE_TTL must be seconds above 0, not {ttl!r}", EXIT_INVALID)
        kw["lease_ttl"] = seconds
    return Engine(state=state, **kw)


def _json(value: Any) -> None:
    from engine.store import dumps

    typer.echo(json.dumps(json.loads(dumps(value)), indent=2, ensure_ascii=False))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        typer.echo("(none)")
        return
    cells = [[str(r.get(c, "") if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _print_problems(problems: list, output: str) -> None:
    if output == "json":
        _json([p.to_dict() for p in problems])
        return
    for p in problems:
        typer.echo(str(p), err=p.severity == "error")


# -- definitions ---------------------------------------------------------------------------------
@app.command()
def validate(
    paths: list[Path] = typer.Argument(..., help="Flow files or folders holding flows."),
    output: str = OutputOpt,
) -> None:
    """Check flows without running them; every problem is reported with file:line:column.

    Missing ${env:NAME} variables are warnings here (they are errors when running).
    Exit 0 when every flow is valid, 2 when any is not.
    """
    output = _out(output)
    from engine import Engine

    eng = Engine(state=Path("/nonexistent/flowyard-validate.db"))
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.y*ml") if _is_flow_file(p))
        else:
            files.append(path)
    problems = []
    for file in files:
        if not file.exists():
            from engine import Problem

            problems.append(Problem(str(file), None, None, "", "no such file"))
            continue
        problems += eng.check(file)
    errors = [p for p in problems if p.severity == "error"]
    _print_problems(problems, output)
    if output == "table":
        bad = {p.file for p in errors}
        typer.echo(
            f"{len(files) - len(bad)} of {len(files)} flow(s) valid"
            + (f"; {len(errors)} error(s)" if errors else ""),
            err=bool(errors),
        )
    raise typer.Exit(EXIT_INVALID if errors or not files else 0)


def _is_flow_file(path: Path) -> bool:
    """In a folder, a flow file is YAML with a top-level ``flow:`` key (mappings are not)."""
    try:
        with path.open(encoding="utf-8") as fh:
            return any(line.startswith("flow:") for line in fh)
    except (OSError, UnicodeDecodeError):
        return False


@app.command()
def schema() -> None:
    """Print the flow language's JSON Schema (draft-07) for editors' YAML language servers."""
    from engine import Engine

    typer.echo(json.dumps(Engine.schema(), indent=2))


@app.command()
def connectors(output: str = OutputOpt) -> None:
    """List the installed connectors, their roles and options; broken plugins are reported."""
    output = _out(output)
    from connectors import Registry

    registry = Registry()
    rows = []
    for name in registry.names():
        cls = registry.get(name)
        if cls is None:
            continue
        rows.append(
            {
                "name": name,
                "roles": cls.roles(),
                "description": cls.description,
                "options": sorted(cls.options_schema.get("properties", {})),
                "source_options": sorted((cls.read_schema or {}).get("properties", {})),
                "call_options": sorted((cls.call_schema or {}).get("properties", {})),
            }
        )
    broken = registry.broken()
    if output == "json":
        _json({"connectors": rows, "broken": broken})
        return
    for row in rows:
        typer.echo(f"{row['name']}  ({', '.join(row['roles'])})  {row['description']}")
        for label in ("options", "source_options", "call_options"):
            if row[label]:
                typer.echo(f"    {label.replace('_', ' ')}: {', '.join(row[label])}")
    for name, reason in broken.items():
        typer.echo(f"{name}  BROKEN: {reason}", err=True)


# -- running -------------------------------------------------------------------------------------
def _vars(pairs: list[str], files: list[Path] = ()) -> dict[str, Any]:
    """The run's vars: each ``--vars FILE`` in turn, then the ``--var`` pairs over them."""
    out: dict[str, Any] = {}
    for file in files:
        out.update(_vars_file(file))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--var takes KEY=VALUE, got {pair!r}", EXIT_INVALID)
        out[key] = value
    return out


def _vars_file(path: Path) -> dict[str, Any]:
    """A ``--vars`` file: a YAML or JSON mapping of names to values of any type."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        _fail(f"--vars {path}: cannot read it: {reason}", EXIT_INVALID)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        _fail(f"--vars {path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}", EXIT_INVALID)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        _fail(f"--vars {path}{where}: invalid YAML: {problem}", EXIT_INVALID)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        _fail(
            f"--vars {path}: expected a mapping of variable names to values "
            "(name: value lines, or a JSON object)",
            EXIT_INVALID,
        )
    return data


VarsFileOpt = typer.Option(
    [],
    "--vars",
    metavar="FILE",
    help="Read flow variables from a YAML or JSON mapping (values of any type: numbers, "
    "lists, mappings); --var pairs override it. Repeatable.",
)


class _Progress:
    """A one-line counter on a terminal; silent when stderr is not one."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.counts: dict[str, int] = {}
        self.last = 0.0

    def __call__(self, event: dict) -> None:
        if not self.enabled or event.get("event") != "record":
            return
        self.counts[event["outcome"]] = self.counts.get(event["outcome"], 0) + 1
        now = time.monotonic()
        if now - self.last > 0.2:
            self.last = now
            text = "  ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
            sys.stderr.write(f"\r{sum(self.counts.values())} records: {text}\033[K")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.counts:
            sys.stderr.write("\r\033[K")


def _run_and_report(action: Any, output: str) -> None:
    from engine import FlowError, RunError, StateError

    try:
        result = action()
    except FlowError as exc:
        _print_problems(exc.problems, "table")
        raise typer.Exit(EXIT_INVALID) from None
    except FileNotFoundError as exc:  # the state file's folder does not exist
        _fail(str(exc), EXIT_INVALID)
    except StateError as exc:
        _fail(str(exc), EXIT_STATE)
    except RunError as exc:
        _fail(str(exc), EXIT_CANNOT_PROCEED)
    if result.status == "failed":  # cron mails stderr: the reason goes there too, one line
        typer.echo(f"flowyard: {result.message}", err=True)
    if output == "json":
        _json(result.to_dict())
    else:
        counts = "  ".join(f"{k} {v}" for k, v in result.counts.items() if v or k == "read")
        label = "dry run" if result.dry_run else "run"
        typer.echo(
            f"{label} {result.run_id} of {result.flow}: {result.status} in "
            f"{result.duration_s:.2f} s\n  {counts}"
        )
        if result.message:
            typer.echo(f"  {result.message}")
        if result.counts.get("dead_lettered") and not result.dry_run:
            typer.echo("  see them with: flowyard dlq list")
        if result.counts.get("review") and not result.dry_run:
            typer.echo("  held for review: flowyard review list")
        for send in result.would_send:
            typer.echo(
                f"  would send {send['step']} via {send['connection']} key "
                f"{send['idempotency_key']}: {json.dumps(send['request'], default=str)}"
            )
    raise typer.Exit(result.exit_code)


@app.command()
def run(
    flow: Path = typer.Argument(..., help="The flow file."),
    state: Path | None = StateOpt,
    var: list[str] = typer.Option([], "--var", help="Set a flow variable: KEY=VALUE (repeat)."),
    vars_file: list[Path] = VarsFileOpt,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Perform no side effect and write no state; show what would be sent, secrets masked.",
    ),
    wait_lock: float = typer.Option(
        0.0,
        "--wait-lock",
        metavar="SECONDS",
        help="Wait this long for another run of the flow to end instead of exiting 3 at once.",
    ),
    log_stderr: bool = typer.Option(
        False, "--log-stderr", help="Also write the run log's JSON lines to stderr."
    ),
    output: str = OutputOpt,
) -> None:
    """Run a flow: read its source, take each record through the steps, report the counts.

    Safe to start from cron: it resumes from its cursor and never overlaps itself.
    Exit 0 all records final and none dead-lettered or held for review, 1 some records
    need a person (dead-lettered or in review), 2 the flow or command line is invalid
    (or the --state folder does not exist), 3 the run could not proceed, 4 the state file
    cannot be used (damaged, read-only, not a flowyard state, disk full).
    """
    output = _out(output)
    run_vars = _vars(var, vars_file)
    progress = _Progress()
    eng = _engine(state, listeners=[progress], log_stderr=log_stderr)
    try:
        _run_and_report(
            lambda: eng.run(flow, vars=run_vars, dry_run=dry_run, wait_lock=wait_lock), output
        )
    finally:
        progress.close()


# -- what happened -------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's runs."),
    limit: int = typer.Option(20, "--limit", help="How many, newest first."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """List recent runs with their status and counts."""
    output = _out(output)
    with _store(state) as store:
        rows = store.list_runs(flow, limit)
    if output == "json":
        _json(rows)
        return
    _table(
        [
            {
                **r,
                "started": _when(r["started_at"]),
                "counts": " ".join(f"{k}={v}" for k, v in (r["counts"] or {}).items() if v),
            }
            for r in rows
        ],
        ["run_id", "flow", "kind", "started", "status", "exit_code", "counts"],
    )


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="A run id (a unique prefix is enough)."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show one run and what happened to each of its records."""
    output = _out(output)
    with _store(state) as store:
        info = store.get_run(run_id)
        if info is None:
            _fail(f"no run {run_id!r} in {store.path}", EXIT_INVALID)
        records = store.run_records(info["run_id"])
    if output == "json":
        _json({**info, "records": records})
        return
    typer.echo(
        f"run {info['run_id']} of {info['flow']} ({info['kind']}): {info['status']}, "
        f"exit {info['exit_code']}, started {_when(info['started_at'])}, "
        f"ended {_when(info['ended_at'])}"
    )
    if info.get("message"):
        typer.echo(f"  {info['message']}")
    _table([{**r, "path": _path(r["steps"])} for r in records], ["record_key", "outcome", "path"])


def _path(steps: list | None) -> str:
    return " > ".join(f"{s[0]}:{s[1]}" for s in steps or [])


@app.command()
def trace(
    record_key: str = typer.Argument(..., help="The record key, e.g. an order id."),
    flow: str | None = typer.Option(None, "--flow", help="Only this flow."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show every run and step that touched a record, with outcomes and responses."""
    output = _out(output)
    with _store(state) as store:
        rows = store.trace(record_key, flow)
    if output == "json":
        _json(rows)
        return
    if not rows:
        typer.echo(f"no record {record_key!r} in any run")
        raise typer.Exit(1)
    for r in rows:
        typer.echo(
            f"{_when(r['at'])}  {r['flow']}  {r['kind'] or 'run'} {r['run_id']}  {r['outcome']}"
        )
        for step in r["steps"] or []:
            extra = f"  {json.dumps(step[2], default=str)}" if len(step) > 2 else ""
            typer.echo(f"    {step[0]}: {step[1]}{extra}")


class _store:
    """Open the state store for reading commands; a missing file is a clear error."""

    def __init__(self, state: Path | None):
        from engine import default_state

        self.path = state or default_state()

    def __enter__(self) -> Any:
        from engine.store import Store

        if not self.path.exists():
            _fail(f"no state file at {self.path} (run a flow first, or pass --state)", EXIT_INVALID)
        self.store = Store(self.path)  # a StateError is reported by main()
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


# -- dead letters --------------------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's dead letters."),
    all_: bool = typer.Option(False, "--all", help="Include replayed ones, not only open."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """List dead letters: the record, the step that failed and why."""
    output = _out(output)
    with _store(state) as store:
        letters = store.dead_letters(flow=flow, status=None if all_ else "open")
    if output == "json":
        _json([d.to_dict() for d in letters])
        return
    _table(
        [
            {**d.to_dict(), "when": _when(d.at), "error": f"{d.error_class}: {d.message}"[:90]}
            for d in letters
        ],
        ["id", "flow", "record_key", "step", "status", "when", "error"],
    )


@dlq_app.command("show")
def dlq_show(
    id: int = typer.Argument(..., help="The dead letter's id."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show one dead letter whole: record, step, error, attempts, run."""
    output = _out(output)
    with _store(state) as store:
        letter = store.dead_letter(id)
    if letter is None:
        _fail(f"no dead letter {id}", EXIT_INVALID)
    if output == "json":
        _json(letter.to_dict())
        return
    d = letter.to_dict()
    for key in (
        "id",
        "flow",
        "record_key",
        "step",
        "error_class",
        "message",
        "attempts",
        "run_id",
        "status",
        "replay_run",
        "line",
        "raw",
    ):
        if d.get(key) is not None:
            typer.echo(f"{key}: {d[key]}")
    typer.echo(f"at: {_when(letter.at)}")
    if letter.record is not None:
        typer.echo("record:")
        from engine.store import dumps

        typer.echo(json.dumps(json.loads(dumps(letter.record)), indent=2))


@dlq_app.command("replay")
def dlq_replay(
    flow: Path = typer.Argument(..., help="The flow file (as it is now: fixes apply)."),
    ids: list[int] = typer.Option([], "--id", help="Replay only these dead letters (repeat)."),
    state: Path | None = StateOpt,
    var: list[str] = typer.Option([], "--var", help="Set a flow variable: KEY=VALUE."),
    vars_file: list[Path] = VarsFileOpt,
    from_start: bool = typer.Option(
        False,
        "--from-start",
        help="Replay from the flow's first step with the record as the source delivered it.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be sent; change nothing."
    ),
    output: str = OutputOpt,
) -> None:
    """Replay a flow's open dead letters, with the flow as it is now.

    Each record goes back to its first lookup (enrich) and looks everything up again,
    so a fix made in the target since applies; a record that looked nothing up restarts
    at the step that failed. --from-start replays from the first step with the record as
    the source delivered it. Sends go through the same idempotency keys, so replaying
    twice is harmless.
    """
    output = _out(output)
    run_vars = _vars(var, vars_file)
    eng = _engine(state)

    def action() -> Any:
        try:
            return eng.replay(
                flow, ids or None, vars=run_vars, dry_run=dry_run, from_start=from_start
            )
        except ValueError as exc:  # an id that is not an open dead letter of the flow
            _fail(str(exc), EXIT_INVALID)

    _run_and_report(action, output)


@dlq_app.command("purge")
def dlq_purge(
    ids: list[int] = typer.Option([], "--id", help="Purge these dead letters (repeat)."),
    flow: str | None = typer.Option(None, "--flow", help="Purge this flow's dead letters."),
    all_: bool = typer.Option(False, "--all", help="Purge every dead letter."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Delete dead letters for good (by id, by flow, or all)."""
    output = _out(output)
    if not (ids or flow or all_):
        _fail("say what to purge: --id N, --flow NAME or --all", EXIT_INVALID)
    with _store(state) as store:
        n = store.purge_dead_letters(ids or None, flow)
    if output == "json":
        _json({"purged": n})
    else:
        typer.echo(f"purged {n} dead letter(s)")


# -- review items --------------------------------------------------------------------------------
@review_app.command("list")
def review_list(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's review items."),
    queue: str | None = typer.Option(None, "--queue", help="Only this queue's (e.g. finance)."),
    all_: bool = typer.Option(
        False, "--all", help="Include resolved and closed ones, not only open."
    ),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """List records held for review: queue, record, step and reason."""
    output = _out(output)
    with _store(state) as store:
        items = store.reviews(flow=flow, queue=queue, status=None if all_ else "open")
    if output == "json":
        _json([item.to_dict() for item in items])
        return
    _table(
        [{**item.to_dict(), "when": _when(item.at), "reason": item.reason[:90]} for item in items],
        ["id", "flow", "queue", "record_key", "step", "status", "when", "reason"],
    )


@review_app.command("show")
def review_show(
    id: int = typer.Argument(..., help="The review item's id."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show one review item whole: reason, figures, record, and who closed it."""
    output = _out(output)
    with _store(state) as store:
        item = store.review(id)
    if item is None:
        _fail(f"no review item {id}", EXIT_INVALID)
    if output == "json":
        _json(item.to_dict())
        return
    d = item.to_dict()
    for key in ("id", "flow", "queue", "record_key", "step", "reason", "run_id", "status"):
        if d.get(key) is not None:
            typer.echo(f"{key}: {d[key]}")
    typer.echo(f"at: {_when(item.at)}")
    if item.resolved_run:
        typer.echo(f"resolved by run: {item.resolved_run}")
    if item.decided_by:
        typer.echo(f"closed by: {item.decided_by} at {_when(item.decided_at)}")
        if item.comment:
            typer.echo(f"comment: {item.comment}")
    from engine.store import dumps

    if item.figures:
        typer.echo("figures:")
        typer.echo(json.dumps(json.loads(dumps(item.figures)), indent=2, ensure_ascii=False))
    if item.record is not None:
        typer.echo("record:")
        typer.echo(json.dumps(json.loads(dumps(item.record)), indent=2, ensure_ascii=False))


@review_app.command("close")
def review_close(
    id: int = typer.Argument(..., help="The review item's id."),
    by: str = typer.Option(..., "--by", help="Who decided (kept with the item)."),
    comment: str | None = typer.Option(None, "--comment", help="Why, for whoever reads it later."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Close an open review item: who closed it, when and why are kept.

    Closing records a person's decision; it does not send the record anywhere. A record
    that the source delivers again and that goes through closes its item by itself
    (resolved).
    """
    output = _out(output)
    with _store(state) as store:
        if not by.strip():
            _fail("--by must name who closes the item", EXIT_INVALID)
        try:
            item = store.close_review(id, by.strip(), comment)
        except (LookupError, ValueError) as exc:
            _fail(str(exc), EXIT_INVALID)
    if output == "json":
        _json(item.to_dict())
    else:
        typer.echo(f"closed review item {item.id} ({item.record_key}) by {item.decided_by}")


@app.command()
def prune(
    older_than: str = typer.Option(..., "--older-than", help="Age, e.g. 30d, 12h."),
    flow: str | None = typer.Option(None, "--flow", help="Only this flow."),
    state: Path | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Delete runs, traces, closed dead letters and done keys older than the age given.

    Open dead letters are kept. A record re-sent by its source after its key was
    pruned is sent again: keep the retention longer than your sources re-deliver.
    """
    output = _out(output)
    from engine.loader import parse_duration

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        _fail(str(exc), EXIT_INVALID)
    with _store(state) as store:
        counts = store.prune(seconds, flow)
    if output == "json":
        _json(counts)
    else:
        typer.echo("pruned " + ", ".join(f"{v} {k}" for k, v in counts.items()))


def main() -> None:
    """Console-script entry point: a fault of the state file is one line and exit 4, any
    other unexpected error one line and exit 3 (the traceback with FLOWYARD_DEBUG=1)."""
    import os

    from engine import StateError

    try:
        app()
    except StateError as exc:
        typer.echo(f"flowyard: {exc}", err=True)
        sys.exit(EXIT_STATE)
    except Exception as exc:
        if os.environ.get("FLOWYARD_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        typer.echo(
            f"flowyard: unexpected {type(exc).__name__}: {text} (a bug; run again with "
            "FLOWYARD_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(EXIT_CANNOT_PROCEED)


if __name__ == "__main__":
    main()
