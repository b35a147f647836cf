"""The ``flowyard`` command line: parse, call the engine API, render. Nothing else.

Logging is configured here and only here (the run log goes to a file per run in
the state directory; ``--log-stderr`` mirrors it to stderr). The engine is
imported inside each command so that ``flowyard --help`` starts fast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from engine import Engine, Problem, RunResult

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
approvals_app = typer.Typer(
    help="Approvals: records stopped at an approve step until a person decides. List, show, "
    "approve (the record resumes after the step) and reject (its sends are compensated, "
    "it takes on_reject).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
queue_app = typer.Typer(
    help="Work queues: every dead letter, review item and approval waits in a queue with "
    "an owner. Show their depth and age; escalate the items past due.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(runs_app, name="runs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(review_app, name="review")
app.add_typer(approvals_app, name="approvals")
app.add_typer(queue_app, name="queue")


def _output(value: str) -> str:
    """``--output`` of every command: table or json, anything else exits 2."""
    if value not in ("table", "json"):
        _fail(f"--output must be table or json, not {value!r}", EXIT_INVALID)
    return value


OutputOpt = typer.Option(
    "table",
    "--output",
    "-o",
    help="table (for people) or json.",
    case_sensitive=False,
    callback=_output,
)
StateOpt = typer.Option(
    None,
    "--state",
    envvar="FLOWYARD_STATE",
    help="State file, or a postgresql:// URL of a database several machines share "
    "[default: .flowyard/state.db; env FLOWYARD_STATE].",
)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"flowyard: {message}", err=True)
    raise typer.Exit(code)


def _engine(state: str | None, **kw: Any) -> Engine:
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


def _reader(state: str | None) -> Engine:
    """The engine of a command that reads the state file; a missing file is a clear error."""
    from engine import Engine

    eng = Engine(state=state)
    if not eng.state.exists():
        _fail(f"no state file at {eng.state} (run a flow first, or pass --state)", EXIT_INVALID)
    return eng


# -- rendering: every command's output goes through _render ---------------------------------------
def _render(output: str, data: Any, table: Callable[[], None]) -> None:
    """Print ``data`` as JSON (``--output json``), or call ``table`` to print it for people."""
    if output == "json":
        typer.echo(_json_text(data))
    else:
        table()


def _json_text(value: Any, ensure_ascii: bool = False) -> str:
    """Indented JSON with Decimals as exact strings (as the state keeps them)."""
    from engine import dumps

    return json.dumps(json.loads(dumps(value)), indent=2, ensure_ascii=ensure_ascii)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        typer.echo("(none)")
        return
    cells = [[str(r.get(c, "") if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _fields(data: dict[str, Any], names: tuple[str, ...]) -> None:
    """``name: value`` lines of the fields that have a value."""
    for name in names:
        if data.get(name) is not None:
            typer.echo(f"{name}: {data[name]}")


def _print_problems(problems: list[Problem], output: str) -> None:
    def table() -> None:
        for p in problems:
            typer.echo(str(p), err=p.severity == "error")

    _render(output, [p.to_dict() for p in problems], table)


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
    from engine import Engine

    eng = Engine(state=Path("/nonexistent/flowyard-validate.db"))
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.y*ml") if _is_flow_file(p))
        else:
            files.append(path)
    problems: list[Problem] = []
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

    def table() -> None:
        for row in rows:
            typer.echo(f"{row['name']}  ({', '.join(row['roles'])})  {row['description']}")
            for label in ("options", "source_options", "call_options"):
                if row[label]:
                    typer.echo(f"    {label.replace('_', ' ')}: {', '.join(row[label])}")
        for name, reason in broken.items():
            typer.echo(f"{name}  BROKEN: {reason}", err=True)

    _render(output, {"connectors": rows, "broken": broken}, table)


# -- running -------------------------------------------------------------------------------------
def _vars(pairs: list[str], files: Sequence[Path] = ()) -> dict[str, Any]:
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


VarOpt = typer.Option([], "--var", help="Set a flow variable: KEY=VALUE (repeat).")
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

    def __call__(self, event: dict[str, Any]) -> None:
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


def _run_and_report(action: Callable[[], RunResult], output: str) -> None:
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
    _render(output, result.to_dict(), lambda: _summary(result))
    raise typer.Exit(result.exit_code)


def _summary(result: RunResult) -> None:
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
        typer.echo("  held for review: flowyard review list (approvals: flowyard approvals list)")
    for send in result.would_send:
        typer.echo(
            f"  would send {send['step']} via {send['connection']} key "
            f"{send['idempotency_key']}: {json.dumps(send['request'], default=str)}"
        )
    for letter in result.would_dead_letter:
        typer.echo(
            f"  would dead-letter {letter['record_key']} at {letter['step']}: {letter['error']}"
        )
    for item in result.would_review:
        typer.echo(
            f"  would hold {item['record_key']} for review ({item['queue']}) at "
            f"{item['step']}: {item['reason']}"
        )


@app.command()
def run(
    flow: Path = typer.Argument(..., help="The flow file."),
    state: str | None = StateOpt,
    var: list[str] = VarOpt,
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
    metrics_file: Path | None = typer.Option(
        None,
        "--metrics-file",
        metavar="FILE",
        help="After the run, write its figures and the state's gauges in the Prometheus "
        "text format to FILE (for node_exporter's textfile collector: a .prom file).",
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
    run_vars = _vars(var, vars_file)
    progress = _Progress()
    # a listener makes every record's events be built (engine/runlog.py): only on a terminal
    eng = _engine(state, listeners=[progress] if progress.enabled else [], log_stderr=log_stderr)

    def action() -> RunResult:
        result = eng.run(flow, vars=run_vars, dry_run=dry_run, wait_lock=wait_lock)
        if metrics_file is not None and not dry_run:
            _write_metrics(eng, metrics_file, result)
        return result

    try:
        _run_and_report(action, output)
    finally:
        progress.close()


@app.command()
def worker(
    flow: Path = typer.Argument(..., help="The flow file."),
    state: str | None = StateOpt,
    var: list[str] = VarOpt,
    vars_file: list[Path] = VarsFileOpt,
    until_empty: bool = typer.Option(
        False,
        "--until-empty",
        help="Exit once this worker has read the source to its end and no record waits "
        "(a batch); without it, work until SIGTERM or Ctrl-C.",
    ),
    poll: float = typer.Option(
        1.0,
        "--poll",
        metavar="SECONDS",
        help="How often to read the source again and ask for records when idle.",
    ),
    log_stderr: bool = typer.Option(
        False, "--log-stderr", help="Also write the run log's JSON lines to stderr."
    ),
    output: str = OutputOpt,
) -> None:
    """Work on a flow together with other workers, on this machine or others, through a
    PostgreSQL state (--state postgresql://...).

    One worker at a time reads the source and queues its records; every worker claims
    queued records and takes them through the steps; one key's records stay in order. A
    killed worker's records are taken over by the others once its heartbeat is overdue
    (the lease time, FLOWYARD_LEASE_TTL). SIGTERM or Ctrl-C: finish the records in hand
    and exit. Exit codes as for run; 2 also when the state is a file.
    """
    import signal
    import threading

    run_vars = _vars(var, vars_file)
    stop = threading.Event()
    eng = _engine(state, log_stderr=log_stderr)
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        _run_and_report(
            lambda: eng.work(flow, vars=run_vars, stop=stop, until_empty=until_empty, poll=poll),
            output,
        )
    except ValueError as exc:  # a state file, or a poll that is no number of seconds
        _fail(str(exc), EXIT_INVALID)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- what happened -------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's runs."),
    limit: int = typer.Option(20, "--limit", help="How many, newest first."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """List recent runs with their status and counts."""
    runs = _reader(state).runs(flow, limit)
    _render(
        output,
        [r.to_dict() for r in runs],
        lambda: _table(
            [
                {
                    **r.to_dict(),
                    "started": _when(r.started_at),
                    "counts": " ".join(f"{k}={v}" for k, v in (r.counts or {}).items() if v),
                }
                for r in runs
            ],
            ["run_id", "flow", "kind", "started", "status", "exit_code", "counts"],
        ),
    )


# what `runs show` says of each record (the run, flow and kind are the run's)
_RECORD_FIELDS = ("record_key", "outcome", "steps", "error", "at")


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="A run id (a unique prefix is enough)."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show one run and what happened to each of its records."""
    eng = _reader(state)
    info = eng.get_run(run_id)
    if info is None:
        _fail(f"no run {run_id!r} in {eng.state}", EXIT_INVALID)
    records = [
        {name: getattr(t, name) for name in _RECORD_FIELDS} for t in eng.run_records(info.run_id)
    ]

    def table() -> None:
        typer.echo(
            f"run {info.run_id} of {info.flow} ({info.kind}): {info.status}, "
            f"exit {info.exit_code}, started {_when(info.started_at)}, "
            f"ended {_when(info.ended_at)}"
        )
        if info.message:
            typer.echo(f"  {info.message}")
        _table(
            [{**r, "path": _path(r["steps"])} for r in records], ["record_key", "outcome", "path"]
        )

    _render(output, {**info.to_dict(), "records": records}, table)


def _path(steps: list[list[Any]] | None) -> str:
    return " > ".join(f"{s[0]}:{s[1]}" for s in steps or [])


@app.command()
def trace(
    record_key: str = typer.Argument(..., help="The record key, e.g. an order id."),
    flow: str | None = typer.Option(None, "--flow", help="Only this flow."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show every run and step that touched a record, with outcomes and responses."""
    traces = _reader(state).trace(record_key, flow)

    def table() -> None:
        if not traces:
            typer.echo(f"no record {record_key!r} in any run")
            raise typer.Exit(1)
        for t in traces:
            typer.echo(f"{_when(t.at)}  {t.flow}  {t.kind or 'run'} {t.run_id}  {t.outcome}")
            for step in t.steps or []:
                extra = f"  {json.dumps(step[2], default=str)}" if len(step) > 2 else ""
                typer.echo(f"    {step[0]}: {step[1]}{extra}")

    _render(output, [t.to_dict() for t in traces], table)


# -- dead letters --------------------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's dead letters."),
    all_: bool = typer.Option(False, "--all", help="Include replayed ones, not only open."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """List dead letters: the record, the step that failed and why."""
    letters = _reader(state).dead_letters(flow=flow, status=None if all_ else "open")
    _render(
        output,
        [d.to_dict() for d in letters],
        lambda: _table(
            [
                {**d.to_dict(), "when": _when(d.at), "error": f"{d.error_class}: {d.message}"[:90]}
                for d in letters
            ],
            ["id", "flow", "record_key", "step", "status", "when", "error"],
        ),
    )


@dlq_app.command("show")
def dlq_show(
    id: int = typer.Argument(..., help="The dead letter's id."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show one dead letter whole: record, step, error, attempts, run."""
    letter = _reader(state).dead_letter(id)
    if letter is None:
        _fail(f"no dead letter {id}", EXIT_INVALID)

    def table() -> None:
        _fields(
            letter.to_dict(),
            (
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
            ),
        )
        typer.echo(f"at: {_when(letter.at)}")
        if letter.record is not None:
            typer.echo("record:")
            typer.echo(_json_text(letter.record, ensure_ascii=True))

    _render(output, letter.to_dict(), table)


@dlq_app.command("replay")
def dlq_replay(
    flow: Path = typer.Argument(..., help="The flow file (as it is now: fixes apply)."),
    ids: list[int] = typer.Option([], "--id", help="Replay only these dead letters (repeat)."),
    state: str | None = StateOpt,
    var: list[str] = VarOpt,
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
    run_vars = _vars(var, vars_file)
    eng = _engine(state)

    def action() -> RunResult:
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
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Delete dead letters for good (by id, by flow, or all)."""
    if not (ids or flow or all_):
        _fail("say what to purge: --id N, --flow NAME or --all", EXIT_INVALID)
    n = _reader(state).purge_dead_letters(ids or None, flow)
    _render(output, {"purged": n}, lambda: typer.echo(f"purged {n} dead letter(s)"))


# -- review items --------------------------------------------------------------------------------
@review_app.command("list")
def review_list(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's review items."),
    queue: str | None = typer.Option(None, "--queue", help="Only this queue's (e.g. finance)."),
    all_: bool = typer.Option(
        False, "--all", help="Include resolved and closed ones, not only open."
    ),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """List records held for review: queue, record, step and reason."""
    items = _reader(state).reviews(flow, queue=queue, status=None if all_ else "open")
    _render(
        output,
        [item.to_dict() for item in items],
        lambda: _table(
            [
                {**item.to_dict(), "when": _when(item.at), "reason": item.reason[:90]}
                for item in items
            ],
            ["id", "flow", "queue", "record_key", "step", "status", "when", "reason"],
        ),
    )


@review_app.command("show")
def review_show(
    id: int = typer.Argument(..., help="The review item's id."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show one review item whole: reason, figures, record, and who closed it."""
    item = _reader(state).review(id)
    if item is None:
        _fail(f"no review item {id}", EXIT_INVALID)

    def table() -> None:
        fields = ("id", "flow", "queue", "record_key", "step", "reason", "run_id", "status")
        _fields(item.to_dict(), fields)
        typer.echo(f"at: {_when(item.at)}")
        if item.resolved_run:
            typer.echo(f"resolved by run: {item.resolved_run}")
        if item.decided_by:
            typer.echo(f"closed by: {item.decided_by} at {_when(item.decided_at)}")
            if item.comment:
                typer.echo(f"comment: {item.comment}")
        if item.figures:
            typer.echo("figures:")
            typer.echo(_json_text(item.figures))
        if item.record is not None:
            typer.echo("record:")
            typer.echo(_json_text(item.record))

    _render(output, item.to_dict(), table)


@review_app.command("close")
def review_close(
    id: int = typer.Argument(..., help="The review item's id."),
    by: str = typer.Option(..., "--by", help="Who decided (kept with the item)."),
    comment: str | None = typer.Option(None, "--comment", help="Why, for whoever reads it later."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Close an open review item: who closed it, when and why are kept.

    Closing records a person's decision; it does not send the record anywhere. A record
    that the source delivers again and that goes through closes its item by itself
    (resolved).
    """
    eng = _reader(state)
    if not by.strip():
        _fail("--by must name who closes the item", EXIT_INVALID)
    try:
        item = eng.close_review(id, by, comment)
    except (LookupError, ValueError) as exc:
        _fail(str(exc), EXIT_INVALID)
    _render(
        output,
        item.to_dict(),
        lambda: typer.echo(
            f"closed review item {item.id} ({item.record_key}) by {item.decided_by}"
        ),
    )


# -- approvals and work queues -------------------------------------------------------------------
def _age(seconds: float) -> str:
    from engine import age_text

    return age_text(seconds)


def _at_option(at: str | None) -> float | None:
    """``--at``: an ISO 8601 time (local time when it has no offset), or None for now."""
    if at is None:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(at).timestamp()
    except ValueError:
        _fail(f"--at must be a time such as 2026-12-02T14:00, not {at!r}", EXIT_INVALID)


@approvals_app.command("list")
def approvals_list(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's approvals."),
    queue: str | None = typer.Option(None, "--queue", help="Only this queue's (e.g. finance)."),
    owner: str | None = typer.Option(None, "--owner", help="Only this owner's."),
    older_than: str | None = typer.Option(
        None, "--older-than", help="Only those waiting at least this long (e.g. 4h, 2d)."
    ),
    all_: bool = typer.Option(
        False, "--all", help="Include decided ones (approved, rejected, resolved)."
    ),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """List approvals waiting for a decision: queue, owner, record, age, due time, reason."""
    eng = _reader(state)
    try:
        items = eng.approvals(
            flow,
            queue=queue,
            owner=owner,
            status=None if all_ else "open",
            older_than=older_than,
        )
    except ValueError as exc:  # --older-than that is not an age
        _fail(str(exc), EXIT_INVALID)
    now = time.time()
    _render(
        output,
        [item.to_dict() for item in items],
        lambda: _table(
            [
                {
                    **item.to_dict(),
                    "age": _age(item.age(now)),
                    "due": _when(item.due_at) if item.due_at else "-",
                    "reason": item.reason[:80],
                }
                for item in items
            ],
            ["id", "flow", "queue", "owner", "record_key", "status", "age", "due", "reason"],
        ),
    )


def _show_item(item: Any) -> None:
    fields = (
        "id",
        "kind",
        "flow",
        "queue",
        "owner",
        "category",
        "record_key",
        "step",
        "status",
        "reason",
    )
    _fields(item.to_dict(), fields)
    typer.echo(f"created: {_when(item.created_at)}")
    if item.due_at:
        late = " (past due)" if item.overdue(time.time()) else ""
        typer.echo(f"due: {_when(item.due_at)}{late}")
    if item.escalated_at:
        typer.echo(f"escalated: {_when(item.escalated_at)} (an SLA breach)")
    if item.decided_by:
        typer.echo(f"decided: {item.status} by {item.decided_by} at {_when(item.decided_at)}")
        if item.comment:
            typer.echo(f"comment: {item.comment}")
    if item.resumed_run:
        typer.echo(f"resumed by run: {item.resumed_run}")
    if item.figures:
        typer.echo("figures:")
        typer.echo(_json_text(item.figures))
    typer.echo("history:")
    for entry in item.history:
        who = f" by {entry['by']}" if entry.get("by") else ""
        extra = ""
        if entry.get("event") == "escalated":
            extra = f" to {entry['to']['queue']}/{entry['to']['owner']}"
        elif entry.get("comment"):
            extra = f": {entry['comment']}"
        elif entry.get("run_id"):
            extra = f" (run {entry['run_id']})"
        typer.echo(f"  {_when(entry.get('at'))}  {entry.get('event')}{who}{extra}")
    if item.record is not None:
        typer.echo("record:")
        typer.echo(_json_text(item.record))


@approvals_app.command("show")
def approvals_show(
    id: int = typer.Argument(..., help="The approval's id."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show one approval whole: reason, figures, due time, its history, the record."""
    item = _reader(state).work_item(id)
    if item is None or item.kind != "approval":
        _fail(f"no approval {id}", EXIT_INVALID)
    _render(output, item.to_dict(), lambda: _show_item(item))


def _decide(
    id: int, decision: str, by: str, comment: str | None, now: bool, state: Any, output: str
) -> None:
    from engine import FlowError, StateError

    eng = _engine(state)
    if not eng.state.exists():
        _fail(f"no state file at {eng.state} (run a flow first, or pass --state)", EXIT_INVALID)
    if not by.strip():
        _fail("--by must name who decides", EXIT_INVALID)
    action = eng.approve if decision == "approved" else eng.reject
    try:
        decided = action(id, by, comment, resume=now)
    except (LookupError, ValueError) as exc:
        _fail(str(exc), EXIT_INVALID)
    except FlowError as exc:
        _print_problems(exc.problems, "table")
        raise typer.Exit(EXIT_INVALID) from None
    except StateError as exc:
        _fail(str(exc), EXIT_STATE)
    item, run = decided.item, decided.run

    def table() -> None:
        typer.echo(f"{item.status} approval {item.id} ({item.record_key}) by {item.decided_by}")
        if run is not None:
            _summary(run)
        elif decided.note:
            typer.echo(f"  {decided.note}")

    _render(output, decided.to_dict(), table)
    raise typer.Exit(run.exit_code if run is not None else 0)


ByOpt = typer.Option(..., "--by", help="Who decides (kept with the approval).")
CommentOpt = typer.Option(None, "--comment", help="Why, for whoever reads it later.")
NoResumeOpt = typer.Option(
    False,
    "--no-resume",
    help="Only record the decision; the flow's next run resumes the record.",
)


@approvals_app.command("approve")
def approvals_approve(
    id: int = typer.Argument(..., help="The approval's id."),
    by: str = ByOpt,
    comment: str | None = CommentOpt,
    no_resume: bool = NoResumeOpt,
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Approve: the record resumes at once at the step after the approve (a run of kind
    resume of its flow), with the flow as it is now and the same idempotency keys.

    Exit codes are those of that run (0 it went through); 2 for an unknown id or an
    approval already decided.
    """
    _decide(id, "approved", by, comment, not no_resume, state, output)


@approvals_app.command("reject")
def approvals_reject(
    id: int = typer.Argument(..., help="The approval's id."),
    by: str = ByOpt,
    comment: str | None = CommentOpt,
    no_resume: bool = NoResumeOpt,
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Reject: the compensations of the record's earlier sends run (last first), then the
    approve step's on_reject steps, and the record ends there.
    """
    _decide(id, "rejected", by, comment, not no_resume, state, output)


@queue_app.command("list")
def queue_list(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's items."),
    kind: str | None = typer.Option(
        None, "--kind", help="Only dead_letter, review or approval items."
    ),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Open work items by queue and owner: how many, the oldest and median age, how many
    are past due and how many were escalated (SLA breaches)."""
    if kind not in (None, "dead_letter", "review", "approval"):
        _fail(f"--kind must be dead_letter, review or approval, not {kind!r}", EXIT_INVALID)
    rows = _reader(state).queues(flow=flow, kind=kind)
    _render(
        output,
        [row.to_dict() for row in rows],
        lambda: _table(
            [
                {
                    **row.to_dict(),
                    "oldest": _age(row.oldest_age_s),
                    "median": _age(row.median_age_s),
                    "kinds": " ".join(f"{k}={v}" for k, v in sorted(row.kinds.items())),
                }
                for row in rows
            ],
            ["queue", "owner", "depth", "oldest", "median", "overdue", "breached", "kinds"],
        ),
    )


@queue_app.command("escalate")
def queue_escalate(
    flow: str | None = typer.Option(None, "--flow", help="Only this flow's items."),
    at: str | None = typer.Option(
        None, "--at", help="Escalate as of this time (ISO 8601) instead of now."
    ),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Escalate every open item past its due time: it moves to its escalate_to queue or
    owner and counts as an SLA breach; each is printed as an item_escalated event.

    Every flowyard run escalates its own flow's items at its end; run this from cron for
    items whose flow does not run often.
    """
    events: list[dict[str, Any]] = []  # one item_escalated event per item, as listeners get
    _reader(state).escalate(now=_at_option(at), flow=flow, listeners=[events.append])

    def table() -> None:
        for event in events:
            typer.echo(
                f"escalated {event['kind']} {event['item_id']} ({event['flow']}, "
                f"{event['record_key']}) to {event['queue']}/{event['owner']}: "
                f"{event['reason'][:80]}"
            )
        typer.echo(f"{len(events)} item(s) escalated")

    _render(output, events, table)


# -- process intelligence ----------------------------------------------------------------------
SinceOpt = typer.Option(
    None, "--since", help="Only the last AGE (e.g. 24h, 7d, 30d) [default: everything kept]."
)


@app.command()
def stats(
    since: str | None = SinceOpt,
    flow: str | None = typer.Option(None, "--flow", help="Only this flow."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Per flow and step: throughput, cycle time p50/p95 (arrival to done), time waiting
    for people, exceptions by reason category, step and label, SLA breaches, approval
    cycle time."""
    eng = _reader(state)
    try:
        figures = eng.stats(since=since, flow=flow)
    except ValueError as exc:  # --since that is not an age
        _fail(str(exc), EXIT_INVALID)

    def table() -> None:
        if not figures.flows:
            typer.echo("no runs in this period")
        for f in figures.flows:
            cycle, wait, appr = f.cycle_time_s, f.waiting_for_people_s, f.approval_cycle_s
            typer.echo(
                f"{f.flow}: {f.records} records, {f.passes} passes "
                f"({' '.join(f'{k}={v}' for k, v in sorted(f.outcomes.items()))})"
            )
            typer.echo(
                f"  cycle time      p50 {_dur(cycle['p50'])}  p95 {_dur(cycle['p95'])}  "
                f"({cycle['count']} done)"
            )
            typer.echo(
                f"  waiting for people  {_dur(wait['total'])} in all, p50 {_dur(wait['p50'])}"
                f"  p95 {_dur(wait['p95'])} ({wait['count']} decided)"
            )
            typer.echo(
                f"  approval time   p50 {_dur(appr['p50'])}  p95 {_dur(appr['p95'])}  "
                + " ".join(f"{k}={v}" for k, v in sorted(f.approvals.items()))
            )
            typer.echo(
                f"  exceptions      {f.exceptions} ({f.exception_rate * 100:.1f} % of records)"
                f", SLA breaches {f.sla_breaches}"
            )
            for category, n in f.exceptions_by_category.items():
                typer.echo(f"    {n:>5}  {category}")
            for label, values in f.exceptions_by_label.items():
                shown = ", ".join(f"{k} {v}" for k, v in list(values.items())[:8])
                typer.echo(f"    by {label}: {shown}")
            typer.echo("  steps (passes / exceptions):")
            for step in f.steps:
                typer.echo(f"    {step['passes']:>6} / {step['exceptions']:<4} {step['step']}")
            done = [p for p in f.throughput if p["done"]]
            if done:
                shown = ", ".join(f"{_when(p['start'])[:16]} {p['done']}" for p in done[-6:])
                typer.echo(f"  done per {figures.bucket}: {shown}")

    _render(output, figures.to_dict(), table)


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else _age(seconds)


@app.command()
def report(
    out: Path = typer.Option(..., "--out", help="The HTML file to write."),
    since: str | None = SinceOpt,
    flow: str | None = typer.Option(None, "--flow", help="Only this flow."),
    top: int = typer.Option(10, "--top", help="How many exception clusters to show."),
    state: str | None = StateOpt,
) -> None:
    """Write a self-contained HTML report: the stats with charts (inline SVG), the top
    exception clusters and the age of every work queue. It loads nothing from anywhere."""
    eng = _reader(state)
    try:
        written = eng.report(out, since=since, flow=flow, top=top)
    except ValueError as exc:
        _fail(str(exc), EXIT_INVALID)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_INVALID)
    typer.echo(f"wrote {written}")


@app.command()
def prune(
    older_than: str = typer.Option(..., "--older-than", help="Age, e.g. 30d, 12h."),
    flow: str | None = typer.Option(None, "--flow", help="Only this flow."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Delete runs, traces, closed dead letters and done keys older than the age given.

    Open dead letters are kept. A record re-sent by its source after its key was
    pruned is sent again: keep the retention longer than your sources re-deliver.
    """
    eng = _reader(state)
    try:
        counts = eng.prune(older_than, flow).counts()
    except ValueError as exc:  # not an age
        _fail(str(exc), EXIT_INVALID)
    _render(
        output,
        counts,
        lambda: typer.echo("pruned " + ", ".join(f"{v} {k}" for k, v in counts.items())),
    )


# -- writing flows: test, map, graph, check, init -----------------------------------------------
@app.command("test")
def test_flows(
    paths: list[Path] = typer.Argument(
        None,
        help="Test files (NAME.test.yaml), flows (their test file beside them) or folders "
        "[default: the current folder].",
    ),
    update: bool = typer.Option(
        False,
        "--update",
        help="Rewrite the expectations of the cases that failed (or had none) with what they "
        "got, after you reviewed the change; the rest of the file stays as it is.",
    ),
    select: str | None = typer.Option(
        None, "-k", metavar="TEXT", help="Only the cases whose name holds TEXT."
    ),
    output: str = OutputOpt,
) -> None:
    """Run flows' offline tests: each case takes a record through the real flow with the
    connections answered from stubs, and compares outcome, path, records, requests and
    reasons with what the test file expects. Nothing is sent and no state is kept.

    Exit 0 every case passed, 1 a case failed, 2 a test file or its flow is invalid.
    """
    from engine import Engine

    report = Engine().test(paths or [Path(".")], select=select, update=update)
    _render(output, report.to_dict(), lambda: typer.echo(report.text()))
    raise typer.Exit(report.exit_code)


@app.command("map")
def map_record(
    mapping: str = typer.Argument(
        ..., help="A mapping file, or the name of a built-in mapping (shopify_order_to_canonical)."
    ),
    record: str = typer.Argument(
        ..., help="A file holding one record (JSON or YAML; NDJSON with --line), or - for stdin."
    ),
    line: int | None = typer.Option(
        None, "--line", min=1, help="The record on this line of an NDJSON file."
    ),
    schema: str | None = typer.Option(
        None,
        "--schema",
        help="Check the result against this canonical schema (a name or a file) [default: "
        "the one the mapping's name says, e.g. order for shopify_order_to_canonical].",
    ),
    no_schema: bool = typer.Option(False, "--no-schema", help="Do not check against a schema."),
    var: list[str] = typer.Option([], "--var", help="Set vars.KEY for the mapping: KEY=VALUE."),
    vars_file: list[Path] = VarsFileOpt,
    output: str = OutputOpt,
) -> None:
    """Show what a mapping makes of one record, field by field, and every problem at once:
    fields the record cannot give (in the record's own terms) and every rule of the
    canonical schema the result breaks.

    Exit 0 no problem, 1 the record has problems, 2 the mapping, schema or record file
    cannot be used.
    """
    data = _one_record(record, line)
    from engine import Engine, FlowError

    try:
        result = Engine().map_record(
            mapping,
            data,
            schema=schema,
            check_schema=not no_schema,
            vars=_vars(var, vars_file),
        )
    except FlowError as exc:
        _print_problems(exc.problems, "table")
        raise typer.Exit(EXIT_INVALID) from None

    def table() -> None:
        typer.echo(f"mapping {result.mapping} ({result.mapping_file})")
        if result.schema_file:
            typer.echo(f"checked against canonical schema {result.schema} ({result.schema_file})")
        elif not no_schema:
            typer.echo("no canonical schema to check against (give one with --schema NAME)")
        if result.record is not None:
            fields = result.fields
            width = min(40, max((len(path) for path, _ in fields), default=0))
            for path, value in fields:
                typer.echo(f"  {path.ljust(width)}  {json.dumps(value, default=str)}")
        if result.problems:
            typer.echo(f"{len(result.problems)} problem(s):", err=True)
            for problem in result.problems:
                typer.echo(f"  {problem.kind}: {problem}", err=True)
        else:
            typer.echo("no problems")

    _render(output, result.to_dict(), table)
    raise typer.Exit(0 if result.ok else 1)


def _one_record(source: str, line: int | None) -> Any:
    """The record of ``flowyard map``: a file or stdin, JSON (exact decimals) or YAML."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{source}: cannot read it: {getattr(exc, 'strerror', None) or exc}", EXIT_INVALID)
    if line is not None or source.endswith(".ndjson"):
        lines = text.splitlines()
        number = line or 1
        if line is None and len([x for x in lines if x.strip()]) > 1:
            _fail(f"{source} holds several records: say which with --line N", EXIT_INVALID)
        if number > len(lines) or not lines[number - 1].strip():
            _fail(f"{source}: no record on line {number}", EXIT_INVALID)
        text = lines[number - 1]
    from engine import Engine

    try:
        return Engine.parse_record(text)
    except ValueError as exc:
        _fail(f"{source}: {exc}", EXIT_INVALID)


@app.command()
def graph(
    flow: Path = typer.Argument(..., help="The flow file."),
    format: str = typer.Option("mermaid", "--format", "-f", help="mermaid or dot (Graphviz)."),
    embed: Path | None = typer.Option(
        None,
        "--embed",
        metavar="MARKDOWN",
        help="Replace the flow's picture in this Markdown file (between <!-- flowyard graph: "
        "NAME --> and <!-- /flowyard graph -->) instead of printing it.",
    ),
) -> None:
    """Draw a flow: source, steps, route branches with their conditions, dead-letter and
    review exits, and the connections each step calls. Mermaid renders in GitHub, GitLab
    and most Markdown viewers; DOT with Graphviz (dot -Tsvg)."""
    if format not in ("mermaid", "dot"):
        _fail(f"--format must be mermaid or dot, not {format!r}", EXIT_INVALID)
    from engine import Engine, FlowError

    eng = Engine()
    try:
        loaded = eng.load(flow)
    except FlowError as exc:
        _print_problems(exc.problems, "table")
        raise typer.Exit(EXIT_INVALID) from None
    picture = eng.graph(loaded, format)
    if embed is None:
        typer.echo(picture, nl=False)
        return
    if format != "mermaid":
        _fail("--embed writes Mermaid: leave out --format", EXIT_INVALID)
    try:
        eng.embed_graph(loaded, embed)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{embed}: {getattr(exc, 'strerror', None) or exc}", EXIT_INVALID)
    except LookupError as exc:
        _fail(f"{embed}: {exc}", EXIT_INVALID)
    typer.echo(f"updated the picture of {loaded.name} in {embed}")


@app.command()
def check(
    flow: Path = typer.Argument(..., help="The flow file."),
    var: list[str] = VarOpt,
    vars_file: list[Path] = VarsFileOpt,
    output: str = OutputOpt,
) -> None:
    """Reach every connection of a flow the way a run would (log in, one harmless read)
    and report what works. Nothing is sent, no state is written, secrets are masked.

    Exit 0 every connection that can be checked works, 1 one does not, 2 the flow is
    invalid or a secret it needs has no value.
    """
    run_vars = _vars(var, vars_file)
    from engine import Engine, FlowError

    try:
        results = Engine().check_connections(flow, vars=run_vars)
    except FlowError as exc:
        _print_problems(exc.problems, "table")
        raise typer.Exit(EXIT_INVALID) from None

    def table() -> None:
        for r in results:
            typer.echo(
                f"{r.connection} ({r.connector}; {', '.join(r.uses) or 'unused'}): {r.status}"
                f" in {r.duration_s:.2f} s"
            )
            if r.error:
                typer.echo(f"  FAILED  {r.error}")
            for c in r.checks:
                typer.echo(
                    f"  {'ok    ' if c.ok else 'FAILED'}  {c.what}"
                    + (f": {c.detail}" if c.detail else "")
                )
            if r.status == "not checked":
                typer.echo("  (the connector offers no check)")

    _render(output, [r.to_dict() for r in results], table)
    raise typer.Exit(1 if any(r.status == "failed" for r in results) else 0)


@app.command()
def init(
    folder: Path = typer.Argument(..., help="The project's folder (made if missing)."),
    from_flow: str | None = typer.Option(
        None,
        "--from",
        metavar="FLOW",
        help="Start from a shipped flow (e.g. order_to_erp) instead of the starter flow.",
    ),
) -> None:
    """Make a project to start from: a flow, its offline tests, a mapping of its own, sample
    records, a README, and the JSON Schemas an editor needs (named on each YAML file's
    first line). Existing files are never overwritten; --from with a wrong name lists the
    shipped flows.
    """
    from engine import Engine, InitError

    try:
        written = Engine().init_project(folder, from_flow)
    except InitError as exc:
        _fail(str(exc), EXIT_INVALID)
    for path in written:
        typer.echo(f"wrote {path}")
    flow_file = next(
        p for p in written if p.suffix == ".yaml" and ".test" not in p.name and p.parent == folder
    )
    typer.echo(
        f"next: cd {folder} && flowyard validate {flow_file.name} && flowyard test "
        f"&& flowyard graph {flow_file.name}"
    )


# -- serve: webhooks, schedules, metrics, alerts ---------------------------------------------------
schedule_app = typer.Typer(
    help="Scheduled flows: their cron, next due time and last run.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(schedule_app, name="schedule")


def _write_metrics(eng: Engine, path: Path, result: RunResult) -> None:
    try:
        eng.write_metrics(path, result)
    except OSError as exc:  # the run's result stands; the file is what failed
        typer.echo(f"flowyard: --metrics-file {path}: {exc.strerror or exc}", err=True)


def _load_flows(eng: Engine, paths: list[Path]) -> list[Any]:
    """The flows in ``paths`` (files, or folders searched for flow files); exit 2 with
    every problem when one is invalid."""
    from engine import FlowError

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.y*ml") if _is_flow_file(p))
        elif not path.exists():
            _fail(f"no such file: {path}", EXIT_INVALID)
        else:
            files.append(path)
    flows, problems = [], []
    for file in files:
        try:
            flows.append(eng.load(file))
        except FlowError as exc:
            problems += exc.problems
    if problems:
        _print_problems(problems, "table")
        raise typer.Exit(EXIT_INVALID)
    if not flows:
        _fail("no flow files found in " + ", ".join(map(str, paths)), EXIT_INVALID)
    return flows


@app.command()
def serve(
    flows: list[Path] = typer.Argument(..., help="Flow files or folders holding flows."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    state: str | None = StateOpt,
    inbox_limit: int = typer.Option(
        10_000,
        "--inbox-limit",
        help="Pending events per flow above which deliveries get 503 with Retry-After.",
    ),
    alert_email: list[str] = typer.Option(
        [], "--alert-email", metavar="ADDRESS", help="E-mail alerts to ADDRESS (repeat)."
    ),
    smtp_host: str = typer.Option("localhost", "--smtp-host", help="SMTP server for alerts."),
    smtp_port: int = typer.Option(25, "--smtp-port", help="Its port."),
    smtp_user: str | None = typer.Option(
        None, "--smtp-user", help="Log in as this user (password: env FLOWYARD_SMTP_PASSWORD)."
    ),
    smtp_starttls: bool = typer.Option(False, "--smtp-starttls", help="Use STARTTLS."),
    alert_from: str = typer.Option(
        "flowyard@localhost", "--alert-from", help="The sender of alert e-mails."
    ),
    alert_batch: float = typer.Option(
        10.0, "--alert-batch", metavar="SECONDS", help="Gather alerts this long per message."
    ),
    alert_interval: float = typer.Option(
        60.0,
        "--alert-interval",
        metavar="SECONDS",
        help="At most one alert message per channel this often.",
    ),
    log_stderr: bool = typer.Option(
        False, "--log-stderr", help="Also write the run logs' JSON lines to stderr."
    ),
) -> None:
    """Take webhooks, run flows on their schedules, serve /metrics, send alerts.

    Webhook flows (source: webhook) take signed deliveries at their path; each event is
    committed to the state's inbox before the 2xx answer, and processed by the flow with
    the usual guarantees. Scheduled flows run on their schedule (one process per slot, one
    run at a time). GET /metrics, /healthz and /readyz. Alerts go to the URL in env
    FLOWYARD_ALERT_URL (a JSON POST) and to --alert-email addresses. Stops gracefully on
    SIGTERM or Ctrl-C (exit 0); see docs/serve.md.
    """
    import os

    from engine import EmailSettings, FlowError, ServeOptions

    eng = _engine(state, log_stderr=log_stderr)
    loaded = _load_flows(eng, flows)
    if not any(f.source.webhook or f.schedule for f in loaded):
        _fail(
            "none of these flows takes webhooks (source: webhook) or has a schedule: "
            "nothing to serve",
            EXIT_INVALID,
        )

    def say(line: str) -> None:
        typer.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)

    options = ServeOptions(
        host=host,
        port=port,
        max_depth=inbox_limit,
        alert_url=os.environ.get("FLOWYARD_ALERT_URL") or None,
        email=EmailSettings(
            host=smtp_host,
            port=smtp_port,
            sender=alert_from,
            to=alert_email,
            user=smtp_user,
            password=os.environ.get("FLOWYARD_SMTP_PASSWORD") or None,
            starttls=smtp_starttls,
        )
        if alert_email
        else None,
        alert_batch=alert_batch,
        alert_interval=alert_interval,
        clock=os.environ.get("FLOWYARD_CLOCK") or None,
        say=say,
    )
    for flow in loaded:
        if flow.source.webhook is not None:
            say(
                f"{flow.name}: webhooks ({flow.source.webhook.scheme}) at "
                f"http://{host}:{port}{flow.source.webhook.path}"
            )
        if flow.schedule is not None:
            say(f"{flow.name}: scheduled {flow.schedule.cron} ({flow.schedule.timezone})")
    say(f"serving on http://{host}:{port} (metrics at /metrics); state {eng.state}")
    try:
        code = eng.serve(loaded, options)
    except ValueError as exc:  # two flows on one path, a bad FLOWYARD_CLOCK
        _fail(str(exc), EXIT_INVALID)
    except FlowError as exc:  # a secret a flow needs is missing
        _print_problems(exc.problems, "table")
        raise typer.Exit(EXIT_INVALID) from None
    say("stopped")
    raise typer.Exit(code)


@schedule_app.command("list")
def schedule_list(
    flows: list[Path] = typer.Argument(..., help="Flow files or folders holding flows."),
    state: str | None = StateOpt,
    output: str = OutputOpt,
) -> None:
    """Show each scheduled flow's cron, time zone, next due time and last run."""
    eng = _engine(state)
    rows = eng.schedules(_load_flows(eng, flows))

    def table() -> None:
        _table(
            [
                {
                    **r,
                    "schedule": f"{r['cron']} ({r['timezone']})",
                    "next": _when(r["next_due"]),
                    "last_slot": _when(r["last_slot"]),
                    "last_run": (
                        f"{_when(r['last_run_started'])} {r['last_run_status']}"
                        if r["last_run_id"]
                        else None
                    ),
                }
                for r in rows
            ],
            ["flow", "schedule", "missed", "next", "last_slot", "last_run"],
        )

    _render(output, rows, table)


def main() -> None:
    """Console-script entry point: a fault of the state file is one line and exit 4, any
    other unexpected error one line and exit 3 (the traceback with FLOWYARD_DEBUG=1)."""
    import logging
    import os

    # the PostgreSQL driver's pool logs each failed reconnection as a warning, which Python
    # would print bare on stderr; the CLI tells a fault of the state in its own one line
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    try:
        app()
    except Exception as exc:
        # the engine is imported by the commands that use it, not here: `flowyard --help`
        # stays fast. An error of the state can only come once the engine is loaded.
        errors = sys.modules.get("engine.errors")
        if errors is not None and isinstance(exc, errors.StateError):
            typer.echo(f"flowyard: {exc}", err=True)
            sys.exit(EXIT_STATE)
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
