"""The file connector on real files: streamed reads, bad lines, durable appends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.base import Request
from connectors.errors import PermanentError
from connectors.file import FileConnector
from connectors.testing import ConnectorContract

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path):
    with FileConnector({"base_dir": str(tmp_path)}) as connector:
        yield connector


def read(connector: FileConnector, **options) -> list:
    return list(connector.read(options))


def write(connector: FileConnector, **options):
    return connector.call(Request(options=options))


class TestFileContract(ConnectorContract):
    connector_class = FileConnector

    def connection_options(self, tmp_path):
        return {"base_dir": str(tmp_path)}

    def read_options(self, tmp_path):
        (tmp_path / "in.ndjson").write_text('{"id": 1}\n{"id": 2}\n{"id": 3}\n')
        return {"path": "in.ndjson"}

    def bad_read_options(self, tmp_path):
        (tmp_path / "bad.ndjson").write_text('{"id": 1}\n{"id": \n{"id": 3}\n')
        return {"path": "bad.ndjson"}

    def call_options(self, tmp_path):
        return {"path": "out/orders.ndjson", "record": {"id": 1, "total": Decimal("9.99")}}

    def failing_call_options(self, tmp_path):
        return {"path": "../outside.ndjson", "record": {"id": 1}}


# -- reading -------------------------------------------------------------------


def test_a_bad_ndjson_line_is_an_error_item_with_its_line_and_the_rest_is_read(tmp_path, files):
    (tmp_path / "orders.ndjson").write_text('{"id": 1}\n\n{"id": 2,,}\n{"id": 3}\n')
    items = read(files, path="orders.ndjson")
    assert [(item.line, item.data) for item in items if not item.error] == [
        (1, {"id": 1}),
        (4, {"id": 3}),
    ]
    [bad] = [item for item in items if item.error]
    assert (bad.line, bad.raw, bad.data) == (3, '{"id": 2,,}', None)
    assert "invalid JSON" in bad.error


def test_a_line_in_the_wrong_encoding_is_an_error_item(tmp_path, files):
    (tmp_path / "orders.ndjson").write_bytes(b'{"sku": "caf\xe9"}\n{"sku": "ok"}\n')
    first, second = read(files, path="orders.ndjson")
    assert first.error == "line is not valid utf-8" and first.raw == '{"sku": "caf\ufffd"}'
    assert second.data == {"sku": "ok"}


def test_ndjson_money_is_decimal_and_big_ids_are_exact(tmp_path, files):
    (tmp_path / "orders.jsonl").write_text('{"id": 9007199254740993, "total": 0.10}\n')
    [item] = read(files, path="orders.jsonl")
    assert item.data == {"id": 9007199254740993, "total": Decimal("0.10")}


def test_csv_rows_with_the_wrong_field_count_are_error_items_and_reading_goes_on(tmp_path, files):
    (tmp_path / "stock.csv").write_text(
        'sku,qty\nA,1\nB,2,extra\n\n"multi\nline",3\nC\nD,4\n', encoding="utf-8"
    )
    items = read(files, path="stock.csv")
    assert [(item.line, item.data or item.error) for item in items] == [
        (2, {"sku": "A", "qty": "1"}),
        (3, "row has 3 fields, the header has 2"),
        (5, {"sku": "multi\nline", "qty": "3"}),
        (7, "row has 1 fields, the header has 2"),
        (8, {"sku": "D", "qty": "4"}),
    ]
    assert [item.raw for item in items if item.error] == ["B,2,extra", "C"]


def test_csv_delimiter_and_encoding_options(tmp_path, files):
    (tmp_path / "export.txt").write_bytes("sku;name\nA;Käse\n".encode("latin-1"))
    [item] = read(files, path="export.txt", format="csv", delimiter=";", encoding="latin-1")
    assert item.data == {"sku": "A", "name": "Käse"}


def test_a_json_array_file_yields_its_elements_with_their_lines(tmp_path, files):
    (tmp_path / "orders.json").write_text('[\n  {"id": 1, "total": 1.50},\n  {"id": 2}\n]\n')
    items = read(files, path="orders.json")
    assert [(item.line, item.data) for item in items] == [
        (2, {"id": 1, "total": Decimal("1.50")}),
        (3, {"id": 2}),
    ]


def test_a_broken_json_array_yields_the_good_elements_then_an_error(tmp_path, files):
    (tmp_path / "orders.json").write_text('[{"id": 1},\n {"id": oops}]')
    good, bad = read(files, path="orders.json")
    assert good.data == {"id": 1}
    assert bad.error.startswith("invalid JSON") and bad.line == 2 and "oops" in bad.raw


def test_an_unknown_extension_needs_a_format(tmp_path, files):
    (tmp_path / "orders.txt").write_text("{}\n")
    with pytest.raises(PermanentError, match="set format"):
        read(files, path="orders.txt")
    assert read(files, path="orders.txt", format="ndjson")[0].data == {}


def test_a_missing_file_is_a_permanent_error(files):
    with pytest.raises(PermanentError, match="cannot open"):
        read(files, path="nowhere.ndjson")


def test_a_large_ndjson_file_is_streamed_in_bounded_memory(tmp_path, files):
    path = tmp_path / "big.ndjson"
    line = '{"id": %d, "sku": "SKU-0000000000", "total": 12.34}\n'
    with open(path, "w") as out:
        out.writelines(line % n for n in range(200_000))
    assert path.stat().st_size > 9_000_000
    stream = files.read({"path": "big.ndjson"})
    tracemalloc.start()
    try:
        # A reader that loads the file would do it here, on the first items.
        first = [next(stream) for _ in range(1000)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # bytes: a few lines, not the file
    assert len(first) + sum(1 for _ in stream) == 200_000


# -- writing -------------------------------------------------------------------


def test_ndjson_appends_one_exact_line_per_call_and_creates_directories(tmp_path, files):
    write(files, path="out/2024/orders.ndjson", record={"id": 2**64, "total": Decimal("19.90")})
    write(files, path="out/2024/orders.ndjson", record={"id": 2, "note": "ünïcode"})
    text = (tmp_path / "out/2024/orders.ndjson").read_text(encoding="utf-8")
    assert text == '{"id":18446744073709551616,"total":19.90}\n{"id":2,"note":"ünïcode"}\n'


def test_csv_writes_the_header_once_then_rows(tmp_path, files):
    write(files, path="stock.csv", record={"sku": "A", "qty": 1, "tags": ["x"], "gone": None})
    write(files, path="stock.csv", record={"sku": "B, the second", "qty": Decimal("2.50")})
    assert (tmp_path / "stock.csv").read_text() == (
        'sku,qty,tags,gone\nA,1,"[""x""]",\n"B, the second",2.50,,\n'
    )


def test_csv_refuses_a_field_that_is_not_a_column(files):
    write(files, path="stock.csv", record={"sku": "A"})
    with pytest.raises(PermanentError, match="not columns"):
        write(files, path="stock.csv", record={"sku": "B", "qty": 1})


def test_a_json_array_file_is_rewritten_atomically(tmp_path, files):
    write(files, path="out.json", record={"id": 1})
    write(files, path="out.json", record={"total": Decimal("0.30")})
    assert (tmp_path / "out.json").read_text() == '[{"id":1},{"total":0.30}]'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left


def test_writing_outside_base_dir_is_refused(tmp_path, files):
    with pytest.raises(PermanentError, match="outside base_dir"):
        write(files, path="../../etc/evil.ndjson", record={})
    with pytest.raises(PermanentError, match="outside base_dir"):
        write(files, path="/tmp/evil.ndjson", record={})


def test_concurrent_appends_never_interleave(tmp_path, files):
    def send(n: int) -> None:
        write(files, path="log.ndjson", record={"n": n, "pad": "x" * 5000})
        write(files, path="log.csv", record={"n": n, "pad": "y" * 5000})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(200)))
    lines = (tmp_path / "log.ndjson").read_text().splitlines()
    assert sorted(json.loads(line)["n"] for line in lines) == list(range(200))
    rows = read(files, path="log.csv")
    assert sorted(int(item.data["n"]) for item in rows) == list(range(200))


def test_a_record_written_survives_the_process_being_killed_right_after(tmp_path):
    script = (
        "import os, signal\n"
        "from connectors.base import Request\n"
        "from connectors.file import FileConnector\n"
        f"c = FileConnector({{'base_dir': {str(tmp_path)!r}}})\n"
        "c.call(Request({'path': 'out.ndjson', 'record': {'id': 1}}))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=30)
    assert done.returncode == -9
    assert (tmp_path / "out.ndjson").read_text() == '{"id":1}\n'


def test_relative_paths_without_base_dir_follow_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with FileConnector() as connector:
        write(connector, path="here.ndjson", record={"ok": True})
    assert os.path.exists(tmp_path / "here.ndjson")
