"""The tests' PostgreSQL: one server per session on 127.0.0.1, one empty database per test."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.postgres import drop_database


@pytest.fixture
def other_dsn(postgres_server):
    dsn = postgres_server.new_database("flowyard_other")
    yield dsn
    drop_database(postgres_server.admin_dsn, dsn.rsplit("/", 1)[1])


def test_each_test_gets_its_own_empty_database_on_the_loopback(
    postgres_server, postgres_dsn, other_dsn
):
    if postgres_server.local is not None:  # a server of our own: on the loopback only
        assert postgres_dsn.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE marks (n int)")
        conn.execute("INSERT INTO marks VALUES (1)")
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (1,)
    with psycopg.connect(other_dsn) as conn:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'marks'"
        ).fetchone()
        assert found == (0,)  # another test's database sees nothing of this one's
