"""Where the suite's fixtures are registered, and the order it runs in.

The helpers live in ``tests/support/`` (files and paths, the CLI, the HTTP targets, the
ERP, the web shops); the names below are re-exported so that ``from tests.conftest
import write_flow, flowyard, ...`` keeps working.
"""

from __future__ import annotations

import pytest

from tests.support.cli import CliResult, flowyard, invoke
from tests.support.files import (
    FIXTURES,
    MAPPINGS,
    ROOT,
    read_ndjson,
    shop_order,
    write_flow,
    write_ndjson,
)
from tests.support.postgres import postgres_dsn, postgres_server, postgres_state
from tests.support.target import Target

__all__ = [
    "FIXTURES",
    "MAPPINGS",
    "ROOT",
    "CliResult",
    "flowyard",
    "invoke",
    "postgres_dsn",
    "postgres_server",
    "postgres_state",
    "read_ndjson",
    "shop_order",
    "target",
    "write_flow",
    "write_ndjson",
]


@pytest.fixture
def target(tmp_path):
    """A fault-injecting HTTP target on 127.0.0.1, stopped after the test."""
    with Target(state_dir=tmp_path / "target") as t:
        yield t


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The code checks (tests/test_checks.py) first: a lint or type error stops ``-x`` at once."""
    items.sort(key=lambda item: item.path.name != "test_checks.py")  # stable: the rest keep order
