"""Where the repository is, and the files and records a test writes: flows, NDJSON, orders."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
FIXTURES = ROOT / "tests" / "fixtures"


def write_flow(directory: Path, text: str, name: str = "flow.yaml") -> Path:
    """Write a flow file whose mapping search path includes the shipped mappings."""
    body = textwrap.dedent(text).strip() + "\n"
    if "mappings:" not in body:
        body += f"mappings: [{MAPPINGS}]\n"
    path = directory / name
    path.write_text(body, encoding="utf-8")
    return path


def write_ndjson(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_ndjson(path: Path) -> list:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def shop_order(n: int, **extra) -> dict:
    """A small web-shop order (not the full Shopify resource) for engine tests."""
    return {
        "id": 5_000_000_000_000_000 + n,
        "name": f"#{1000 + n}",
        "total": f"{n}.50",
        "pickup": n % 3 == 0,
        **extra,
    }
