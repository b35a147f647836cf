"""The file connector's group_by: consecutive CSV rows as one record (an invoice's lines)."""

from __future__ import annotations

import pytest

from connectors.errors import PermanentError
from connectors.file import FileConnector

HEADER = "invoice,line,sku,qty\n"


def groups(tmp_path, text: str, **options):
    (tmp_path / "in.csv").write_text(text)
    with FileConnector({"base_dir": str(tmp_path)}) as files:
        return list(files.read({"path": "in.csv", "group_by": "invoice", **options}))


def test_consecutive_rows_with_one_value_are_one_record_with_its_rows(tmp_path):
    items = groups(tmp_path, HEADER + "A,1,X,2\nA,2,Y,1\nB,1,X,5\n")
    assert [item.data for item in items] == [
        {
            "invoice": "A",
            "rows": [
                {"invoice": "A", "line": "1", "sku": "X", "qty": "2"},
                {"invoice": "A", "line": "2", "sku": "Y", "qty": "1"},
            ],
        },
        {"invoice": "B", "rows": [{"invoice": "B", "line": "1", "sku": "X", "qty": "5"}]},
    ]
    assert [item.line for item in items] == [2, 4]  # the line of each group's first row


def test_an_unreadable_row_inside_a_group_fails_that_group_only(tmp_path):
    items = groups(tmp_path, HEADER + "A,1,X,2\nA,2,Y\nA,3,Z,1\nB,1,X,5\n")
    assert items[0].error.startswith("invoice 'A' (rows from line 2) is not read")
    assert "line 3" in items[0].error and "row has 3 fields" in items[0].error
    assert items[0].raw == "A,2,Y" and items[0].line == 2
    assert items[1].error is None and items[1].data["invoice"] == "B"


def test_an_unreadable_row_between_groups_fails_both_neighbours(tmp_path):
    # which invoice the row belonged to cannot be known: neither is passed on without it
    items = groups(tmp_path, HEADER + "A,1,X,2\nA,2,Y\nB,1,X,5\nC,1,X,1\n")
    assert [item.error is not None for item in items] == [True, True, False]
    assert "invoice 'B'" in items[1].error and items[2].data["invoice"] == "C"


def test_an_unreadable_last_row_fails_the_last_group(tmp_path):
    items = groups(tmp_path, HEADER + "A,1,X,2\nB,1,X,5\nB,2\n")
    assert [item.error is not None for item in items] == [False, True]


def test_rows_without_the_column_are_refused(tmp_path):
    with pytest.raises(PermanentError, match="no column 'invoice'"):
        groups(tmp_path, "number,sku\nA,X\n")


def test_ndjson_records_are_not_grouped(tmp_path):
    (tmp_path / "in.ndjson").write_text('{"invoice": "A"}\n{"invoice": "A"}\n')
    with FileConnector({"base_dir": str(tmp_path)}) as files:
        items = list(files.read({"path": "in.ndjson", "group_by": "invoice"}))
    assert [item.data for item in items] == [{"invoice": "A"}, {"invoice": "A"}]
