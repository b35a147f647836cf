"""The reference flow's orders merged into SQLite by dlt, for the flowyard-vs-dlt figure.

    python bench/dlt_load.py --orders ORDERS.ndjson --erp ERP.db --work DIR --schema SCHEMA.json

Runs in a virtual environment of its own holding setup.cfg's ``bench`` extra (dlt and
SQLAlchemy, pinned; ``bench/run.py throughput --dlt`` makes it: :func:`ensure_venv`): dlt
is a bench-only dependency, never in flowyard's own or its tests' environment.
It does the reference flow's work the way a dlt user would: read the NDJSON file, map each
order with the baseline's hand-written mapping (bench/baseline.py, the same function the
plain baseline calls), validate it with fastjsonschema against ``--schema`` (the canonical
order schema with its ``$ref``s inlined, as the engine compiles it: bench/run.py writes
it), route pickup orders to ``pickups`` and the others to ``shipments``, and give every
order to ``sales_orders``: the rows bench/baseline.py writes, merged
(``write_disposition="merge"``, primary key ``order_id``) into a SQLite file through dlt's
SQLAlchemy destination. A line that is not JSON, or an order the mapping or the schema
refuses, is counted as dead-lettered and left out.

It prints a JSON summary (counts, seconds) on stdout, like bench/baseline.py.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def bench_extra() -> list[str]:
    """The ``bench`` extra of setup.cfg: dlt and what this script needs beside it, pinned."""
    config = configparser.ConfigParser()
    config.read(BENCH.parent / "setup.cfg", encoding="utf-8")
    listed = config["options.extras_require"]["bench"]
    return [row.strip() for row in listed.splitlines() if row.strip() and row[0] != "#"]


#: what the virtual environment holds: setup.cfg's ``bench`` extra
REQUIREMENTS = bench_extra()


def venv_dir() -> Path:
    """Where the dlt environment lives: outside the repository, kept between runs."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "flowyard-bench" / "dlt-venv"


def ensure_venv(python: str = sys.executable) -> Path:
    """The dlt environment's Python, made (``python -m venv`` and ``pip install``) on first
    use; about a minute, once."""
    folder = venv_dir()
    exe = folder / "bin" / "python"
    marker = folder / "requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if exe.exists() and marker.exists() and marker.read_text() == wanted:
        return exe
    subprocess.run([python, "-m", "venv", "--clear", str(folder)], check=True)
    subprocess.run(
        [str(exe), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"] + REQUIREMENTS,
        check=True,
    )
    marker.write_text(wanted)
    return exe


def run(orders: Path, erp: Path, work: Path, schema: Path) -> dict:
    # one load worker: dlt's default of several threads loading the tables' jobs at once
    # into one SQLite file fails with "database is locked" on a busy machine
    os.environ.setdefault("LOAD__WORKERS", "1")
    import dlt
    import fastjsonschema

    valid = fastjsonschema.compile(json.loads(schema.read_text()), use_default=False)

    sys.path.insert(0, str(BENCH))
    from baseline import to_canonical, writes  # the plain baseline's mapping and rows

    counts = {"read": 0, "done": 0, "skipped": 0, "dead_lettered": 0}

    @dlt.source(name="shop")
    def shop():
        def mapped():
            with open(orders, encoding="utf-8") as source:
                for raw in source:
                    if not raw.strip():
                        continue
                    counts["read"] += 1
                    try:
                        order = to_canonical(json.loads(raw))
                        valid(order)
                    except (ValueError, KeyError, TypeError, ArithmeticError):
                        # JsonSchemaValueException is a ValueError
                        counts["dead_lettered"] += 1
                        continue
                    counts["done"] += 1
                    for _, table, row in writes(order):
                        yield dlt.mark.with_table_name(row, table)

        yield dlt.resource(
            mapped,
            name="orders",
            write_disposition="merge",
            primary_key="order_id",
            columns={"store": {"data_type": "text"}},  # null in most pickups: not inferred
        )

    pipeline = dlt.pipeline(
        pipeline_name="bench_reference",
        pipelines_dir=str(work / "pipelines"),
        destination=dlt.destinations.sqlalchemy(credentials=f"sqlite:///{erp}"),
        dataset_name="main",
        progress=None,
    )
    pipeline.run(shop())
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=Path, required=True)
    parser.add_argument("--erp", type=Path, required=True, help="the target database")
    parser.add_argument("--work", type=Path, required=True, help="dlt's working folder")
    parser.add_argument(
        "--schema", type=Path, required=True, help="the order schema, $refs inlined"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = run(args.orders, args.erp, args.work, args.schema)
    json.dump({"counts": counts, "seconds": round(time.perf_counter() - started, 3)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
